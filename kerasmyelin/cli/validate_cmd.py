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
writes docs/synth_vs_templates.png, docs/synth_vs_templates.md and .json; exits 1 when the
synthetic ratios disagree with the templates in sign or trend beyond the stated tolerance.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", required=True,
                   help="folder with Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz")
    p.add_argument("--out", required=True, help="folder for the figure and tables")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.validation.compare import TOLERANCE, compare_with_templates, figure

    out = Path(args.out)
    result = compare_with_templates(args.templates)
    problems = result.disagreements()
    figure(args.templates, out / "synth_vs_templates.png")
    text = (f"WM/GM median intensity ratio, template / synthetic (3 T), tolerance {TOLERANCE}.\n\n"
            + result.markdown() + "\n" + ("Disagreements:\n" + "\n".join(f"- {p}" for p in problems)
                                          if problems else "No disagreement in sign or trend.") + "\n")
    write_text_atomic(out / "synth_vs_templates.md", text)
    write_text_atomic(out / "synth_vs_templates.json", json.dumps(
        {"tolerance": TOLERANCE, "months": result.months,
         "template": {"|".join(map(str, k)): v for k, v in result.template.items()},
         "synthetic": {"|".join(map(str, k)): v for k, v in result.synthetic.items()},
         "disagreements": problems}, indent=1, sort_keys=True) + "\n")
    print(text)
    return 1 if problems else 0
