"""A trained model made ready to serve: its network(s), its record and its normative model.

``TrainedEstimator.from_path`` takes whatever ``--model`` names (``runs.resolve_model``: a run
folder, a fold folder or a ``.keras`` file) and loads it once for many infants. The record
(``model_record``) says how the slices must be prepared; a model without one is refused unless
the settings are given (``prep``).

A single-contrast network (``model.contrasts``: T1w or T2w alone) takes that contrast's five
slices only: ``input_names`` and ``contrasts`` say which, and ``predict`` reads only those from
the images it is given.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasmyelin.data.prepare import PrepConfig
from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import sha256_file
from kerasmyelin.levels import INPUT_NAMES, contrasts_of
from kerasmyelin.model_record import ModelRecord
from kerasmyelin.models.graph import model_input_names


class TrainedEstimator:
    """A model's network and normative model, loaded once for many infants.

    A run folder gives its model trained on all infants (``full/``) if there is one, otherwise
    the mean of its fold models (a cross-validation ensemble); the norms ``kerasmyelin evaluate``
    wrote give the interval, the gap correction and the delay grades. A fold folder or a single
    ``.keras`` file has no normative model (unless its record carries one, as an export's does):
    estimates come without interval or grade.
    """

    def __init__(self, model, files: list[Path], record: ModelRecord, name: str = "model",
                 record_from: str = "", normative_unavailable: str = ""):
        from kerasmyelin.norms.model import NormativeModel

        self.model = model
        self.files = list(files)
        self.record = record
        self.record_from = record_from
        self.name = name
        self.normative = (NormativeModel.from_dict(record.normative, record_from or None)
                          if record.normative is not None else None)
        self.normative_report = dict(record.norms_report or {})
        if self.normative is None:
            self.normative_report["unavailable"] = normative_unavailable or "a single model file"
        self.version = f"{name} (sha256 {'+'.join(sha256_file(f)[:12] for f in self.files)})"
        if record.image_size != self.image_size:
            raise InputError(f"the model takes {self.image_size}x{self.image_size} images but its record says "
                             f"{record.image_size} ({record_from})", self.files[0])
        if tuple(record.inputs) != self.input_names:
            raise InputError(f"the model takes {list(self.input_names)} but its record says {list(record.inputs)} "
                             f"({record_from})", self.files[0])

    @classmethod
    def from_path(cls, path: str | os.PathLike, prep: dict | None = None) -> TrainedEstimator:
        """Load what ``path`` names (see ``runs.resolve_model``); ``prep``: ``--prep``'s settings."""
        from kerasmyelin.models.ensemble import fold_mean
        from kerasmyelin.runs import NORMS_FILE, no_record_error, resolve_model

        source = resolve_model(path, prep, require_record=False)
        models = [load_checked_model(f) for f in source.files]  # a model that is not one: said first
        if source.record is None:
            raise no_record_error(Path(path).expanduser())
        why = ""
        if source.record.calibration is not None and source.record.normative is None:
            why = (f"site-calibrated on {source.record.calibration.get('n')} scans; norms for corrected estimates "
                   "need 20")
        elif source.run is not None and source.record.normative is None:
            why = (f"the run has no {NORMS_FILE} yet: write it with 'kerasmyelin evaluate --out {source.run.path} "
                   "--no-train' (after every fold is trained)")
        elif source.run is None:
            why = "a fold folder or single model file (the norms describe a whole run)"
        return cls(fold_mean(models), list(source.files), source.record, name=source.name,
                   record_from=source.record_from, normative_unavailable=why)

    def predict(self, images: dict[str, np.ndarray]) -> float:
        """The estimate in months from input name -> (size, size) slice; only the model's own
        inputs (``input_names``) are read, others may be present."""
        return float(self.predict_many([images])[0])

    def predict_many(self, batch: list[dict[str, np.ndarray]]) -> np.ndarray:
        """(N,) estimates in months of N infants' slices (each as ``predict`` takes them).

        Raises:
            InputError: a slice of the model's inputs is missing.
        """
        from kerasmyelin.models.graph import graph_forward

        missing = sorted({n for b in batch for n in self.input_names if n not in b})
        if missing:
            raise InputError(f"the model ({', '.join(self.contrasts)}) needs the slices {list(self.input_names)}; "
                             f"missing {missing}", self.files[0])
        inputs = {n: np.stack([b[n] for b in batch])[..., None].astype(np.float32) for n in self.input_names}
        return np.asarray(graph_forward(self.model)(inputs)).reshape(-1).astype(np.float64)

    def warm_up(self) -> None:
        """Trace the forward graph now (a few seconds), not at the first infant of a batch."""
        blank = np.zeros((self.image_size, self.image_size), np.float32)
        self.predict_many([dict.fromkeys(self.input_names, blank)])

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model's inputs in ``levels.INPUT_NAMES`` order: the ten, or one contrast's five."""
        names = set(model_input_names(self.model))
        return tuple(n for n in INPUT_NAMES if n in names)

    @property
    def contrasts(self) -> tuple[str, ...]:
        """The contrasts the model needs: ("T1w", "T2w"), or the one it was trained on."""
        return contrasts_of(self.input_names)

    @property
    def image_size(self) -> int:
        return int(self.model.inputs[0].shape[1])

    @property
    def prep_config(self) -> PrepConfig:
        """The preparation the model was trained with (serving must match it)."""
        return self.record.prep()

    @property
    def trained_age_range_months(self) -> tuple[float, float] | None:
        return self.record.trained_age_range_months


def load_checked_model(path: str | os.PathLike):
    """A ``.keras`` file kerasmyelin wrote (safe mode), checked to take the ten inputs (or one
    contrast's five) and give one age."""
    from kerasmyelin.io.model_files import load_keras_model

    path = Path(path)
    try:
        model = load_keras_model(path)
    except InputError:
        raise
    except Exception as exc:  # Keras raises many types for a foreign or damaged file
        raise InputError(f"cannot load this model ({type(exc).__name__}: {exc})", path) from None
    names = sorted(model_input_names(model))
    try:
        contrasts_of(names)
        known = True
    except ValueError:
        known = False
    if not known or tuple(model.outputs[0].shape[1:]) != (1,):
        raise InputError(f"not a myelination-age model (inputs {names}, output shape "
                         f"{tuple(model.outputs[0].shape)}; expected the ten inputs {list(INPUT_NAMES)}, "
                         "or the five of one contrast, and one age)", path)
    return model
