"""Fine-tuning: a new run's networks start from a trained model's weights (``train.init_from``).

The source is anything ``--model`` accepts (``runs.resolve_model``): a run folder (its model
trained on every infant), a fold folder or a ``.keras`` file, loaded through the same checks as
any model kerasmyelin serves. Its networks are the paper networks inside it: the model itself, or
an ensemble's nested members. Each network of the new run starts from the source network of the
same name (an ensemble's ``young`` from ``young``), or from the source's only network (a simple
model can start every member). The architecture must match layer for layer: the weights are
copied by layer name, and a missing layer or a different shape is an error naming it, before
any training starts.

``train.freeze_branches`` then keeps the ten slice branches (two convolutions and the dense layer
of each slice, 97.5% of the paper network's weights) as they are and trains only the layers that combine them:
what a cohort of 5-40 infants can support.
"""

from __future__ import annotations

from pathlib import Path

from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.levels import INPUT_NAMES

# A paper network is recognised by its output layer and its first joint layer (models.myelin_cnn).
_NETWORK_LAYERS = ("age", "joint_dense1")


def _networks(model) -> dict:
    """name -> paper network found in ``model`` (itself, or its nested models, recursively)."""
    names = {layer.name for layer in model.layers}
    if all(n in names for n in _NETWORK_LAYERS):
        return {model.name: model}
    found = {}
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model (ensemble member, fold model, calibrated model)
            found.update(_networks(layer))
    return found


def load_init_source(source: str | Path, prep_config: dict | None = None):
    """The trained networks a run starts from: ``(name -> keras.Model, label)``.

    Args:
        prep_config: the preparation settings of the new run's cache (its ``ModelRecord``); the
            source must have been trained on slices prepared the same way (image size apart,
            which ``copy_weights`` checks).

    Raises:
        InputError: naming ``source``: nothing kerasmyelin trained there, a run without a single
            model to start from (only fold models), or a model without a paper network.
    """
    from kerasmyelin.io.model_files import load_keras_model
    from kerasmyelin.runs import CONFIG_FILE, FULL, MODEL_FILE, RunFolder, resolve_model

    path = Path(source).expanduser()
    if path.is_dir() and not RunFolder(path).is_run() and not (path / MODEL_FILE).is_file():
        raise InputError(f"not a kerasmyelin run (no {CONFIG_FILE}), fold folder or .keras file to start "
                         "training from (--init-from / train.init_from)", path)
    try:
        resolved = resolve_model(path, require_record=False)
    except InputError as exc:
        raise InputError(f"cannot start training from it (--init-from): {exc.problem}", exc.path) from None
    mine, theirs = dict(prep_config or {}), dict(resolved.record.prep_config) if resolved.record else {}
    mine.pop("image_size", None), theirs.pop("image_size", None)
    if mine and theirs and mine != theirs:
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ConfigError(f"--init-from {path}: that model was trained on slices prepared otherwise "
                          f"({', '.join(f'{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here' for k in differ)}; "
                          f"recorded in {resolved.record_from}); prepare this cache with its settings "
                          "(kerasmyelin prepare --intensity-reference ...)")
    if len(resolved.files) != 1:
        raise InputError(f"this run has no model trained on every infant ({FULL}/{MODEL_FILE}), only fold models; "
                         f"train it with 'kerasmyelin train --out {path} --fold full', or give one fold "
                         "folder to --init-from", path)
    try:
        model = load_keras_model(resolved.files[0])
    except InputError:
        raise  # already names the file and the problem
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise InputError(f"cannot be loaded to start training from ({type(exc).__name__}: {exc})",
                         resolved.files[0]) from None
    networks = _networks(model)
    if not networks:
        raise InputError("holds no kerasmyelin network (no layers named 'age' and 'joint_dense1')",
                         resolved.files[0])
    return networks, str(resolved.files[0])


def network_for(networks: dict, member: str, label: str):
    """The source network ``member`` starts from: the one of the same name, else the only one."""
    if member in networks:
        return networks[member]
    if len(networks) == 1:
        return next(iter(networks.values()))
    raise ConfigError(f"{label} holds the networks {', '.join(sorted(networks))} and none named {member!r}; "
                      "start a simple model from one member's fold folder, or an ensemble from a simple "
                      "model or an ensemble with the same member names")


def copy_weights(source, target, label: str) -> int:
    """Copy ``source``'s weights into ``target`` layer by layer (by name); returns how many
    weights were copied.

    Raises:
        ConfigError: another image size, or a layer missing or shaped otherwise in the source.
    """
    s_size, t_size = source.inputs[0].shape[1], target.inputs[0].shape[1]
    if s_size != t_size:
        raise ConfigError(f"--init-from {label}: that model was trained on {s_size}x{s_size} images and this "
                          f"run's are {t_size}x{t_size} (model.image_size); start from a model of this size")
    by_name = {layer.name: layer for layer in source.layers}
    pending = []
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = by_name.get(layer.name)
        if other is None:
            raise ConfigError(f"--init-from {label}: the architectures differ: that model has no layer "
                              f"{layer.name!r}; check model.* against its config.yaml")
        theirs = other.get_weights()
        shapes = [tuple(w.shape) for w in weights]
        if [tuple(w.shape) for w in theirs] != shapes:
            raise ConfigError(f"--init-from {label}: the architectures differ at layer {layer.name!r}: weights "
                              f"{[tuple(w.shape) for w in theirs]} there, {shapes} here; check model.* against "
                              "its config.yaml")
        pending.append((layer, theirs))
    for layer, theirs in pending:  # only once every layer is known to fit
        layer.set_weights(theirs)
    return sum(w.size for _, ws in pending for w in ws)


def check_freeze(train) -> None:
    """``train.freeze_branches`` needs ``train.init_from``: frozen random branches learn nothing."""
    if train.freeze_branches and not train.init_from:
        raise ConfigError("train.freeze_branches keeps trained branches as they are: it needs init_from "
                          "(kerasmyelin train --init-from RUN)")


def check_init_source(config, prep_config: dict | None) -> None:
    """Before a run folder is made: ``config.train.init_from`` can start each of ``config``'s
    networks (source found, same preparation, a network for every member, same architecture).

    Raises:
        InputError / ConfigError: naming the source and what does not fit.
    """
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn

    networks, label = load_init_source(config.train.init_from, prep_config)
    target = build_myelin_cnn(config.model)
    for member in config.member_configs():
        copy_weights(network_for(networks, member.name, label), target, label)


def freeze_branches(model) -> int:
    """Make the ten slice branches untrainable; returns how many weights stay trainable."""
    prefixes = tuple(f"{name}_" for name in INPUT_NAMES)
    for layer in model.layers:
        if layer.name.startswith(prefixes):
            layer.trainable = False
    return int(sum(w.numpy().size for w in model.trainable_weights))
