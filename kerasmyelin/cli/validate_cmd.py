"""``kerasmyelin validate-synth``: check the synthetic cohort against the real infant templates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

USES_TENSORFLOW = False  # no TensorFlow start-up for this command
NAME = "validate-synth"
HELP = "Compare synthetic infants with real infant templates: WM/GM ratio table, agreement, figure."
EXAMPLES = """examples:
  kerasmyelin validate-synth --templates ../shared/data/infant_templates --out docs
  kerasmyelin validate-synth --templates ../shared/data/infant_templates --out docs --protocol research3d
writes docs/synth_vs_templates.png, docs/synth_vs_templates.md and .json (with --protocol
research3d: synth_vs_templates_research3d.*); exits 1 when the synthetic ratios disagree with the
templates in sign or trend beyond the stated tolerance.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", required=True,
                   help="folder with Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz")
    p.add_argument("--out", required=True, help="folder for the figure and tables")
    p.add_argument("--protocol", choices=("clinical", "research3d"), default="clinical",
                   help="synthetic protocol family to compare: the paper's clinical stacks (default) or the "
                        "3-D research MPRAGE/SPACE of `synth --research-fraction`")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.validation.compare import TOLERANCE, compare_with_templates, figure

    from kerasmyelin.io.output_dir import check_apart

    out = Path(args.out)
    # It adds three named files to --out (docs/, say), replacing only its own earlier ones; never
    # among the real templates.
    check_apart(out, [("--templates", args.templates)])
    stem = "synth_vs_templates" + ("" if args.protocol == "clinical" else f"_{args.protocol}")
    result = compare_with_templates(args.templates, protocol=args.protocol)
    problems = result.disagreements()
    figure(args.templates, out / f"{stem}.png", protocol=args.protocol)
    text = (f"WM/GM median intensity ratio, template / synthetic (3 T, {args.protocol} protocol), "
            f"tolerance {TOLERANCE}.\n\n"
            + result.markdown() + "\n" + ("Disagreements:\n" + "\n".join(f"- {p}" for p in problems)
                                          if problems else "No disagreement in sign or trend.") + "\n")
    write_text_atomic(out / f"{stem}.md", text)
    write_text_atomic(out / f"{stem}.json", json.dumps(
        {"tolerance": TOLERANCE, "protocol": args.protocol, "months": result.months,
         "template": {"|".join(map(str, k)): v for k, v in result.template.items()},
         "synthetic": {"|".join(map(str, k)): v for k, v in result.synthetic.items()},
         "disagreements": problems}, indent=1, sort_keys=True) + "\n")
    print(text)
    return 1 if problems else 0
