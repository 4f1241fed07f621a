"""``kerasmyelin prepare``: build the ten-slice cache from a BIDS folder and known slice levels
(or levels found automatically, :mod:`kerasmyelin.wholebrain.cohort_levels`), or from a Neural
Network Console dataset."""

from __future__ import annotations

import argparse

USES_TENSORFLOW = False  # no TensorFlow start-up for this command
NAME = "prepare"
HELP = ("Prepare the paper's ten 128x128 images per infant from a BIDS folder and a table of slice levels "
        "(or levels found automatically), or import them from a Neural Network Console dataset.")
EXAMPLES = """examples:
  # find the five levels automatically; check OUT/qc/overview.png and OUT/doubtful.tsv
  kerasmyelin prepare --bids cohort --out prep --jobs 2
  # correct rows of prep/levels.tsv (n/a in all five slices leaves a scan out), then
  kerasmyelin prepare --bids cohort --levels prep/levels.tsv --out prep2
  # re-prepare a synthetic cohort from its NIfTI files and ground-truth levels
  kerasmyelin prepare --bids cohort --levels cohort/derivatives/synth_truth/truth.tsv --out prep --jobs 2
  # then, for a cohort too large for memory: TFRecord shards that training streams
  kerasmyelin shard --data prep --out prep_sharded --shards 16
  # bring a Neural Network Console dataset (index.csv + PNG/BMP slices) to kerasmyelin
  kerasmyelin prepare --nnc nnc_dataset/index.csv --out prep
The levels table has participant_id and slice_a ... slice_e (0-based axial slice indices of the
RAS-reoriented volume), and session_id for data sets with ses-* folders (one row per session);
every participant needs a row, and n/a in its five slice columns leaves it out. Without --levels
the level finder of predict picks them, writes OUT/levels.tsv (that format), OUT/qc/ (a contact
sheet per infant, overview.png) and OUT/doubtful.tsv (low outline overlap, reversed header, T1w
and T2w disagreeing, a level outside the head, noise), and leaves doubtful infants out unless
--keep-doubtful (docs/inputs.md, "Levels found automatically").
Ages come from the BIDS participants.tsv (age_months, corrected age in months; or
chronological_age_months and gestational_age_weeks, from which it is computed), or per session
from sub-*_sessions.tsv.
An NNC index.csv has ten image columns named like T1w_a ... T2w_e (x__0:T1w a, t1_a, T1a, ...;
or exactly ten unnamed ones, taken as T1w a-e then T2w a-e) and the age column y or age_months
(corrected age, months). Every accepted input: docs/inputs.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bids", help="BIDS raw data set (participants.tsv, sub-*/anat/*_T1w.nii.gz)")
    source.add_argument("--nnc", metavar="INDEX_CSV",
                        help="Neural Network Console dataset CSV (image paths relative to it, age in months)")
    p.add_argument("--levels", help="with --bids: TSV with participant_id [, session_id] and slice_a ... slice_e "
                   "(without it, the levels are found automatically and written to OUT/levels.tsv)")
    p.add_argument("--keep-doubtful", action="store_true",
                   help="with --bids and no --levels: keep the scans whose automatic levels are doubtful "
                        "(listed in OUT/doubtful.tsv either way; left out by default)")
    p.add_argument("--out", required=True, help="output folder for tenslice.npz and manifest.json")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=int, default=1,
                   help="with --bids: worker processes loading and preparing scans (default: 1)")
    p.add_argument("--intensity-reference", choices=("head", "brain_core"), default="head",
                   help="with --bids: voxels whose 99.5th percentile scales each image: every head voxel (the "
                        "paper's reading, default) or those >= 20 mm inside the head (robust to skull-stripping)")
    p.add_argument("--nnc-intensity", choices=("image", "head"), default="image",
                   help="with --nnc: keep the images' own 0-1 scale (255 or 65535 -> 1, as NNC normalises; "
                        "default) or rescale each contrast's five slices so the head's 99.5th percentile is 1, "
                        "as --bids does (use it when the model will later read NIfTI scans)")
    p.add_argument("--image-size", type=int, default=128,
                   help="with --nnc: side of the cache's images; other sizes are resized (default 128)")


def run(args: argparse.Namespace) -> int:
    if args.nnc:
        from kerasmyelin.data.nnc import import_nnc
        from kerasmyelin.errors import InputError

        if args.levels:
            raise InputError("--levels belongs to --bids: an NNC dataset already holds the chosen slices")
        if args.keep_doubtful:
            raise InputError("--keep-doubtful belongs to --bids without --levels: an NNC dataset already holds "
                             "the chosen slices")
        out = import_nnc(args.nnc, args.out, image_size=args.image_size, intensity=args.nnc_intensity,
                         overwrite=args.overwrite, progress=not args.quiet)
        print(f"wrote the ten-slice cache to {out}")
        return 0

    from kerasmyelin.data.build import prepare_bids
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.errors import ConfigError, InputError

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    config = PrepConfig(intensity_reference=args.intensity_reference)
    if not args.levels:
        from kerasmyelin.wholebrain.cohort_levels import prepare_bids_auto

        out, _ = prepare_bids_auto(args.bids, args.out, keep_doubtful=args.keep_doubtful, overwrite=args.overwrite,
                                   progress=not args.quiet, config=config, jobs=args.jobs)
        print(f"wrote the ten-slice cache to {out}, with the levels found in {out / 'levels.tsv'} "
              f"and contact sheets in {out / 'qc'}")
        return 0
    if args.keep_doubtful:
        raise InputError("--keep-doubtful belongs to automatic levels (--bids without --levels)")
    out = prepare_bids(args.bids, args.levels, args.out, overwrite=args.overwrite, progress=not args.quiet,
                       config=config, jobs=args.jobs, notice=print)
    print(f"wrote the ten-slice cache to {out}")
    return 0
