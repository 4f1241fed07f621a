"""``kerasmyelin train``: train the paper's network (or ensemble) into a run folder."""

from __future__ import annotations

import argparse

from kerasmyelin.cli.experiment_args import (
    add_experiment_arguments,
    experiment_from_args,
)
from kerasmyelin.errors import ConfigError

NAME = "train"
HELP = "Train the simple model or the ensemble on a ten-slice cache (all infants, or one CV fold)."
EXAMPLES = """examples:
  # the deployable model on every infant (1000 epochs, as the paper)
  kerasmyelin train --config experiments/paper_ensemble.yaml --data cohort/derivatives/tenslice --out runs/ens
  # a quick look: 30 epochs
  kerasmyelin train --data cohort/derivatives/tenslice --out runs/quick --set train.epochs=30
  # one cross-validation fold as its own job (gather them with 'kerasmyelin evaluate --out runs/ens')
  kerasmyelin train --config experiments/paper_ensemble.yaml --data cohort/derivatives/tenslice --out runs/ens --fold 2
Rerunning the same command resumes a killed run from its last backup. Watch it with
'tensorboard --logdir runs/ens'.
"""


def _fold(text: str):
    if text in ("full", "all"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number, 'all' or 'full', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"fold numbers start at 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_experiment_arguments(p, required=False)
    p.add_argument("--out", required=True, help="run folder (created, or resumed if it holds this experiment)")
    p.add_argument("--fold", type=_fold, default="full",
                   help="'full' (default: every infant, the model to deploy), a 0-based CV fold, or 'all' folds")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kerasmyelin.training.experiment import FULL, RUN_INFO, open_run, run_fold

    # A run folder that already holds an experiment keeps it: --config / --data may be left out.
    config = experiment_from_args(args)
    if args.data is None and not (Path(args.out) / RUN_INFO).exists():
        raise ConfigError("--data is needed for a new run folder")
    run_dir, config, data, splits = open_run(args.out, config, args.data)
    folds = range(len(splits)) if args.fold == "all" else [args.fold]
    for fold in folds:
        folder = run_fold(run_dir, config, data, splits, fold, progress=not args.quiet)
        print(f"{config.name}: trained {'all infants' if fold == FULL else f'fold {fold}'} -> {folder}")
    return 0
