"""``kerasmyelin pretrain``: build the realistic synthetic cohort and train the model meant for real scans.

Realistic cohort -> brain-core ten-slice cache -> the paper's simple model and ensemble, and the
simple model on the T1w alone and on the T2w alone, each cross-validated by subject (so each run
carries out-of-fold estimates, norms and intervals) -> a note in OUT saying which run to use. The recipe and what it is measured to do on real infant
templates are in docs/realism.md; the model card is docs/model_card.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

NAME = "pretrain"
HELP = ("Build the realistic synthetic cohort (calibrated tissue, protocol variety) and train the model "
        "meant for real scans (simple model, ensemble, T1w-only and T2w-only models; cross-validated).")
DEFAULT_EPOCHS = 100
DEFAULT_ACQUISITION_VARIETY = 0.5
TEMPLATE_ANATOMY_FRACTION = 0.5
CURVES_FILE = "tissue_curves.json"
# What differs from the paper reproduction, all of it aimed at scans from other scanners.
RECIPE = {
    "cohort": "synth --varied (half 3-D MPRAGE/SPACE research protocols, TR/TE/TI jitter 0.1, 30% skull-stripped, "
              "30% smoothed) with the tissue curves calibrated to the real infant templates; half the infants with "
              "their own slice thickness, in-plane resolution and research sequences (--acquisition-variety); "
              "with --templates, half built on infant anatomy scaffolds and the tissue curves fitted to the "
              "templates on those scaffolds (calibrate-synth --anatomy templates)",
    "preparation": "brain-core intensity scaling (prepare --intensity-reference brain_core)",
    "training": "the paper's networks and Adam settings, with flips, per-contrast gains and random monotone "
                "intensity curves (train.augment, train.intensity_curves)",
}
EXAMPLES = f"""examples:
  kerasmyelin pretrain --out realmodel          # ~30 min on 2 cores: {DEFAULT_EPOCHS} epochs per network
  kerasmyelin predict --model realmodel/ensemble --t1 T1w.nii.gz --t2 T2w.nii.gz --age-months 6 --out result
  kerasmyelin pretrain --out tiny --subjects 16 --epochs 2 --set cv.folds=2   # a quick try
Rerunning the same command reuses the cohort, the cache and every finished fold, and resumes a killed network.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True,
                   help="output folder: cohort/, cache/, simple/, ensemble/, t1w_only/, t2w_only/, MODEL.md")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs per network (default {DEFAULT_EPOCHS})")
    p.add_argument("--subjects", type=int, default=119, help="infants in the synthetic cohort (default 119)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--tissue-curves", default=None, metavar="NAME",
                   help="calibrated (the shipped curves; the default without --templates), published, or a JSON "
                        "file from `kerasmyelin calibrate-synth`. With --templates and no --tissue-curves the curves "
                        "are fitted to those templates on their own anatomy scaffolds (OUT/tissue_curves.json)")
    p.add_argument("--templates", default=None, metavar="DIR",
                   help="folder of the real infant templates (Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz): half the "
                        "infants are then built on anatomy scaffolds segmented from them (synth --template-anatomy)")
    p.add_argument("--template-months", default=None, metavar="LIST",
                   help="comma-separated template ages whose scaffolds may be used (default: all five)")
    p.add_argument("--acquisition-variety", type=float, default=DEFAULT_ACQUISITION_VARIETY, metavar="SHARE",
                   help="share of infants with their own slice thickness, in-plane resolution and research "
                        f"sequences (synth --acquisition-variety; default {DEFAULT_ACQUISITION_VARIETY})")
    p.add_argument("--experiments", type=Path, default=None,
                   help="folder with paper_simple.yaml and paper_ensemble.yaml (default: the repository's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of both experiments, e.g. --set cv.folds=2")
    p.add_argument("--jobs", type=int, default=None, help="worker processes for the cohort (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _fit_curves_on_scaffolds(templates: str, out: Path) -> None:
    """``calibrate-synth --anatomy templates`` on all five templates, written atomically to ``out``."""
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS
    from kerasmyelin.synth.curves import curves_from_dict
    from kerasmyelin.validation import calibration as cal
    from kerasmyelin.validation.compare import template_cells

    months = tuple(TEMPLATE_MONTHS)
    fit = cal.fit_curves(template_cells(templates), cal.scaffold_ages(months, templates), months, name="calibrated")
    record = fit.curves.as_dict()
    record["provenance"] = cal.provenance(fit, templates, "templates")
    curves_from_dict(record, str(out))  # what is written must read back
    write_text_atomic(out, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _check_cohort(cohort: Path, config) -> None:
    """A cohort already in OUT must be the one these options ask for."""
    from dataclasses import asdict

    from kerasmyelin.errors import ConfigError

    recorded = json.loads((cohort / "dataset_description.json").read_text()).get("CohortConfig", {})
    wanted = json.loads(json.dumps(asdict(config)))
    differ = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if differ:
        raise ConfigError(f"{cohort} was built with other settings ({', '.join(differ)}); use another --out, or "
                          "the options it was built with")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.cli.cv_runs import (
        cross_validate,
        experiments_dir,
        paper_experiments,
        single_contrast_experiments,
    )
    from kerasmyelin.data.build import prepare_bids
    from kerasmyelin.data.cache import CACHE_FILE
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.errors import ConfigError
    from kerasmyelin.evaluation.report import table1
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.io.output_dir import open_reopened
    from kerasmyelin.synth.cohort import VARIED, CohortConfig
    from kerasmyelin.synth.dataset import TRUTH_DIR, build_cohort

    start = time.monotonic()
    out = Path(args.out).expanduser().absolute()
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if any(o.strip().startswith("train.epochs") for o in args.overrides):
        raise ConfigError("set the epochs with --epochs, not --set train.epochs=...")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    folder = args.experiments or experiments_dir()
    configs = paper_experiments(folder, [f"train.epochs={args.epochs}", "train.augment=true",
                                         "train.intensity_curves=true", *args.overrides])
    configs.update(single_contrast_experiments(configs["simple"]))
    anatomy = {}
    if args.templates:
        anatomy = {"templates": args.templates, "template_anatomy_fraction": TEMPLATE_ANATOMY_FRACTION}
        if args.template_months:
            from kerasmyelin.cli.synth_cmd import months_list

            try:
                anatomy["template_months"] = months_list(args.template_months)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"--template-months: {exc}") from None
    elif args.template_months:
        raise ConfigError("--template-months needs --templates DIR")
    fit_curves = bool(args.templates) and args.tissue_curves is None
    curves = args.tissue_curves or "calibrated"
    try:
        cohort_config = CohortConfig(subjects=args.subjects, seed=args.seed, tissue_curves=curves,
                                     acquisition_variety=args.acquisition_variety, **VARIED, **anatomy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    # Reopened, not replaced: pretraining resumes where it stopped.
    open_reopened(out, "pretrain", inputs=[("--experiments", folder)])
    cohort, cache = out / "cohort", out / "cache"
    if fit_curves:
        curves_file = out / CURVES_FILE
        if not curves_file.is_file():
            print("pretrain: fitting the tissue curves to the templates on their own anatomy scaffolds", flush=True)
            _fit_curves_on_scaffolds(args.templates, curves_file)
        from dataclasses import replace

        cohort_config = replace(cohort_config, tissue_curves=str(curves_file))
        curves = f"{CURVES_FILE} (fitted on the scaffolds)"
    if (cohort / "participants.tsv").is_file():
        _check_cohort(cohort, cohort_config)
    else:
        print(f"pretrain: building {args.subjects} synthetic infants ({curves} tissue curves, "
              "protocol variety" + (", infant anatomy scaffolds" if anatomy else "") + ")", flush=True)
        build_cohort(cohort, cohort_config, jobs=args.jobs, progress=not args.quiet)
    if not (cache / CACHE_FILE).is_file():
        print("pretrain: preparing the ten slices with brain-core scaling", flush=True)
        prepare_bids(cohort, cohort / TRUTH_DIR / "truth.tsv", cache, progress=not args.quiet,
                     config=PrepConfig(intensity_reference="brain_core"), jobs=args.jobs or os.cpu_count() or 1)
    from kerasmyelin.evaluation.report import synthetic_truth

    truth = synthetic_truth(cohort / "derivatives" / "tenslice")
    reports, _, n = cross_validate(out, configs, cache, truth, progress=not args.quiet)
    minutes = (time.monotonic() - start) / 60
    text = (f"# The model for real scans\n\nUse `{out / 'ensemble'}` (the gated ensemble; `{out / 'simple'}` is the "
            "simple model), e.g.\n\n"
            f"    kerasmyelin predict --model {out / 'ensemble'} --t1 T1w.nii.gz --t2 T2w.nii.gz --age-months MONTHS --out RESULT\n\n"
            "Trained on synthetic infants only: read docs/model_card.md before using it on a patient.\n\n"
            f"Where one image is ruined (motion), `{out / 't1w_only'}` and `{out / 't2w_only'}` are the simple "
            "model on the T1w or the T2w alone: they read only their own contrast's five slices. `predict` "
            "still needs both files today (the levels and the input checks use the pair).\n\n"
            "## How it was made\n\n" + "".join(f"- {k}: {v}\n" for k, v in RECIPE.items())
            + f"- {n} synthetic infants (seed {args.seed}), {args.epochs} epochs per network, "
              f"{configs['simple'].cv.folds}-fold subject-level cross-validation\n\n"
            f"## Cross-validated on the synthetic cohort (not on real scans)\n\n{table1(reports['simple'], reports['ensemble'])}\n\n"
            + "".join(f"- {k.replace('_', ' ').replace('only', 'alone')}: MAE {reports[k]['models']['simple']['mae']:.2f} "
                      f"months, Spearman r {reports[k]['models']['simple']['spearman_r']:.2f}\n"
                      for k in ("t1w_only", "t2w_only")) + "\n"
            f"{minutes:.1f} min for this invocation.\n")
    write_text_atomic(out / "MODEL.md", text)
    print(f"\nwrote {out / 'MODEL.md'}; use --model {out / 'ensemble'} on real scans ({minutes:.1f} min)")
    return 0
