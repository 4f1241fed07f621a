"""Calibration of the same-head check (docs/wholebrain.md, "Are the T1w and T2w the same head?").

Usage: python experiments/calibrate_same_head.py --cohort cohort [--subjects 20] [--templates DIR]

For the first N infants of a synthetic cohort, prints the outline Dice and normalised mutual
information of each T1w with its own T2w and with the next infant's T2w; for the real templates,
each template's own pair and two pairs of different ages. No pair is refused here.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--templates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                   "infant_templates"))
    args = parser.parse_args()

    from kerasmyelin.io.nifti import load_volume
    from kerasmyelin.validation.template_levels import TEMPLATE_MONTHS, template_file
    from kerasmyelin.wholebrain import volumes
    from kerasmyelin.wholebrain.volumes import check_same_head, make_pair

    def measures(t1, t2):
        pair = make_pair(load_volume(t1), load_volume(t2), check=False)
        saved = volumes.SAME_HEAD_MIN_DICE, volumes.SAME_HEAD_MIN_NMI
        volumes.SAME_HEAD_MIN_DICE = volumes.SAME_HEAD_MIN_NMI = -1.0  # measure, never refuse
        try:
            return check_same_head(pair)
        finally:
            volumes.SAME_HEAD_MIN_DICE, volumes.SAME_HEAD_MIN_NMI = saved

    cohort = Path(args.cohort)
    ids = sorted(p.name for p in cohort.glob("sub-*"))[: args.subjects]
    for i, pid in enumerate(ids):
        other = ids[(i + 1) % len(ids)]
        t1 = cohort / pid / "anat" / f"{pid}_T1w.nii.gz"
        same = measures(t1, cohort / pid / "anat" / f"{pid}_T2w.nii.gz")
        try:
            diff = measures(t1, cohort / other / "anat" / f"{other}_T2w.nii.gz")
        except Exception as exc:  # noqa: BLE001 - e.g. the fields of view barely overlap
            diff = str(exc)
        print(f"{pid}: own T2w {same}   {other}'s T2w {diff}")
    if Path(args.templates).is_dir():
        for m in TEMPLATE_MONTHS:
            print(f"template {m} months, own pair:", measures(template_file(args.templates, m, "T1w"),
                                                             template_file(args.templates, m, "T2w")))
        for a, b in ((0, 24), (12, 9)):
            print(f"templates T1w {a} / T2w {b} months:", measures(template_file(args.templates, a, "T1w"),
                                                                  template_file(args.templates, b, "T2w")))


if __name__ == "__main__":
    main()
