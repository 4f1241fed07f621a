"""What ``reproduce`` and ``pretrain`` share: the paper's two experiments, cross-validated by
subject in run folders beside each other, and the Table 1 they give."""

from __future__ import annotations

from pathlib import Path

from kerasmyelin.errors import InputError


def experiments_dir() -> Path:
    """The repository's ``experiments/`` folder (next to the package in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "experiments"


def paper_experiments(folder: Path | None, overrides: list[str]) -> dict:
    """{"simple": ExperimentConfig, "ensemble": ExperimentConfig} from ``folder``'s
    paper_simple.yaml and paper_ensemble.yaml, with ``overrides`` applied to both."""
    from kerasmyelin.training.config import load_experiment

    folder = folder or experiments_dir()
    files = {"simple": folder / "paper_simple.yaml", "ensemble": folder / "paper_ensemble.yaml"}
    for path in files.values():
        if not path.is_file():
            raise InputError("experiment file not found (give --experiments)", path)
    return {k: load_experiment(path, overrides) for k, path in files.items()}


def single_contrast_experiments(simple) -> dict:
    """{"t1w_only": ..., "t2w_only": ...}: the simple model's experiment on one contrast each
    (``model.contrasts``), for infants whose other image is missing or ruined."""
    from dataclasses import replace

    from kerasmyelin.levels import CONTRASTS

    return {f"{c.lower()}_only": replace(simple, name=f"{simple.name}_{c.lower()}_only",
                                         model=replace(simple.model, contrasts=(c,)))
            for c in CONTRASTS}


def cross_validate(out: Path, configs: dict, cache: Path, truth, prefix: str = "", progress: bool = True):
    """Every fold of each experiment in ``out/{prefix}{key}`` (resumed where it stopped); returns
    (reports, predictions, number of infants) keyed like ``configs``."""
    from kerasmyelin.evaluation.report import format_summary, write_report
    from kerasmyelin.norms.store import write_run_norms
    from kerasmyelin.runs import RunFolder
    from kerasmyelin.training.experiment import open_run, run_fold

    reports, predictions, n = {}, {}, 0
    for key, config in configs.items():
        run_dir, config, data, splits = open_run(out / f"{prefix}{key}", config, cache)
        for fold in range(len(splits)):
            run_fold(run_dir, config, data, splits, fold, progress=progress)
        predictions[key] = RunFolder(run_dir).gather_predictions(len(splits))
        reports[key] = write_report(run_dir, predictions[key], config, truth)
        n = int(data.participant_id.size)
        print(format_summary(reports[key]))
        print(write_run_norms(run_dir))
    return reports, predictions, n
