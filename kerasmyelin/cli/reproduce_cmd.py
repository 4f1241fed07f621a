"""``kerasmyelin reproduce``: the main job, from nothing to the paper's Table 1 and Figure 4.

Synthetic cohort -> subject-level cross-validation of the simple model and of the ensemble ->
Table 1 (r, RMSE, MAE beside the paper's numbers and the oracle floor) and Figure 4.
The default trains each network for a fixed budget of ``QUICK_EPOCHS`` epochs so the whole job
fits in about 30 minutes on 2 cores; ``--paper`` runs the paper's 1000 epochs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kerasmyelin.cli.cv_runs import experiments_dir

NAME = "reproduce"
HELP = ("The main job: build the synthetic cohort, cross-validate the paper's simple model and ensemble, "
        "print Table 1 and draw Figure 4.")
QUICK_EPOCHS = 100
EXAMPLES = f"""examples:
  kerasmyelin reproduce --out main            # ~30 min on 2 cores: {QUICK_EPOCHS} epochs per network
  kerasmyelin reproduce --out main --paper    # the paper's protocol: 1000 epochs per network
  kerasmyelin reproduce --out tiny --subjects 24 --epochs 2 --set cv.folds=2   # a quick try
Rerunning the same command reuses the cohort and every finished fold, and resumes a killed network.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder: cohort/, one run folder per model, table1.md, figure4.png")
    p.add_argument("--paper", action="store_true", help="the paper's protocol: 1000 epochs per network")
    p.add_argument("--epochs", type=int, help=f"epochs per network (default {QUICK_EPOCHS}; 1000 with --paper)")
    p.add_argument("--subjects", type=int, default=119, help="infants in the synthetic cohort (default 119)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--experiments", type=Path, default=None,
                   help="folder with paper_simple.yaml and paper_ensemble.yaml (default: the repository's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of both experiments, e.g. --set train.batch_size=16")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from kerasmyelin.cli.cv_runs import cross_validate, paper_experiments
    from kerasmyelin.data.cache import CACHE_FILE
    from kerasmyelin.errors import ConfigError
    from kerasmyelin.evaluation.plots import save_scatter
    from kerasmyelin.evaluation.report import synthetic_truth, table1
    from kerasmyelin.io.atomic import write_text_atomic
    from kerasmyelin.synth.cohort import CohortConfig
    from kerasmyelin.synth.dataset import build_cohort

    start = time.monotonic()
    out = Path(args.out).expanduser().absolute()
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if any(o.strip().startswith("train.epochs") for o in args.overrides):
        raise ConfigError("set the epochs with --epochs (or --paper), not --set train.epochs=...")
    epochs = args.epochs or (1000 if args.paper else QUICK_EPOCHS)
    folder = args.experiments or experiments_dir()
    configs = paper_experiments(folder, [f"train.epochs={epochs}", *args.overrides])

    from kerasmyelin.io.output_dir import open_reopened

    # Reopened, not replaced: a reproduction resumes where it stopped. One made before output
    # markers existed is recognised by its cohort's cache.
    open_reopened(out, "reproduce", inputs=[("--experiments", folder)],
                  legacy=lambda f: (f / "cohort" / "derivatives" / "tenslice" / CACHE_FILE).is_file())
    cohort = out / "cohort"
    cache = cohort / "derivatives" / "tenslice"
    if not (cache / CACHE_FILE).exists():
        try:
            cohort_config = CohortConfig(subjects=args.subjects, seed=args.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        build_cohort(cohort, cohort_config, progress=not args.quiet)
    truth = synthetic_truth(cache)
    if truth is not None and len(truth) != args.subjects:
        raise ConfigError(f"{cohort} holds a cohort of {len(truth)} infants, not --subjects {args.subjects}; "
                          f"use another --out (or the same --subjects) to reuse it")

    prefix = "paper_" if epochs == 1000 else f"e{epochs}_"
    if args.overrides:
        import hashlib

        prefix += hashlib.sha256(" ".join(sorted(args.overrides)).encode()).hexdigest()[:6] + "_"
    reports, predictions, n = cross_validate(out, configs, cache, truth, prefix, progress=not args.quiet)

    table = table1(reports["simple"], reports["ensemble"])
    minutes = (time.monotonic() - start) / 60
    command = "kerasmyelin " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith("kerasmyelin") else f"kerasmyelin reproduce --out {args.out}"
    text = (f"# Table 1 on the synthetic cohort\n\n{table}\n\n"
            f"{configs['simple'].cv.folds}-fold subject-level cross-validation, out-of-fold estimates, "
            f"{n} synthetic infants, {epochs} epochs per network; "
            f"{minutes:.1f} min for this invocation.\n\nReproduce: `{command}`\n")
    write_text_atomic(out / "table1.md", text)
    ens_label = next(iter(reports["ensemble"]["models"]))
    save_scatter([{"label": "(a) simple model", "true": predictions["simple"]["age_months"],
                   "predicted": predictions["simple"]["predicted_months"],
                   "metrics": reports["simple"]["models"]["simple"]},
                  {"label": f"(b) {ens_label}", "true": predictions["ensemble"]["age_months"],
                   "predicted": predictions["ensemble"]["predicted_months"],
                   "metrics": reports["ensemble"]["models"][ens_label]}],
                 out / "figure4.png",
                 title=f"Estimated vs corrected age, synthetic cohort, {epochs} epochs (cf. Wada et al. 2019, Fig. 4)")
    print()
    print(table)
    print(f"\nwrote {out / 'table1.md'} and {out / 'figure4.png'} ({minutes:.1f} min)")
    return 0
