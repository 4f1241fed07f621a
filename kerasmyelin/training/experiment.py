"""An experiment's run folder: resolved config, data fingerprint, splits, and one folder per fold.

```
RUN/
  config.yaml      the resolved ExperimentConfig (defaults + YAML + overrides)
  run.json         which ten-slice cache (path and sha256) the run uses, and what serving needs
                   from it: its preparation settings, image size, inputs and trained ages
  splits.json      the cross-validation folds (by participant id), each with a validation share
  fold-0/ ...      one per fold: a folder per network (simple, or the ensemble's members) with
                   checkpoints, history.csv, learning_curve.png and tensorboard/; model.keras (the
                   model evaluated: the network, or the ensemble as one graph); predictions.csv
                   (the fold's test infants)
  full/            the same, trained on every infant: the model to deploy
```

A fold whose ``predictions.csv`` exists is complete; rerunning the same command skips it, and a
network killed mid-training resumes from its backup. Folds are independent jobs
(``kerasmyelin train --fold K``) gathered by ``kerasmyelin evaluate``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from kerasmyelin.config import to_dict
from kerasmyelin.data.cache import TenSliceSet
from kerasmyelin.data.shards import open_tenslice, tenslice_file
from kerasmyelin.errors import ConfigError, InputError, OutputError
from kerasmyelin.io.atomic import sha256_file, write_bytes_atomic, write_text_atomic
from kerasmyelin.io.output_dir import open_reopened
from kerasmyelin.models.graph import graph_forward
from kerasmyelin.training.config import ExperimentConfig, load_experiment
from kerasmyelin.training.splits import holdout, load_splits, make_folds, save_splits

CONFIG_FILE = "config.yaml"
RUN_INFO = "run.json"
SPLITS_FILE = "splits.json"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "predictions.csv"
FULL = "full"


def fold_dir(run: Path, fold: int | str) -> Path:
    return run / (FULL if fold == FULL else f"fold-{int(fold)}")


def open_run(out: str | os.PathLike, config: ExperimentConfig | None, data_dir: str | os.PathLike | None):
    """Create a run folder, or reopen one and check it matches.

    Args:
        out: the run folder.
        config: the experiment; None to use the one stored in ``out``.
        data_dir: the ten-slice cache folder; None to use the one stored in ``out``.

    Returns:
        (run folder, config, TenSliceSet, splits).

    Raises:
        ConfigError / InputError / OutputError: a mismatch with what the folder already holds.
    """
    import yaml

    run = Path(out).expanduser().absolute()
    if run.exists() and not run.is_dir():
        raise OutputError(f"{run}: exists and is not a folder")
    stored_config = run / CONFIG_FILE
    stored_info = run / RUN_INFO
    if stored_config.exists():
        stored = load_experiment(stored_config)
        if config is not None and to_dict(config) != to_dict(stored):
            raise ConfigError(f"{run}: this run folder was made with a different configuration "
                              f"(see {stored_config}); choose a new --out or delete that folder")
        config = stored
    elif config is None:
        raise InputError(f"not a kerasmyelin run folder (no {CONFIG_FILE}); give --config and --data", run)
    if stored_info.exists():
        info = _read_run_info(run)
        if data_dir is None:
            data_dir = info["data"]
    elif data_dir is None:
        raise InputError(f"no {RUN_INFO} here; give --data", run)
    data_dir = Path(data_dir).expanduser().absolute()
    data = open_tenslice(data_dir)
    # A sharded set's index holds every shard's sha256: its digest fingerprints the whole set.
    digest = sha256_file(tenslice_file(data_dir))
    if stored_info.exists() and info["sha256"] != digest:
        raise InputError(f"the ten-slice cache differs from the one this run was trained on "
                         f"({run / RUN_INFO}); use a new --out", tenslice_file(data_dir))
    size = config.model.image_size
    if data.image_shape != (size, size):
        raise InputError(f"images are {data.image_shape[0]}x{data.image_shape[1]} but model.image_size is {size}; "
                         f"prepare the cache at that size or set model.image_size", tenslice_file(data_dir))
    # Before anything is written: a run never goes in, above or over its data.
    open_reopened(run, "run", inputs=[("--data", data_dir)], legacy=lambda folder: (folder / CONFIG_FILE).is_file())
    if not stored_config.exists():
        write_text_atomic(stored_config, yaml.safe_dump(to_dict(config), sort_keys=False))
    serving = serving_record(data)
    if not stored_info.exists():
        write_text_atomic(stored_info, json.dumps({"data": str(data_dir), "sha256": digest,
                                                   "written_by": "kerasmyelin", **serving}, indent=1) + "\n")
    elif "prep_config" not in info and serving.get("prep_config") is not None:
        # A run from before run.json carried them: recorded now, from the very cache it was trained on.
        write_text_atomic(stored_info, json.dumps(dict(info, **serving), indent=1) + "\n")
    splits_path = run / SPLITS_FILE
    if not splits_path.exists():
        folds = make_folds(data.participant_id, data.age_months, config.cv.folds, config.cv.seed,
                           validation_fraction=config.train.validation_fraction)
        save_splits(splits_path, folds, config.cv.seed)
    splits = load_splits(splits_path)
    known = set(data.participant_id.tolist())
    for i, fold in enumerate(splits):
        unknown = (set(fold["train"]) | set(fold["test"]) | set(fold.get("validation", []))) - known
        if unknown:
            raise InputError(f"fold {i} names infants not in the data: {sorted(unknown)[:3]}", splits_path)
    return run, config, data, splits


def serving_record(data: TenSliceSet) -> dict:
    """What a run must carry so that it is served as it was trained, wherever it is copied: the
    cache's preparation settings, the image size, the ten inputs and the trained ages."""
    return {"prep_config": data.manifest.get("prep_config"),
            "image_size": int(data.image_shape[0]),
            "inputs": list(data.manifest.get("inputs", [])),
            "trained_age_range_months": [round(float(np.min(data.age_months)), 3),
                                         round(float(np.max(data.age_months)), 3)]}


def _read_run_info(run: Path) -> dict:
    """``run.json``, checked: the cache folder and its sha256."""
    path = Path(run) / RUN_INFO
    try:
        info = json.loads(path.read_text())
        if not (isinstance(info, dict) and isinstance(info["data"], str) and isinstance(info["sha256"], str)):
            raise TypeError("data and sha256 must be text")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"damaged run description ({exc}); delete the run folder or restore the file", path) from None
    return info


def stored_data_dir(run: Path) -> Path:
    """The ten-slice cache folder a run was made with."""
    return Path(_read_run_info(run)["data"])


def _positions(data: TenSliceSet, ids) -> np.ndarray:
    wanted = set(ids)
    return np.flatnonzero([p in wanted for p in data.participant_id.tolist()])


def predict_ages(model, data: TenSliceSet, indices, batch_size: int = 64) -> np.ndarray:
    """(N,) estimated ages in months of the infants at ``indices``."""
    from kerasmyelin.data.pipeline import model_inputs

    idx = np.asarray(indices, dtype=np.int64)
    forward = graph_forward(model)
    out = [np.zeros((0, 1))]
    for start in range(0, idx.size, batch_size):
        batch = idx[start:start + batch_size]
        out.append(np.asarray(forward(model_inputs(data.images_at(batch)))))
    return np.concatenate(out).astype(np.float64).reshape(-1)


def run_fold(run: Path, config: ExperimentConfig, data: TenSliceSet, splits, fold: int | str,
             progress: bool = True, *, members=None, train: bool = True, strategy=None) -> Path:
    """Train the fold's network(s), save the evaluated model, and predict the fold's test infants.

    Each network trains under a lock (``io.job_lock``), so folds and ensemble members can run
    as independent jobs on one shared run folder; the fold is assembled (``model.keras``,
    ``predictions.csv``) by whichever call finds all its networks finished.

    Args:
        fold: 0-based fold index, or "full" (every infant; no test infants).
        members: names of the networks to train (``config.member_configs()``); None: all.
            Networks not named are used if already finished, else the fold waits for them.
        train: False to train nothing, only assemble a fold whose networks are finished.
        strategy: ``tf.distribute`` strategy to train under (``training.strategy``), or None for
            ``model.fit``. A multi-worker task other than the chief trains alongside the chief
            and writes nothing: the chief holds the lock and assembles the fold.

    Returns:
        The fold folder (complete or not: see ``fold_missing``).
    """
    from kerasmyelin.io.job_lock import job_lock
    from kerasmyelin.models.ensemble import build_ensemble, combine
    from kerasmyelin.training.callbacks import save_keras_atomic
    from kerasmyelin.training.fit import train_network
    from kerasmyelin.training.strategy import is_writer

    folder = fold_dir(run, fold)
    if fold == FULL:
        # With the final weights selected the validation share only draws curves: the model to
        # deploy keeps every infant unless best-epoch selection or early stopping needs one.
        t = config.train
        fraction = t.validation_fraction if (t.select == "best" or t.early_stopping_patience) else 0.0
        split = holdout(data.participant_id, data.age_months, fraction, config.cv.seed)
        if is_writer(strategy):
            folder.mkdir(parents=True, exist_ok=True)
            save_splits(folder / SPLITS_FILE, [split], config.cv.seed)
        label = "all infants"
    else:
        if not 0 <= int(fold) < len(splits):
            raise ConfigError(f"fold {fold} does not exist; this run has folds 0-{len(splits) - 1}")
        split = splits[int(fold)]
        label = f"fold {int(fold)} of 0-{len(splits) - 1}"
    done = folder / (PREDICTIONS_FILE if fold != FULL else MODEL_FILE)
    if done.exists():
        return folder
    train_pos = _positions(data, split["train"])
    val_pos = _positions(data, split.get("validation", []))
    test_pos = _positions(data, split["test"])
    wanted = member_names(config, members) if train else []
    networks = []
    for member in config.member_configs():
        if member.name not in wanted and member.name in fold_missing(run, config, fold):
            continue  # another job trains it; the last one to finish assembles the fold
        keep_train = member.select(train_pos, data.age_months)
        keep_val = member.select(val_pos, data.age_months)
        title = f"{config.name} {member.name} ({label})"
        with job_lock(folder / member.name, f"training {title}") if is_writer(strategy) else nullcontext():
            model = train_network(config.model, config.train, data, keep_train, keep_val, folder / member.name,
                                  name=member.name, title=title, progress=progress,
                                  hparams=_network_hparams(run, config, member, fold), strategy=strategy)
        networks.append((member.name, model))
    if not is_writer(strategy) or len(networks) < len(config.member_configs()):
        return folder
    if config.is_ensemble:
        evaluated = build_ensemble(networks, config.ensemble.rule, config.ensemble.blend_months,
                                   name=config.name)
    else:
        evaluated = networks[0][1]
    if test_pos.size:
        columns = {"participant_id": data.participant_id[test_pos].tolist(),
                   "age_months": data.age_months[test_pos].astype(np.float64)}
        columns["predicted_months"] = predict_ages(evaluated, data, test_pos)
        if config.is_ensemble:
            estimates = [predict_ages(m, data, test_pos) for _, m in networks]
            for (name, _), est in zip(networks, estimates):
                columns[f"{name}_months"] = est
            for rule in ("average", "gate"):
                combined = combine(estimates[0][:, None], estimates[1][:, None], rule, config.ensemble.blend_months)
                columns[f"{rule}_months"] = np.asarray(combined, dtype=np.float64).reshape(-1)
    save_keras_atomic(evaluated, folder / MODEL_FILE)
    if test_pos.size:
        write_predictions(folder / PREDICTIONS_FILE, columns)
    return folder


def member_names(config: ExperimentConfig, members=None) -> list[str]:
    """The networks ``members`` names (all of ``config``'s when None), checked."""
    names = [m.name for m in config.member_configs()]
    if members is None:
        return names
    unknown = [m for m in members if m not in names]
    if unknown:
        raise ConfigError(f"{config.name} has no network {unknown[0]!r}; its networks are {', '.join(names)}")
    return list(members)


def fold_missing(run: Path, config: ExperimentConfig, fold: int | str) -> list[str]:
    """Names of the fold's networks that have not finished training."""
    from kerasmyelin.training.fit import FINAL_FILE

    folder = fold_dir(run, fold)
    return [m.name for m in config.member_configs() if not (folder / m.name / FINAL_FILE).exists()]


def _network_hparams(run: Path, config: ExperimentConfig, member, fold) -> dict:
    """What TensorBoard's HParams dashboard shows of a network besides its model and training
    settings: enough to tell apart the networks of several experiments under one logdir."""
    lo, hi = member.min_age_months, member.max_age_months
    ages = ("all" if lo is None and hi is None else f"up to {hi:g} months" if lo is None
            else f"from {lo:g} months" if hi is None else f"{lo:g} to {hi:g} months")
    return {"experiment": config.name, "fold": str(fold), "ages": ages,
            "ensemble.rule": config.ensemble.rule if config.is_ensemble else "none",
            "cv.folds": config.cv.folds, "cv.seed": config.cv.seed,
            "data.sha256": _read_run_info(run)["sha256"][:12]}


def write_predictions(path: Path, columns: dict[str, list]) -> Path:
    """A CSV with one row per infant (ages in months, 4 decimals), written atomically."""
    names = list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*(columns[n] for n in names)):
        writer.writerow([f"{v:.4f}" if isinstance(v, (float, np.floating)) else v for v in row])
    return write_bytes_atomic(path, buf.getvalue().encode())


def looks_like_predictions(path: Path) -> bool:
    """Whether ``path`` starts like a predictions table kerasmyelin writes (``--overwrite`` may replace it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).split(b"\n", 1)[0]
    except OSError:
        return False
    return head.startswith(b"participant_id,") and b"predicted_months" in head


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """Columns of a predictions CSV: participant_id as str, everything else as float."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read predictions ({exc.strerror or exc})", path) from None
    if not rows or "participant_id" not in rows[0]:
        raise InputError("not a predictions file (no participant_id column or no rows)", path)
    out = {"participant_id": np.array([r["participant_id"] for r in rows])}
    for key in rows[0]:
        if key != "participant_id":
            try:
                out[key] = np.array([float(r[key]) for r in rows])
            except ValueError:
                raise InputError(f"column {key} holds a non-number", path) from None
    return out


def gather_predictions(run: Path, folds: int) -> dict[str, np.ndarray] | None:
    """Out-of-fold predictions of every fold, concatenated; None while any fold is missing."""
    parts = []
    for k in range(folds):
        path = fold_dir(run, k) / PREDICTIONS_FILE
        if not path.exists():
            return None
        parts.append(read_predictions(path))
    keys = parts[0].keys()
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}
