"""``kerasmyelin prepare``: build the ten-slice cache from a BIDS folder and known slice levels."""

from __future__ import annotations

import argparse

USES_TENSORFLOW = False  # no TensorFlow start-up for this command
NAME = "prepare"
HELP = "Prepare the paper's ten 128x128 images per infant from a BIDS folder and a table of slice levels."
EXAMPLES = """examples:
  # re-prepare a synthetic cohort from its NIfTI files and ground-truth levels
  kerasmyelin prepare --bids cohort --levels cohort/derivatives/synth_truth/truth.tsv --out prep
The levels table has participant_id and slice_a ... slice_e (0-based axial slice indices of the
RAS-reoriented volume). Ages come from the BIDS participants.tsv (age_months, corrected age).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bids", required=True, help="BIDS raw data set (participants.tsv, sub-*/anat/*_T1w.nii.gz)")
    p.add_argument("--levels", required=True, help="TSV with participant_id and slice_a ... slice_e")
    p.add_argument("--out", required=True, help="output folder for tenslice.npz and manifest.json")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--intensity-reference", choices=("head", "brain_core"), default="head",
                   help="voxels whose 99.5th percentile scales each image: every head voxel (the paper's "
                        "reading, default) or those >= 20 mm inside the head (robust to skull-stripping)")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.data.build import prepare_bids
    from kerasmyelin.data.prepare import PrepConfig

    config = PrepConfig(intensity_reference=args.intensity_reference)
    out = prepare_bids(args.bids, args.levels, args.out, overwrite=args.overwrite, progress=not args.quiet,
                       config=config)
    print(f"wrote the ten-slice cache to {out}")
    return 0
