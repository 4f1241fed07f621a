"""Accuracy of the automatic level finder on a synthetic cohort with random head pose.

Usage: python benchmarks/bench_level_finder.py --cohort cohort [--contrast T1w] [--limit N]

For every infant of a cohort written by ``kerasmyelin synth`` (whose
``derivatives/synth_truth/truth.tsv`` holds the true slice of each level), finds the five levels
in the whole-head scan as ``kerasmyelin predict`` does and prints, per level and overall, the share
of subject-level pairs whose found slice is within one slice (5-5.5 mm) of the truth, the share
found exactly, the error distribution and the median seconds per infant. No TensorFlow needed.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True, help="folder written by 'kerasmyelin synth'")
    parser.add_argument("--contrast", default="T1w", choices=("T1w", "T2w"))
    parser.add_argument("--limit", type=int, help="first N infants only")
    args = parser.parse_args()

    import numpy as np
    from tqdm.auto import tqdm

    from kerasmyelin.data.prepare import to_canonical
    from kerasmyelin.io.nifti import load_volume
    from kerasmyelin.levels import LEVEL_KEYS
    from kerasmyelin.wholebrain.level_finder import find_levels

    cohort = Path(args.cohort)
    with open(cohort / "derivatives" / "synth_truth" / "truth.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))[: args.limit]
    errors, seconds, dice = [], [], []
    for row in tqdm(rows, unit="infant"):
        pid = row["participant_id"]
        data, affine = to_canonical(*load_volume(cohort / pid / "anat" / f"{pid}_{args.contrast}.nii.gz"))
        t = time.perf_counter()
        fit = find_levels(data, affine)
        seconds.append(time.perf_counter() - t)
        found = fit.slices(affine, data.shape[2])
        errors.append([found[k] - int(row[f"slice_{k}"]) for k in LEVEL_KEYS])
        dice.append(fit.dice)
    e = np.array(errors)
    print(f"{len(rows)} infants x 5 levels = {e.size} subject-level pairs ({args.contrast})")
    print(f"within one slice: {np.mean(np.abs(e) <= 1):.1%}   exact: {np.mean(e == 0):.1%}   "
          f"worst: {np.abs(e).max()} slices")
    for i, k in enumerate(LEVEL_KEYS):
        counts = {d: int(np.sum(e[:, i] == d)) for d in range(int(e[:, i].min()), int(e[:, i].max()) + 1)}
        print(f"  level {k}: within one {np.mean(np.abs(e[:, i]) <= 1):.1%}  exact {np.mean(e[:, i] == 0):.1%}  "
              f"errors {counts}")
    print(f"outline Dice: median {statistics.median(dice):.3f}, min {min(dice):.3f}")
    print(f"seconds per infant (alignment only): median {statistics.median(seconds):.2f}, max {max(seconds):.2f}")


if __name__ == "__main__":
    main()
