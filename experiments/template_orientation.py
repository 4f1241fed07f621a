"""The real templates' reversed headers and the two level readings, in numbers (docs/wholebrain.md).

Usage: python experiments/template_orientation.py [--templates ../shared/data/infant_templates]

Per template: the level finder's outline Dice with the header as stored and with the outline
turned 180 degrees about the vertical (``LevelFit.reversed_dice``); how far the first reading's
slice labels (corner column) lie below the brain's centre column; and the second reading minus
the first, per level, both at the centre column's z (``template_levels.reading_z``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                   "infant_templates"))
    args = parser.parse_args()

    from kerasmyelin.data.prepare import to_canonical
    from kerasmyelin.io.nifti import load_volume
    from kerasmyelin.validation.template_levels import (
        ANNOTATED_Z_MM,
        TEMPLATE_MONTHS,
        reading_z,
        template_file,
    )
    from kerasmyelin.wholebrain.level_finder import find_levels

    for months in TEMPLATE_MONTHS:
        fit = find_levels(*to_canonical(*load_volume(template_file(args.templates, months, "T1w"))))
        first, second = reading_z(args.templates, months, "first"), reading_z(args.templates, months, "second")
        shift = first["b"] - ANNOTATED_Z_MM[months]["b"]
        gaps = "  ".join(f"{k} {second[k] - first[k]:+.1f}" for k in "bcde")
        print(f"{months:>2} months: outline Dice as stored {fit.dice:.3f}, turned {fit.reversed_dice:.3f};  "
              f"first reading's labels {shift:.1f} mm below the centre;  second - first (mm): {gaps}")


if __name__ == "__main__":
    main()
