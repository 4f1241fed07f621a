"""``kerasmyelin calibrate-synth``: fit the synthetic infants' tissue curves to real infant templates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

USES_TENSORFLOW = False  # no TensorFlow start-up for this command
NAME = "calibrate-synth"
HELP = "Fit the tissue curves (T1, T2, PD of white and grey matter by age) to the real infant templates."
EXAMPLES = """examples:
  kerasmyelin calibrate-synth --templates ../shared/data/infant_templates --out my_curves.json
  kerasmyelin synth --out cohort --varied --tissue-curves my_curves.json
  # the curves kerasmyelin ships ("calibrated") were made by:
  kerasmyelin calibrate-synth --templates ../shared/data/infant_templates \\
      --out kerasmyelin/synth/data/tissue_curves_calibrated.json --overwrite
Fits the 22 parameters of docs/realism.md to the templates' WM/GM ratios (levels b-e, both contrasts,
every age given by --months), ~1 min on 2 cores. How well such curves hold on an age they did not see
is what `kerasmyelin validate-synth --tissue-curves calibrated` measures (leave-one-age-out).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", required=True,
                   help="folder with Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz")
    p.add_argument("--out", required=True, help="the curves JSON file to write")
    p.add_argument("--months", default=None,
                   help="comma-separated template ages to fit to (default: all five); the others are left unseen")
    p.add_argument("--anatomy", choices=("mni", "templates"), default="mni",
                   help="what the typical synthetic infants compared with each template are built on: the scaled "
                        "adult MNI152 brain (default) or that template's own anatomy scaffold (synth.scaffolds)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing curves file")


def _months(text: str | None) -> tuple[int, ...]:
    from kerasmyelin.errors import ConfigError
    from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS, parse_months

    if text is None:
        return tuple(TEMPLATE_MONTHS)
    try:
        months = parse_months(text)
    except ValueError as exc:
        raise ConfigError(f"--months: {exc}") from None
    if len(months) < 2:
        raise ConfigError(f"--months: give at least two of the template ages {list(TEMPLATE_MONTHS)}, got {text!r}")
    return months


def _is_curves_file(path: Path) -> bool:
    try:
        return "tau_wm" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    import time

    from kerasmyelin.errors import ConfigError
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.io.output_dir import check_output_file
    from kerasmyelin.synth.curves import curves_from_dict
    from kerasmyelin.validation import calibration as cal
    from kerasmyelin.validation.compare import Comparison, template_cells

    out = Path(args.out)
    if out.suffix != ".json":
        raise ConfigError(f"--out must name a .json file, got {args.out!r}")
    months = _months(args.months)
    out = check_output_file(out, overwrite=args.overwrite, inputs=[("--templates", args.templates)],
                            looks_ours=_is_curves_file)
    start = time.monotonic()
    print("calibrate-synth: measuring the ten templates ...", flush=True)
    template = template_cells(args.templates)
    print("calibrate-synth: finding the instrument's voxels in typical synthetic infants ...", flush=True)
    if args.anatomy == "templates":
        ages = cal.scaffold_ages(months, args.templates)
    else:
        ages = {m: cal.age_voxels(m) for m in months}
    print(f"calibrate-synth: fitting 22 parameters to {8 * len(months)} cells (months {list(months)}) ...", flush=True)
    fit = cal.fit_curves(template, ages, months, name="calibrated")
    record = fit.curves.as_dict()
    record["provenance"] = cal.provenance(fit, args.templates, args.anatomy)
    curves_from_dict(record, str(out))  # what is written must read back
    write_text_atomic(out, json.dumps(record, indent=1, sort_keys=True) + "\n")
    cells = cal.synthetic_cells(fit.curves, ages, months)
    seen = Comparison({k: v for k, v in template.items() if k[2] in months},
                      {**{k: float("nan") for k in template if k[2] in months}, **cells}, months).verdict()
    print(f"wrote {out} in {time.monotonic() - start:.0f} s; in sample (not a test): {seen.agreeing} of "
          f"{seen.judged} cells within 0.05. Held out: `kerasmyelin validate-synth --tissue-curves {out}`")
    return 0
