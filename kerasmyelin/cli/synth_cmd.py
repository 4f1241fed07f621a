"""``kerasmyelin synth``: generate the synthetic infant cohort."""

from __future__ import annotations

import argparse

from kerasmyelin.errors import ConfigError

USES_TENSORFLOW = False  # no TensorFlow start-up for this command
NAME = "synth"
HELP = "Generate a synthetic infant cohort (BIDS raw data, ground truth, ten-slice cache)."
EXAMPLES = """examples:
  kerasmyelin synth --out cohort                      # the paper-like default: 119 infants
  kerasmyelin synth --out small --subjects 12 --seed 3
  kerasmyelin synth --out cohort3t --field-strengths 3 --overwrite
  kerasmyelin synth --out varied --varied             # + 3-D research protocols, skull-stripped, smoothed
  kerasmyelin synth --out mixed --research-fraction 0.5 --timing-jitter 0.1
  kerasmyelin synth --out real --varied --tissue-curves calibrated   # tissue fitted to real infants
  # half the infants built on anatomy segmented from the real infant templates (not 24 months)
  kerasmyelin synth --out real --varied --tissue-curves calibrated \
      --template-anatomy ../shared/data/infant_templates --template-months 0,6,9,12
  # a large cohort: 64 TFRecord shards written by the workers, no NIfTI volumes (docs/scale.md)
  kerasmyelin synth --out big --subjects 10000 --shards 64 --slices-only
"""


def _field_strengths(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in tesla, got {text!r}") from None


def months_list(text: str) -> tuple[int, ...]:
    from kerasmyelin.io.infant_templates import parse_months

    try:
        return parse_months(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    p.add_argument("--subjects", type=int, default=119, help="number of infants (default: 119, as the paper)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--field-strengths", type=_field_strengths, default=(3.0, 1.5),
                   help="comma-separated field strengths in tesla: 3, 1.5 or both (default: 3,1.5)")
    variety = p.add_argument_group("protocol variety beyond the paper's (all 0 by default)")
    variety.add_argument("--varied", action="store_true",
                         help="the documented mix: research 0.5, timing jitter 0.1, skull-stripped 0.3, "
                              "smoothed 0.3 (the flags below override single values)")
    variety.add_argument("--research-fraction", type=float, help="share scanned with 3-D MPRAGE/SPACE")
    variety.add_argument("--timing-jitter", type=float, help="log-SD of per-infant TR/TE/TI factors")
    variety.add_argument("--skull-stripped-fraction", type=float, help="share delivered skull-stripped")
    variety.add_argument("--smoothed-fraction", type=float, help="share smoothed in-plane (FWHM 1-3 mm)")
    variety.add_argument("--acquisition-variety", type=float, default=0.0, metavar="SHARE",
                         help="share scanned with their own slice thickness (1-6 mm), in-plane resolution "
                              "(0.5-1.2 mm) and, on the research protocol, SPGR T1w / TSE T2w (default 0)")
    p.add_argument("--tissue-curves", default="published", metavar="NAME",
                   help="how tissue relaxes with age: published (literature; the paper reproduction's, default), "
                        "calibrated (fitted to the real infant templates, for models meant for real scans; "
                        "docs/realism.md) or a JSON file written by `kerasmyelin calibrate-synth`")
    anat = p.add_argument_group("anatomy (default: the scaled adult MNI152 brain for every infant)")
    anat.add_argument("--template-anatomy", metavar="DIR",
                      help="folder of the infant templates (Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz); "
                           "infants are then also built on anatomy scaffolds segmented from them")
    anat.add_argument("--template-anatomy-fraction", type=float, default=None,
                      help="share of infants on a template scaffold (default 0.5 with --template-anatomy)")
    anat.add_argument("--template-months", type=months_list, default=None,
                      help="comma-separated template ages whose scaffolds may be used (default: all five)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--shards", type=int, default=None,
                   help="write the ten-slice set as this many TFRecord shards (streamed by train; each worker "
                        "writes whole shards) instead of tenslice.npz")
    p.add_argument("--slices-only", action="store_true",
                   help="write no NIfTI volumes, only the ten prepared slices, tables and ground truth "
                        "(such a cohort cannot be prepared again from volumes)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.synth.cohort import VARIED, CohortConfig
    from kerasmyelin.synth.dataset import build_cohort

    variety = dict(VARIED) if args.varied else {}
    for name in VARIED:
        if getattr(args, name) is not None:
            variety[name] = getattr(args, name)
    anatomy = {}
    if args.template_anatomy:
        anatomy = {"templates": args.template_anatomy,
                   "template_anatomy_fraction": 0.5 if args.template_anatomy_fraction is None
                   else args.template_anatomy_fraction}
        if args.template_months is not None:
            anatomy["template_months"] = args.template_months
    elif args.template_anatomy_fraction is not None or args.template_months is not None:
        raise ConfigError("--template-anatomy-fraction and --template-months need --template-anatomy DIR")
    try:
        config = CohortConfig(subjects=args.subjects, seed=args.seed, field_strengths=args.field_strengths,
                              tissue_curves=args.tissue_curves, acquisition_variety=args.acquisition_variety,
                              **variety, **anatomy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.shards is not None and not 1 <= args.shards <= config.subjects:
        raise ConfigError(f"--shards must be from 1 to the number of infants ({config.subjects}), got {args.shards}")
    out = build_cohort(args.out, config, jobs=args.jobs, overwrite=args.overwrite, progress=not args.quiet,
                       shards=args.shards, volumes=not args.slices_only)
    print(f"wrote {config.subjects} synthetic infants to {out}")
    return 0
