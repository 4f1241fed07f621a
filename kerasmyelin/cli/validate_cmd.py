"""``kerasmyelin validate-synth``: judge the synthetic infants against the real infant templates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

USES_TENSORFLOW = False  # no TensorFlow start-up for this command
NAME = "validate-synth"
HELP = "Judge synthetic infants against the real infant templates: WM/GM ratio cells, pass rule, figure."
EXAMPLES = """examples:
  kerasmyelin validate-synth --templates ../shared/data/infant_templates --out docs --tissue-curves calibrated
  kerasmyelin validate-synth --templates ../shared/data/infant_templates --out docs   # published curves
  kerasmyelin validate-synth --templates ../shared/data/infant_templates --out docs --protocol clinical
writes OUT/synth_vs_templates_{protocol}_{curves}.md, .json and .png. Pass rule (research3d protocol,
the templates' kind): at least 90% of the 40 cells (T1w/T2w x levels b-e x 5 ages) within 0.05 of the
template's WM/GM ratio, on cells the curves did not see (calibrated curves: leave-one-age-out, which
refits them five times, ~4 min on 2 cores). Exits 1 when the rule fails; the clinical protocol is
shown for reference, with no verdict.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", required=True,
                   help="folder with Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz")
    p.add_argument("--out", required=True, help="folder for the figure and tables")
    p.add_argument("--protocol", choices=("research3d", "clinical"), default="research3d",
                   help="synthetic protocol family: the 3-D research MPRAGE/SPACE, the templates' kind (default, "
                        "judged), or the paper's clinical stacks (shown only)")
    p.add_argument("--tissue-curves", default="published", metavar="NAME",
                   help="published (default), calibrated, or a JSON file from `kerasmyelin calibrate-synth`")
    p.add_argument("--anatomy", choices=("mni", "templates"), default="mni",
                   help="what the typical synthetic infants are built on: the scaled adult MNI152 brain (default) "
                        "or anatomy scaffolds segmented from the templates (synth --template-anatomy); a held-out "
                        "age is then measured on the scaffold of the nearest other age")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.errors import ConfigError
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.io.output_dir import check_apart
    from kerasmyelin.synth.curves import curves_for
    from kerasmyelin.validation.compare import compare_with_templates, figure

    out = Path(args.out)
    # It adds three named files to --out (docs/, say), replacing only its own earlier ones; never
    # among the real templates.
    check_apart(out, [("--templates", args.templates)])
    try:
        curves = curves_for(args.tissue_curves)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    name = curves.name if args.tissue_curves in ("published", "calibrated") else Path(args.tissue_curves).stem
    stem = f"synth_vs_templates_{args.protocol}_{name}" + ("_scaffolds" if args.anatomy == "templates" else "")
    result = compare_with_templates(args.templates, protocol=args.protocol, curves=args.tissue_curves,
                                    progress=lambda text: print(f"validate-synth: {text} ...", flush=True),
                                    anatomy=args.anatomy)
    figure(args.templates, out / f"{stem}.png", protocol=args.protocol, curves=args.tissue_curves,
           anatomy=args.anatomy)
    text = result.markdown() + f"\nFigure: {stem}.png. Command: `kerasmyelin validate-synth --templates TEMPLATES " \
        f"--out OUT --protocol {args.protocol} --tissue-curves {args.tissue_curves} --anatomy {args.anatomy}`.\n"
    write_text_atomic(out / f"{stem}.md", text)
    write_text_atomic(out / f"{stem}.json", json.dumps(result.as_json(), indent=1, sort_keys=True) + "\n")
    print(text)
    verdict = result.verdict()
    print(verdict.line())
    return 1 if verdict.applies and not verdict.passed else 0
