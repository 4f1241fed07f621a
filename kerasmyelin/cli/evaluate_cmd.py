"""``kerasmyelin evaluate``: cross-validate an experiment and report the paper's metrics."""

from __future__ import annotations

import argparse

from kerasmyelin.cli.experiment_args import (
    add_experiment_arguments,
    experiment_from_args,
)
from kerasmyelin.errors import InputError

NAME = "evaluate"
HELP = ("Cross-validate an experiment by subject (training any fold not yet trained) and report Spearman r, "
        "RMSE, MAE, Bland-Altman and per-age-bin errors beside the oracle floor, with the Figure 4 scatter.")
EXAMPLES = """examples:
  kerasmyelin evaluate --config experiments/paper_simple.yaml --data cohort/derivatives/tenslice --out runs/simple
  kerasmyelin evaluate --out runs/simple               # gather folds trained as separate jobs
  kerasmyelin evaluate --out runs/simple --no-train    # report only; fails if a network is missing
Writes metrics.json, figure4.png and normative.json (the norms predict grades with, fitted
once here on the out-of-fold estimates) in the run folder.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_experiment_arguments(p, required=False)
    p.add_argument("--out", required=True, help="run folder (created, or reopened)")
    p.add_argument("--no-train", action="store_true", help="do not train missing folds; only gather and report")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.evaluation.report import (
        METRICS_FILE,
        SCATTER_FILE,
        format_summary,
        synthetic_truth,
        write_report,
    )
    from kerasmyelin.norms.store import write_run_norms
    from kerasmyelin.runs import RunFolder
    from kerasmyelin.training.experiment import fold_missing, open_run, run_fold

    folder = RunFolder(args.out)
    if args.no_train and not folder.is_run():
        raise InputError(f"not a run folder (no {folder.config_file.name}); --no-train only gathers existing folds",
                         folder.path)
    config = experiment_from_args(args)
    run_dir, config, data, splits = open_run(args.out, config, args.data)
    for fold in range(len(splits)):
        # With --no-train this still assembles a fold whose networks other jobs have finished.
        run_fold(run_dir, config, data, splits, fold, progress=not args.quiet, train=not args.no_train)
    predictions = folder.gather_predictions(len(splits))
    if predictions is None:
        missing = [f"{folder.fold(k)} ({', '.join(fold_missing(run_dir, config, k))})"
                   for k in range(len(splits)) if not folder.predictions_file(k).exists()]
        raise InputError(f"networks not trained yet: {'; '.join(missing)} (drop --no-train to train them)",
                         run_dir)
    truth = synthetic_truth(folder.data_dir())
    report = write_report(run_dir, predictions, config, truth)
    print(format_summary(report))
    print(f"wrote {run_dir / METRICS_FILE} and {run_dir / SCATTER_FILE}")
    print(write_run_norms(run_dir))
    return 0
