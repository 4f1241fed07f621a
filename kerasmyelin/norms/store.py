"""A run's norms: fitted once on its out-of-fold estimates (``kerasmyelin evaluate``) and stored
in the run folder as ``normative.json``, which serving reads and never refits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.norms.fit import cross_validate_normative, fit_normative
from kerasmyelin.norms.model import DEFAULT_LEVEL, MIN_INFANTS, NormativeModel

def normative_from_run(run: str | os.PathLike, level: float = DEFAULT_LEVEL) -> tuple[NormativeModel, dict]:
    """Fit and cross-validate the normative model on a run folder's out-of-fold estimates.

    Uses the estimate the run exports (``predicted_months``: the simple network, or the ensemble
    with its configured rule), the folds in ``splits.json``, and every fold's ``predictions.csv``.

    Returns:
        (the model fitted on every infant, ``cross_validate_normative``'s report plus "run",
         "experiment", "estimate" (label) and "column").

    Raises:
        InputError: naming the run folder when it is not a run, a fold has no predictions yet,
            or fewer than ``MIN_INFANTS`` infants were predicted.
    """
    from kerasmyelin.evaluation.report import estimate_columns
    from kerasmyelin.runs import SPLITS_FILE, RunFolder
    from kerasmyelin.training.config import load_experiment
    from kerasmyelin.training.splits import load_splits

    folder = RunFolder(run)
    run = folder.path
    if not folder.is_run():
        raise InputError(f"not a kerasmyelin run folder (no {folder.config_file.name})", run)
    if not folder.splits_file.is_file():
        raise InputError(f"no {SPLITS_FILE}: run 'kerasmyelin evaluate' / train all folds first", run)
    config = load_experiment(folder.config_file)
    splits = load_splits(folder.splits_file)
    predictions = folder.gather_predictions(len(splits))
    if predictions is None:
        missing = folder.missing_predictions(len(splits))
        raise InputError(f"no out-of-fold predictions for {', '.join(missing)}: run 'kerasmyelin evaluate' / "
                         f"train all folds first", run)
    label, column = next(iter(estimate_columns(predictions, config).items()))
    if column not in predictions or "age_months" not in predictions:
        raise InputError(f"the fold predictions lack {column} or age_months", run)
    fold_of = {pid: k for k, split in enumerate(splits) for pid in split["test"]}
    ids = predictions["participant_id"].tolist()
    strays = [p for p in ids if p not in fold_of]
    if strays:
        raise InputError(f"predictions name infants no fold in {SPLITS_FILE} tests: {strays[:3]}", run)
    if len(set(ids)) != len(ids):
        raise InputError("an infant is predicted in more than one fold", run)
    if len(ids) < MIN_INFANTS:
        raise InputError(f"only {len(ids)} infants have out-of-fold predictions; a normative fit needs "
                         f"at least {MIN_INFANTS}", run)
    folds = np.array([fold_of[p] for p in ids])
    y, e = predictions["age_months"], predictions[column]
    model = fit_normative(y, e, folds, level)
    report = {"run": str(run), "experiment": config.name, "estimate": label, "column": column,
              **cross_validate_normative(y, e, folds, level)}
    return model, report


def write_run_norms(run: str | os.PathLike) -> str:
    """Fit the run's normative model and write it into the run folder (``normative.json``), once,
    for serving to read (``kerasmyelin evaluate`` calls this). Returns a line for the user: what
    was written, or why no norms could be fitted (too few infants), in which case an older
    ``normative.json`` is removed rather than left describing other predictions."""
    from kerasmyelin.runs import RunFolder

    folder = RunFolder(run)
    try:
        model, report = normative_from_run(folder.path)
    except InputError as exc:
        if folder.norms_file.exists():
            folder.norms_file.unlink()
        return f"no normative model ({exc}): estimates from this run come without interval or grade"
    path = folder.write_norms(model, report)
    return (f"wrote {path} (norms on {model.n} infants; held-out coverage {report['coverage']:.0%} of "
            f"{model.level:.0%})")


def write_normative(path: str | os.PathLike, model: NormativeModel, report: dict | None = None) -> Path:
    """The model (and, optionally, its cross-validation report) as JSON, written atomically."""
    from kerasmyelin.io.atomic import write_text_atomic

    payload = {"model": model.to_dict(), "cross_validation": report}
    return write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def read_normative(path: str | os.PathLike) -> NormativeModel:
    """The model ``write_normative`` stored; InputError naming the file when it is not one."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the normative model ({exc.strerror or exc})", path) from None
    except ValueError as exc:
        raise InputError(f"not JSON ({exc})", path) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise InputError("not a normative model file (no 'model')", path)
    return NormativeModel.from_dict(payload["model"], path)
