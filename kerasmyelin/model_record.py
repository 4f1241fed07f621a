"""A trained model's record: everything serving needs to use it as it was trained, wherever it goes.

A network only gives the right age for slices prepared the way its training slices were (the
crop, the intensity scaling: ``data.prepare.PrepConfig``), at its image size, in its input order;
its grades need the normative model fitted on its run's out-of-fold estimates. The record holds
all of that, and travels with the model:

- in a run folder: ``run.json`` (written when the run is made, from its ten-slice cache) and
  ``normative.json`` (written by ``kerasmyelin evaluate``; see ``runs.RunFolder``);
- inside every ``model.keras`` kerasmyelin writes, as the archive member ``kerasmyelin.json``
  (Keras ignores it), so a model file copied on its own still carries it;
- in every export: ``assets.extra/kerasmyelin.json`` in a SavedModel (TensorFlow Serving ignores
  that folder), ``metadata_props["kerasmyelin"]`` in an ONNX file, the member above in a ``.keras``.

Fields (JSON): ``format`` ("kerasmyelin-model-record"), ``version``, ``prep_config`` (the
PrepConfig fields), ``image_size``, ``inputs`` (the input names, in order: the ten, or a single-contrast network's
five), ``contrasts`` (the contrasts those inputs take, in ``levels.CONTRASTS`` order),
``trained_age_range_months`` ([min, max] of the training infants), ``normative`` (the normative
model, ``NormativeModel.to_dict``, or null when none was fitted: estimates then come without
interval or grade) and ``norms_report`` (its cross-validation summary, or null), ``calibration``
(a site calibration ``kerasmyelin calibrate`` put inside the graph: kind, intercept, slope, the
scans it was fitted on and its leave-one-out error; null when none) and ``experiment``. Besides a
site calibration, the only correction of the output is the normative model's gap correction,
which travels inside ``normative``.

A model from a kerasmyelin before records is not served with guessed settings: ``resolve_model``
(``runs``) refuses it unless the settings are given (``--prep``, read by ``prep_from_argument``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kerasmyelin.data.prepare import PrepConfig
from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.io.model_files import RECORD_MEMBER
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, check_contrasts, contrast_input_names

FORMAT = "kerasmyelin-model-record"
VERSION = 1
# The archive member inside a .keras file, the file in a SavedModel's assets.extra/ and the
# ONNX metadata_props key: one name everywhere.
RECORD_NAME = RECORD_MEMBER
ONNX_KEY = "kerasmyelin"
PREP_PAPER = "paper"
_PREP_FIELDS = tuple(f.name for f in fields(PrepConfig))


@dataclass(frozen=True)
class ModelRecord:
    """What serving needs besides the weights (see the module docstring).

    Attributes:
        prep_config: PrepConfig fields the training slices were prepared with.
        image_size: side of the square input images.
        inputs: the input names, in the model's order: ``levels.contrast_input_names(contrasts)``.
        contrasts: the contrasts the inputs take: (T1w, T2w), or one of them.
        trained_age_range_months: (min, max) corrected age of the training infants; None when
            the settings were given by hand (``--prep``) for an old model.
        normative: ``NormativeModel.to_dict()`` of the run's norms, or None.
        norms_report: their cross-validation summary, or None.
        calibration: the site calibration inside the graph (``norms.calibration.SiteCalibration.
            summary()``: kind, intercept, slope, n, raw and leave-one-out MAE), or None.
        experiment: the experiment's name ("" when unknown).
    """

    prep_config: dict
    image_size: int
    inputs: tuple[str, ...] = INPUT_NAMES
    contrasts: tuple[str, ...] = CONTRASTS
    trained_age_range_months: tuple[float, float] | None = None
    normative: dict | None = None
    norms_report: dict | None = None
    calibration: dict | None = None
    experiment: str = ""

    def __post_init__(self):
        unknown = sorted(set(self.prep_config) - set(_PREP_FIELDS))
        if unknown:
            raise ValueError(f"prep_config has unknown setting(s) {', '.join(unknown)}")
        if int(self.prep_config.get("image_size", self.image_size)) != int(self.image_size):
            raise ValueError(f"prep_config.image_size {self.prep_config['image_size']} differs from image_size "
                             f"{self.image_size}")
        contrasts = check_contrasts(self.contrasts)
        if tuple(self.inputs) != contrast_input_names(contrasts):
            raise ValueError(f"inputs must be the {list(contrasts)} ones, {list(contrast_input_names(contrasts))}, "
                             f"got {list(self.inputs)}")
        object.__setattr__(self, "contrasts", contrasts)
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def prep(self) -> PrepConfig:
        """The preparation to serve with (PrepConfig's checks run here)."""
        return PrepConfig(**dict(self.prep_config, image_size=int(self.image_size)))

    def with_norms(self, normative: dict | None, report: dict | None) -> ModelRecord:
        return ModelRecord(**{**self._fields(), "normative": normative, "norms_report": report})

    def without_norms(self) -> ModelRecord:
        return self.with_norms(None, None)

    def to_json(self) -> dict:
        d = self._fields()
        d["inputs"], d["contrasts"] = list(self.inputs), list(self.contrasts)
        if self.trained_age_range_months is not None:
            d["trained_age_range_months"] = [float(v) for v in self.trained_age_range_months]
        return {"format": FORMAT, "version": VERSION, **d}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"

    def _fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data, source: str | os.PathLike | None = None) -> ModelRecord:
        """The record ``to_json`` wrote; InputError naming ``source`` when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"not a kerasmyelin model record (format {_get(data, 'format')!r})", source)
        if data.get("version") != VERSION:
            raise InputError(f"model record version {data.get('version')!r}; this kerasmyelin reads version {VERSION}: "
                             "upgrade kerasmyelin", source)
        known = {f.name for f in fields(cls)}
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InputError(f"model record: unknown key(s) {', '.join(unknown)}", source)
        try:
            ages = body.get("trained_age_range_months")
            contrasts = tuple(body.get("contrasts", CONTRASTS))
            return cls(prep_config=dict(body["prep_config"]), image_size=int(body["image_size"]),
                       inputs=tuple(body.get("inputs", contrast_input_names(contrasts))), contrasts=contrasts,
                       trained_age_range_months=None if ages is None else (float(ages[0]), float(ages[1])),
                       normative=body.get("normative"), norms_report=body.get("norms_report"),
                       calibration=body.get("calibration"), experiment=str(body.get("experiment", "")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"damaged model record ({type(exc).__name__}: {exc})", source) from None

    @classmethod
    def loads(cls, text: str | bytes, source=None) -> ModelRecord:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"model record is not JSON ({exc})", source) from None
        return cls.from_json(data, source)


def _get(data, key):
    return data.get(key) if isinstance(data, dict) else None


def record_from_cache_manifest(manifest: dict, image_size: int, ages, experiment: str = "",
                               contrasts=CONTRASTS) -> ModelRecord | None:
    """The record of a network over ``contrasts`` trained on a ten-slice cache with this
    ``manifest``; None when the manifest predates ``prep_config`` (a cache kerasmyelin wrote
    before it was recorded)."""
    prep = manifest.get("prep_config")
    if not isinstance(prep, dict):
        return None
    known = {k: v for k, v in prep.items() if k in _PREP_FIELDS}
    return ModelRecord(prep_config=dict(known, image_size=int(image_size)), image_size=int(image_size),
                       inputs=contrast_input_names(contrasts), contrasts=tuple(contrasts),
                       trained_age_range_months=ages, experiment=experiment)


def prep_from_argument(text: str) -> dict:
    """PrepConfig fields from ``--prep``: ``paper`` (the paper's preparation, PrepConfig's
    defaults), a ten-slice cache folder or its ``manifest.json`` (the settings it was prepared
    with: give the cache the model was trained on), or a YAML/JSON file of PrepConfig settings
    (strict: an unknown key is an error).

    Raises:
        ConfigError / InputError: naming the argument or file and the problem.
    """
    from kerasmyelin.config import load_config

    if text == PREP_PAPER:
        return asdict(PrepConfig())
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "manifest.json"
        if not path.is_file():
            raise InputError("--prep: a folder must be a ten-slice cache (no manifest.json here)", path.parent)
    if not path.is_file():
        raise ConfigError(f"--prep {text!r}: expected 'paper', a ten-slice cache folder, or a YAML/JSON file of "
                          f"preparation settings ({', '.join(_PREP_FIELDS)})")
    if path.name == "manifest.json":
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--prep: cannot read the cache manifest ({exc})", path) from None
        prep = manifest.get("prep_config") if isinstance(manifest, dict) else None
        if not isinstance(prep, dict):
            raise InputError("--prep: this cache's manifest records no prep_config (it predates them); give a YAML "
                             "file of the settings it was prepared with, or 'paper'", path)
        return {k: v for k, v in prep.items() if k in _PREP_FIELDS}
    return asdict(load_config(PrepConfig, path))
