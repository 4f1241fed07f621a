"""``kerasmyelin export-nnc``: a ten-slice cache as a Neural Network Console dataset."""

from __future__ import annotations

import argparse

USES_TENSORFLOW = False
NAME = "export-nnc"
HELP = "Write a ten-slice cache as a Neural Network Console dataset (index.csv + 8-bit PNG slices)."
EXAMPLES = """examples:
  # the synthetic cohort's ten slices, for training the original network in Neural Network Console
  kerasmyelin export-nnc --data cohort/derivatives/tenslice --out cohort_nnc
index.csv names each image variable after its input (t1w_a ... t2w_e: the dataset names of the
network's ten Input layers) and the label y:age_months (corrected age, months). Images are
clipped to [0, 1] and stored as 8-bit greyscale PNG; 'kerasmyelin prepare --nnc' reads it back.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="ten-slice cache folder (tenslice.npz + manifest.json)")
    p.add_argument("--out", required=True, help="output folder for index.csv and images/")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.data.nnc import export_nnc

    out = export_nnc(args.data, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote the Neural Network Console dataset to {out / 'index.csv'}")
    return 0
