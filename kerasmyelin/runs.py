"""A run folder's layout, written and read in one place, and the one resolver of ``--model``.

```
RUN/
  config.yaml      the resolved ExperimentConfig (defaults + YAML + overrides)
  run.json         which ten-slice cache (path and sha256) the run uses, and its model record
                   (model_record): preparation settings, image size, inputs, trained ages
  splits.json      the cross-validation folds (by participant id), each with a validation share
  normative.json   the normative model fitted on the folds' out-of-fold estimates, with its
                   cross-validation (written by `kerasmyelin evaluate`; read at load, never refit)
  metrics.json, figure4.png   the evaluation (evaluation.report)
  fold-0/ ...      one per fold: a folder per network (simple, or the ensemble's members) with
                   checkpoints, history.csv, learning_curve.png and tensorboard/; model.keras (the
                   model evaluated: the network, or the ensemble as one graph, with the record
                   inside); predictions.csv (the fold's test infants)
  full/            the same, trained on every infant: the model to deploy
```

Training writes through :class:`RunFolder` (``training.experiment``); predict, evaluate, export,
the norms and the command line read through it and :func:`resolve_model`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import write_text_atomic
from kerasmyelin.model_record import FORMAT, VERSION, ModelRecord, record_from_cache_manifest

CONFIG_FILE = "config.yaml"
RUN_INFO = "run.json"
SPLITS_FILE = "splits.json"
NORMS_FILE = "normative.json"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "predictions.csv"
FULL = "full"
MAX_FOLDS = 64
# run.json's fields besides the record's: where the data is, and what it was.
_INFO_FIELDS = ("data", "sha256", "written_by")


class NoRecordError(InputError):
    """A model with no record (preparation settings) and none given: see ``resolve_model``."""


class RunFolder:
    """One run folder (see the module docstring). Creating the object touches nothing on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- layout ----------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def info_file(self) -> Path:
        return self.path / RUN_INFO

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS_FILE

    @property
    def norms_file(self) -> Path:
        return self.path / NORMS_FILE

    def fold(self, fold: int | str) -> Path:
        """The folder of fold ``fold`` (0-based) or of "full"."""
        return self.path / (FULL if fold == FULL else f"fold-{int(fold)}")

    def model_file(self, fold: int | str) -> Path:
        return self.fold(fold) / MODEL_FILE

    def predictions_file(self, fold: int | str) -> Path:
        return self.fold(fold) / PREDICTIONS_FILE

    def is_run(self) -> bool:
        return self.config_file.is_file()

    @classmethod
    def around(cls, path: str | os.PathLike) -> RunFolder | None:
        """The run holding ``path`` (a fold folder or a model file in one), or None."""
        p = Path(path).expanduser().absolute()
        for folder in (p, *p.parents[:2]):
            if (folder / CONFIG_FILE).is_file() and (folder / RUN_INFO).is_file():
                return cls(folder)
        return None

    # -- run.json --------------------------------------------------------------------------------
    def read_info(self) -> dict:
        """``run.json``, checked: the cache folder and its sha256 (plus the record's fields)."""
        path = self.info_file
        try:
            info = json.loads(path.read_text())
            if not (isinstance(info, dict) and isinstance(info["data"], str) and isinstance(info["sha256"], str)):
                raise TypeError("data and sha256 must be text")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"damaged run description ({exc}); delete the run folder or restore the file",
                             path) from None
        return info

    def write_info(self, data_dir: Path, sha256: str, record: ModelRecord | None) -> Path:
        body = {"data": str(data_dir), "sha256": sha256, "written_by": "kerasmyelin"}
        if record is not None:
            body.update(_record_fields(record.without_norms()))
        return write_text_atomic(self.info_file, json.dumps(body, indent=1) + "\n")

    def data_dir(self) -> Path:
        """The ten-slice cache folder the run was made with."""
        return Path(self.read_info()["data"])

    # -- the record ------------------------------------------------------------------------------
    def record(self) -> ModelRecord | None:
        """The run's record with its norms (when evaluate wrote them); None for a run from before
        run.json carried one, unless its training cache is still the one it was trained on."""
        info = self.read_info()
        if isinstance(info.get("prep_config"), dict):
            record = ModelRecord.from_json({"format": FORMAT, "version": VERSION,
                                            **{k: v for k, v in info.items() if k not in _INFO_FIELDS}},
                                           self.info_file)
        else:
            record = self._record_from_cache(info)
        if record is None:
            return None
        norms = self.read_norms()
        return record.with_norms(*norms) if norms is not None else record

    def _record_from_cache(self, info: dict) -> ModelRecord | None:
        # Exact or nothing: the cache must still hold the very data the run was trained on.
        from kerasmyelin.data.shards import tenslice_file
        from kerasmyelin.io.atomic import sha256_file

        data = Path(info["data"])
        try:
            if sha256_file(tenslice_file(data)) != info["sha256"]:
                return None
            manifest = json.loads((data / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        size = (manifest.get("prep_config") or {}).get("image_size") if isinstance(manifest, dict) else None
        if size is None:
            return None
        return record_from_cache_manifest(manifest, int(size), None)

    # -- norms -----------------------------------------------------------------------------------
    def write_norms(self, model, report: dict) -> Path:
        """The normative model (``NormativeModel``) and its cross-validation report."""
        from kerasmyelin.norms.store import write_normative

        return write_normative(self.norms_file, model, report)

    def read_norms(self) -> tuple[dict, dict | None] | None:
        """(the normative model's dict, its report) from ``normative.json``; None when evaluate
        has not written it. A damaged file is an InputError naming it."""
        from kerasmyelin.norms.store import read_normative

        if not self.norms_file.is_file():
            return None
        model = read_normative(self.norms_file)
        report = json.loads(self.norms_file.read_text()).get("cross_validation")
        return model.to_dict(), report

    # -- models and predictions ------------------------------------------------------------------
    def fold_model_files(self) -> list[Path]:
        """The fold models there are, in fold order."""
        return [f for f in (self.model_file(k) for k in range(MAX_FOLDS)) if f.is_file()]

    def served_model_files(self) -> list[Path]:
        """What serving the whole run loads: ``full/model.keras``, else every fold model (their
        mean is served: a cross-validation ensemble)."""
        full = self.model_file(FULL)
        return [full] if full.is_file() else self.fold_model_files()

    def missing_predictions(self, folds: int) -> list[str]:
        return [self.fold(k).name for k in range(folds) if not self.predictions_file(k).exists()]

    def gather_predictions(self, folds: int) -> dict[str, np.ndarray] | None:
        """Out-of-fold predictions of every fold, concatenated; None while any fold is missing."""
        from kerasmyelin.io.predictions import read_predictions

        parts = []
        for k in range(folds):
            path = self.predictions_file(k)
            if not path.exists():
                return None
            parts.append(read_predictions(path))
        keys = parts[0].keys()
        return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _record_fields(record: ModelRecord) -> dict:
    return {k: v for k, v in record.to_json().items() if k not in ("format", "version")}


@dataclass(frozen=True)
class ModelSource:
    """What a ``--model`` argument names, resolved (nothing loaded yet).

    Attributes:
        files: the ``.keras`` files to load; several are served as their mean (the fold models
            of a run without ``full/``).
        name: a short label (the run, fold or file name).
        record: the model's record (preparation settings, trained ages, norms when the whole run
            is served); ``--prep``'s settings for a model from before records.
        record_from: where the record came from, for messages ("run.json", "model.keras", "--prep").
        run: the run folder when the whole run is served, else None.
    """

    files: tuple[Path, ...]
    name: str
    record: ModelRecord | None
    record_from: str
    run: RunFolder | None = None


def no_record_error(path) -> NoRecordError:
    return NoRecordError("this model carries no preparation settings (it was written by a kerasmyelin from "
                         "before models recorded them, or its run.json lost them), so it cannot be served as "
                         "it was trained. Give them: --prep CACHE (the ten-slice cache it was trained on), "
                         "--prep FILE.yaml (the settings), or --prep paper (the paper's preparation, "
                         "intensity_reference head)", path)


def resolve_model(path: str | os.PathLike, prep: dict | None = None, *,
                  require_record: bool = True) -> ModelSource:
    """A run folder, a fold folder or a ``.keras`` file -> what to load and how to serve it.

    A run folder serves ``full/model.keras``, else the mean of its fold models, with the run's
    record and norms. A fold folder or a model file serves that model, with the record stored
    inside it or, for a model in a run, the run's (without norms: they describe the whole run).

    Args:
        prep: PrepConfig fields given by hand (``--prep``; ``model_record.prep_from_argument``)
            for a model that carries no record. For one that does, they must agree with it.

    Raises:
        InputError: naming the path: nothing to load there, or a damaged record.
        NoRecordError (an InputError): a model with no record and no ``prep`` (with
            ``require_record=False`` its ``record`` is None instead, for the caller to check the
            model itself first).
    """
    from kerasmyelin.io.model_files import check_archive, read_embedded_record, verify

    p = Path(path).expanduser()
    run = None
    if p.is_file():
        if p.suffix != ".keras":
            raise InputError("not a .keras model file (give a run folder, a fold folder or a .keras file)", p)
        files, name = [p], p.parent.name + "/" + p.name
    elif p.is_dir():
        folder = RunFolder(p)
        if folder.is_run():
            files, name, run = folder.served_model_files(), p.name, folder
            if not files:
                raise InputError(f"no trained model here (looked for {FULL}/{MODEL_FILE} and fold-*/{MODEL_FILE}); "
                                 f"train one with 'kerasmyelin train --out {p}'", p)
        elif (p / MODEL_FILE).is_file():
            files, name = [p / MODEL_FILE], p.name
        else:
            raise InputError(f"no trained model here (looked for {MODEL_FILE} and {FULL}/{MODEL_FILE}); "
                             f"train one with 'kerasmyelin train --out {p}'", p)
    else:
        raise InputError("model not found (give a run folder, a fold folder or a .keras file)", p)
    record, where = None, ""
    if run is not None:
        record, where = run.record(), str(run.info_file)
    else:
        # The file's checksum and archive are checked before anything in it is read.
        verify(files[0])
        check_archive(files[0])
        text = read_embedded_record(files[0])
        if text is not None:
            record, where = ModelRecord.loads(text, files[0]), f"{files[0]} ({MODEL_FILE} record)"
        else:
            around = RunFolder.around(files[0].parent)
            if around is not None:
                record = around.record()
                record, where = (record.without_norms() if record else None), str(around.info_file)
    if record is None:
        if prep is None:
            if require_record:
                raise no_record_error(p)
            return ModelSource(tuple(files), name, None, "", run)
        size = _image_size(files[0])  # the network's input decides, whatever --prep's source says
        record = ModelRecord(prep_config=dict(prep, image_size=size), image_size=size)
        return ModelSource(tuple(files), name, record, "--prep", run)
    if prep is not None:
        given = dict(prep, image_size=record.image_size)
        if given != dict(record.prep_config, image_size=record.image_size):
            differ = sorted(k for k in given if given.get(k) != record.prep_config.get(k))
            raise InputError(f"--prep differs from the settings this model was trained with ({', '.join(differ)}; "
                             f"recorded in {where}); drop --prep: it is only for models that carry none", p)
    return ModelSource(tuple(files), name, record, where, run)


def _image_size(model_file: Path) -> int:
    """The input size a ``.keras`` file's config declares, read without building the model."""
    from kerasmyelin.io.model_files import check_archive

    config = check_archive(model_file)
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "InputLayer":
            shape = layer.get("config", {}).get("batch_shape") or layer.get("config", {}).get("batch_input_shape")
            if shape and len(shape) == 4 and shape[1]:
                return int(shape[1])
    raise InputError("cannot tell the model's image size from its config", model_file)
