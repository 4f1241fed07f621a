"""Command-line options shared by the commands that run experiments (train, evaluate, reproduce)."""

from __future__ import annotations

import argparse

from kerasmyelin.levels import CONTRASTS


def add_experiment_arguments(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--config", help="experiment YAML (e.g. experiments/paper_simple.yaml); default: the one "
                                    "stored in --out, else the paper's simple model")
    p.add_argument("--data", required=required,
                   help="ten-slice cache folder (e.g. cohort/derivatives/tenslice)"
                        + ("" if required else "; default: the one stored in --out"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs=50 (repeatable)")
    p.add_argument("--contrasts", nargs="+", choices=CONTRASTS, metavar="CONTRAST",
                   help=f"the contrasts the network reads: {' '.join(CONTRASTS)} (the paper's), or one of them "
                        "for a single-contrast network of five branches (sets model.contrasts)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def experiment_from_args(args: argparse.Namespace):
    """The ExperimentConfig the options ask for: --config (or, for an existing run folder, its
    stored config.yaml, or else the paper's defaults) with the --set overrides applied, then
    --contrasts."""
    from pathlib import Path

    from kerasmyelin.training.config import load_experiment
    from kerasmyelin.runs import CONFIG_FILE

    stored = Path(args.out) / CONFIG_FILE
    base = args.config if args.config is not None else (stored if stored.exists() else None)
    overrides = list(args.overrides)
    if getattr(args, "contrasts", None):
        overrides.append(f"model.contrasts=[{', '.join(args.contrasts)}]")
    return load_experiment(base, overrides)
