"""An experiment's run: train its folds into a run folder (layout: ``runs.RunFolder``).

A fold whose ``predictions.csv`` exists is complete; rerunning the same command skips it, and a
network killed mid-training resumes from its backup. Folds are independent jobs
(``kerasmyelin train --fold K``) gathered by ``kerasmyelin evaluate``. Every ``model.keras`` a
fold writes carries the run's record (``model_record``) inside it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from kerasmyelin.config import to_dict
from kerasmyelin.data.cache import TenSliceSet
from kerasmyelin.data.shards import open_tenslice, tenslice_file
from kerasmyelin.errors import ConfigError, InputError, OutputError
from kerasmyelin.io.atomic import sha256_file, write_text_atomic
from kerasmyelin.io.output_dir import open_reopened
from kerasmyelin.io.predictions import write_predictions
from kerasmyelin.levels import CONTRASTS
from kerasmyelin.model_record import ModelRecord, record_from_cache_manifest
from kerasmyelin.models.graph import graph_forward, model_input_names
from kerasmyelin.runs import CONFIG_FILE, FULL, RUN_INFO, SPLITS_FILE, RunFolder
from kerasmyelin.training.config import ExperimentConfig, load_experiment
from kerasmyelin.training.splits import holdout, load_splits, make_folds, save_splits

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

    folder = RunFolder(out)
    run = folder.path
    if run.exists() and not run.is_dir():
        raise OutputError(f"{run}: exists and is not a folder")
    stored_config, stored_info = folder.config_file, folder.info_file
    if stored_config.exists():
        stored = load_experiment(stored_config)
        if config is not None and to_dict(config) != to_dict(stored):
            raise ConfigError(f"{run}: this run folder was made with a different configuration "
                              f"(see {stored_config}); choose a new --out or delete that folder")
        config = stored
    elif config is None:
        raise InputError(f"not a kerasmyelin run folder (no {CONFIG_FILE}); give --config and --data", run)
    if stored_info.exists():
        info = folder.read_info()
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
                         f"({stored_info}); use a new --out", tenslice_file(data_dir))
    size = config.model.image_size
    if data.image_shape != (size, size):
        raise InputError(f"images are {data.image_shape[0]}x{data.image_shape[1]} but model.image_size is {size}; "
                         f"prepare the cache at that size or set model.image_size", tenslice_file(data_dir))
    # Before anything is written: a run never goes in, above or over its data.
    open_reopened(run, "run", inputs=[("--data", data_dir)], legacy=lambda folder: (folder / CONFIG_FILE).is_file())
    if not stored_config.exists():
        write_text_atomic(stored_config, yaml.safe_dump(to_dict(config), sort_keys=False))
    record = serving_record(data, config.name, config.model.contrasts)
    if not stored_info.exists():
        folder.write_info(data_dir, digest, record)
    elif "prep_config" not in info and record is not None:
        # A run from before run.json carried a record: recorded now, from the very cache it was trained on.
        folder.write_info(data_dir, digest, record)
    splits_path = folder.splits_file
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


def serving_record(data: TenSliceSet, experiment: str = "", contrasts=CONTRASTS) -> ModelRecord | None:
    """What a run must carry so that it is served as it was trained, wherever it is copied: the
    cache's preparation settings, the image size, the contrasts and inputs its networks take
    (``model.contrasts``) and the trained ages. None for a cache from before manifests recorded
    their preparation."""
    ages = (round(float(np.min(data.age_months)), 3), round(float(np.max(data.age_months)), 3))
    return record_from_cache_manifest(data.manifest, int(data.image_shape[0]), ages, experiment, contrasts)


def _positions(data: TenSliceSet, ids) -> np.ndarray:
    wanted = set(ids)
    return np.flatnonzero([p in wanted for p in data.participant_id.tolist()])


def predict_ages(model, data: TenSliceSet, indices, batch_size: int = 64) -> np.ndarray:
    """(N,) estimated ages in months of the infants at ``indices``, by ``model`` fed only the
    images of its own inputs."""
    from kerasmyelin.data.pipeline import model_inputs

    idx = np.asarray(indices, dtype=np.int64)
    forward = graph_forward(model)
    names = model_input_names(model)  # the ten, or a single-contrast network's five
    out = [np.zeros((0, 1))]
    for start in range(0, idx.size, batch_size):
        batch = idx[start:start + batch_size]
        out.append(np.asarray(forward(model_inputs(data.images_at(batch), names))))
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

    layout = RunFolder(run)
    folder = layout.fold(fold)
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
    done = layout.predictions_file(fold) if fold != FULL else layout.model_file(fold)
    if done.exists():
        return folder
    train_pos = _positions(data, split["train"])
    val_pos = _positions(data, split.get("validation", []))
    test_pos = _positions(data, split["test"])
    wanted = member_names(config, members) if train else []
    missing = fold_missing(run, config, fold)
    inits = {}
    from kerasmyelin.training.init_from import check_freeze

    check_freeze(config.train)
    if config.train.init_from and any(m in missing for m in wanted):
        from kerasmyelin.training.init_from import load_init_source, network_for

        # Every network's source is found before any of them trains.
        own = layout.record()
        sources, source_label = load_init_source(config.train.init_from, own.prep_config if own else None)
        inits = {m: (network_for(sources, m, source_label), source_label) for m in wanted if m in missing}
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
                                  hparams=_network_hparams(run, config, member, fold), strategy=strategy,
                                  init=inits.get(member.name))
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
    record = layout.record()
    save_keras_atomic(evaluated, layout.model_file(fold), record=record.without_norms().dumps() if record else None)
    if test_pos.size:
        write_predictions(layout.predictions_file(fold), columns)
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

    folder = RunFolder(run).fold(fold)
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
            "data.sha256": RunFolder(run).read_info()["sha256"][:12]}
