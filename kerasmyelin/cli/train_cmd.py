"""``kerasmyelin train``: train the paper's network (or ensemble) into a run folder."""

from __future__ import annotations

import argparse
import re

from kerasmyelin.cli.experiment_args import (
    add_experiment_arguments,
    experiment_from_args,
)
from kerasmyelin.errors import ConfigError, TrainingError
from kerasmyelin.training.strategy import STRATEGIES

NAME = "train"
HELP = "Train the simple model or the ensemble on a ten-slice cache (all infants, or one CV fold)."
EXAMPLES = """examples:
  # the deployable model on every infant (1000 epochs, as the paper)
  kerasmyelin train --config experiments/paper_ensemble.yaml --data cohort/derivatives/tenslice --out runs/ens
  # a quick look: 30 epochs
  kerasmyelin train --data cohort/derivatives/tenslice --out runs/quick --set train.epochs=30
  # one cross-validation fold as its own job (gather them with 'kerasmyelin evaluate --out runs/ens')
  kerasmyelin train --config experiments/paper_ensemble.yaml --data cohort/derivatives/tenslice --out runs/ens --fold 2
  # one ensemble member of one fold as its own job (the last member to finish assembles the fold)
  kerasmyelin train --out runs/ens --fold 2 --member old
  # fine-tune a trained model on a small local cohort: start from its weights, train the layers that
  # combine the slices, at a tenth of the learning rate, for 100 epochs (measured: docs/own_scans.md)
  kerasmyelin train --data local/tenslice --out runs/local --init-from runs/synthetic --freeze-branches \
    --set train.learning_rate=1e-4 --set train.epochs=100
  # every local device (tf.distribute.MirroredStrategy)
  kerasmyelin train --out runs/ens --strategy mirrored
  # one of several worker processes or machines, the cluster in TF_CONFIG (docs/cluster.md); run it on each
  TF_CONFIG='{"cluster": {"worker": ["node1:12345", "node2:12345"]}, "task": {"type": "worker", "index": 0}}' \
    kerasmyelin train --config experiments/paper_simple.yaml --data /shared/tenslice --out /shared/runs/simple \
    --strategy multiworker
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
    p.add_argument("--member", action="append", default=None, metavar="NAME",
                   help="train only this network of an ensemble (e.g. young or old; repeatable); the others "
                        "are trained by other jobs, and whichever finishes last assembles the fold")
    p.add_argument("--init-from", metavar="RUN",
                   help="fine-tune: start every network from this trained run folder's (its model trained on "
                        "every infant), fold folder's or .keras file's weights; the architecture must match "
                        "(sets train.init_from)")
    p.add_argument("--freeze-branches", action="store_true",
                   help="with --init-from: keep the ten slice branches as trained and train only the layers that "
                        "combine them (sets train.freeze_branches)")
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="'default': model.fit in this process; 'mirrored': every device of this machine; "
                        "'multiworker': the processes or machines TF_CONFIG names, the run folder on a shared "
                        "filesystem (docs/cluster.md). A run folder may be resumed under another strategy")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.training.strategy import lost_worker_errors, make_strategy

    # Before anything else: multi-worker training configures TensorFlow's collective ops, which is
    # only possible before TensorFlow has run anything in this process.
    strategy = make_strategy(args.strategy)
    if args.strategy != "multiworker":
        return _train(args, strategy)
    try:
        return _train(args, strategy)
    except lost_worker_errors() as exc:
        tasks = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", str(exc)))) or ["not named"]
        raise TrainingError(f"lost contact with another worker ({type(exc).__name__}; task {', '.join(tasks)}: "
                            "see its log); start every worker again with the same command to resume from the "
                            "chief's last backup") from None


def _with_init(config, args: argparse.Namespace):
    """``config`` with --init-from (as an absolute path: the run may be resumed from elsewhere)
    and --freeze-branches applied."""
    import dataclasses
    from pathlib import Path

    from kerasmyelin.training.init_from import check_freeze

    train = config.train
    if args.init_from:
        train = dataclasses.replace(train, init_from=str(Path(args.init_from).expanduser().absolute()))
    if args.freeze_branches:
        train = dataclasses.replace(train, freeze_branches=True)
    check_freeze(train)
    return config if train is config.train else dataclasses.replace(config, train=train)


def _train(args: argparse.Namespace, strategy) -> int:
    from pathlib import Path

    from kerasmyelin.runs import FULL, RUN_INFO
    from kerasmyelin.training.experiment import (
        fold_missing,
        member_names,
        open_run,
        run_fold,
    )
    from kerasmyelin.training.strategy import barrier, chief_first, is_writer

    # A run folder that already holds an experiment keeps it: --config / --data may be left out.
    config = _with_init(experiment_from_args(args), args)
    if args.data is None and not (Path(args.out) / RUN_INFO).exists():
        raise ConfigError("--data is needed for a new run folder")
    if config.train.init_from and not (Path(args.out) / RUN_INFO).exists():
        # Before the run folder is made: a source that cannot start this run leaves nothing behind.
        from kerasmyelin.data.shards import open_tenslice
        from kerasmyelin.training.init_from import check_init_source

        check_init_source(config, open_tenslice(args.data).manifest.get("prep_config"))
    # The chief writes a new run folder's config, data fingerprint and splits; the others then read them.
    run_dir, config, data, splits = chief_first(strategy, lambda: open_run(args.out, config, args.data))
    members = member_names(config, args.member)
    folds = range(len(splits)) if args.fold == "all" else [args.fold]
    for fold in folds:
        folder = run_fold(run_dir, config, data, splits, fold, progress=not args.quiet, members=args.member,
                          strategy=strategy)
        which = "all infants" if fold == FULL else f"fold {fold}"
        if not is_writer(strategy):
            print(f"{config.name}: trained {which} alongside the chief, which writes {folder}")
            continue
        waiting = fold_missing(run_dir, config, fold)
        if waiting:
            print(f"{config.name}: trained {', '.join(members)} of {which} -> {folder}; the fold waits for "
                  f"{', '.join(waiting)} (--member {waiting[0]})")
        else:
            print(f"{config.name}: trained {which} -> {folder}")
    # Leave together, after the chief's last writes: a worker that stops early looks like a crash
    # to TensorFlow's cluster coordination.
    barrier(strategy)
    return 0
