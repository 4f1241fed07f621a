"""Command-line options shared by the commands that run experiments (train, evaluate, reproduce)."""

from __future__ import annotations

import argparse


def add_experiment_arguments(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--config", help="experiment YAML (e.g. experiments/paper_simple.yaml); "
                                    "default: the paper's simple model" + ("" if required else
                                    ", or the one stored in --out"))
    p.add_argument("--data", required=required,
                   help="ten-slice cache folder (e.g. cohort/derivatives/tenslice)"
                        + ("" if required else "; default: the one stored in --out"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs=50 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def experiment_from_args(args: argparse.Namespace, *, stored_ok: bool):
    """The ExperimentConfig the options ask for; None when ``stored_ok`` and none was given
    (the run folder's stored one is used)."""
    from kerasmyelin.training.config import load_experiment

    if stored_ok and args.config is None and not args.overrides:
        return None
    return load_experiment(args.config, args.overrides)
