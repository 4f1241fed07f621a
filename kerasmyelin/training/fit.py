"""Train one network with the paper's protocol: Adam, squared error, a fixed number of epochs.

The training set repeats and ``fit`` runs ``steps_per_epoch`` batches per epoch (Keras 3.15 stalls
~4.5 s at the start of many epochs on a finite training dataset); the small validation set is
finite and evaluated once per epoch. Under a ``tf.distribute`` strategy (``--strategy mirrored``
or ``multiworker``) the same set-up feeds ``training.distributed.fit_distributed`` instead of
``model.fit``, with the same callbacks.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from kerasmyelin.data.cache import TenSliceSet
from kerasmyelin.data.pipeline import make_dataset, steps_per_epoch
from kerasmyelin.errors import TrainingError
from kerasmyelin.training.callbacks import (
    BACKUP_DIR,
    BEST_FILE,
    make_callbacks,
    read_backup_state,
    save_keras_atomic,
)
from kerasmyelin.training.init_from import copy_weights, freeze_branches
from kerasmyelin.training.objective import compile_for_training
from kerasmyelin.training.summaries import MonitorSet, network_hparams

FINAL_FILE = "final.keras"
log = logging.getLogger(__name__)


def load_trained(path: str | os.PathLike):
    """A ``.keras`` file written by kerasmyelin: its checksum and layer types checked, then
    loaded with ``safe_mode`` on (``io.model_files``)."""
    from kerasmyelin.io.model_files import load_keras_model

    return load_keras_model(path)


def train_network(model_config, train, data: TenSliceSet, train_idx, val_idx, folder: str | os.PathLike,
                  *, name: str = "myelin_cnn", title: str = "", progress: bool = True,
                  hparams: dict | None = None, strategy=None, init=None):
    """Train one network (or resume it) in ``folder`` and return the selected weights' model.

    Args:
        model_config: ``ModelConfig``.
        train: ``TrainConfig``.
        data: the ten-slice set.
        train_idx: positions of the training infants in ``data``.
        val_idx: positions of the validation infants (may be empty).
        folder: the network's run folder (checkpoints, history, curve, TensorBoard).
        name: the model's name.
        title: progress bar and plot title.
        progress: show a progress bar.
        hparams: what TensorBoard's HParams dashboard shows of this network besides its model
            and training settings (experiment, fold, member, ...; ``summaries.network_hparams``).
        strategy: a ``tf.distribute.Strategy`` from ``training.strategy.make_strategy`` to train
            under (``training.distributed``), or None for ``model.fit`` in this process.
        init: ``(keras.Model, label)``: a trained network whose weights this one starts from
            (``training.init_from``; ``train.freeze_branches`` then freezes its slice branches),
            or None for random initialisation. A resumed network continues from its backup.

    Returns:
        ``keras.Model`` with the final or best weights (``train.select``). A folder that already
        holds ``final.keras`` is not trained again. A multi-worker task other than the chief
        writes nothing into ``folder`` and returns its model as trained (the final weights,
        which equal the chief's).
    """
    import keras

    from kerasmyelin.levels import contrast_input_names
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn
    from kerasmyelin.training.distributed import distribute_dataset, fit_distributed
    from kerasmyelin.training.strategy import is_writer, scope

    def feed(make, training: bool):
        """The stream ``make(batch_size, **shard)`` builds: as it is for fit, split across the
        replicas under a strategy."""
        if strategy is None:
            return make(train.batch_size)
        return distribute_dataset(strategy, data, make, train.batch_size, training=training)

    folder = Path(folder)
    final = folder / FINAL_FILE
    names = contrast_input_names(model_config.contrasts)  # only the inputs the network takes
    if not final.exists():
        train_idx = np.asarray(train_idx, dtype=np.int64)
        val_idx = np.asarray(val_idx, dtype=np.int64)
        if train_idx.size == 0:
            raise TrainingError(f"{title or name}: no training infants in this network's age range ({folder})")
        writer = is_writer(strategy)
        if writer:
            folder.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(train.seed)
        with scope(strategy):
            model = build_myelin_cnn(model_config, name=name)
            if init is not None:
                copied = copy_weights(init[0], model, init[1])
                log.info("%s starts from %s (%d weights)", title or name, init[1], copied)
                if train.freeze_branches:
                    # Before compiling: the optimizer tracks only the weights that train.
                    trainable = freeze_branches(model)
                    log.info("%s: slice branches frozen, %d weights train", title or name, trainable)
            compile_for_training(model, train)
            if strategy is not None:
                # Now, under the scope: built later by a backup's restore, outside it, Adam's
                # moments would not be mirrored.
                model.optimizer.build(model.trainable_variables)
        steps = steps_per_epoch(len(train_idx), train.batch_size)
        if val_idx.size:
            # finite: Keras evaluates it once per epoch (a repeated one with validation_steps
            # stalled ~4.5 s on many epochs)
            validation = feed(lambda b: make_dataset(data, val_idx, b, training=False,
                                                                 input_names=names), training=False)
        elif train.select == "best" or train.early_stopping_patience:
            raise TrainingError(f"{title or name}: select=best and early stopping need validation infants, "
                                f"and none fall in this network's age range ({folder})")
        else:
            validation = None
        # A resumed run picks the training stream up where its backup left it, so the result
        # equals an uninterrupted run's bit for bit (tests/test_kill_resume.py).
        resumed = read_backup_state(folder / BACKUP_DIR)
        dataset = feed(lambda b, **shard: make_dataset(
            data, train_idx, b, training=True, seed=train.seed, augment=train.augment,
            intensity_curves=train.intensity_curves, input_names=names,
            skip_batches=steps * resumed["epoch"] if resumed else 0, **shard), training=True)
        # TensorBoard shows the validation infants, or the training infants where there are none.
        monitor = (MonitorSet.from_data(data, val_idx, "validation") if val_idx.size
                   else MonitorSet.from_data(data, train_idx, "training"))
        values = network_hparams(model_config, train, {"network": name, **(hparams or {}),
                                                       "infants.train": int(train_idx.size),
                                                       "infants.validation": int(val_idx.size)})
        callbacks = make_callbacks(folder, train, validation=bool(val_idx.size), title=title or name,
                                   progress=progress, monitor=monitor, hparams=values, writer=writer)
        log.info("training %s on %d infants (%d validation), %d epochs", title or name, len(train_idx),
                 val_idx.size, train.epochs)
        if strategy is None:
            history = model.fit(dataset, epochs=train.epochs, steps_per_epoch=steps, callbacks=callbacks,
                                verbose=0, shuffle=False, validation_data=validation)  # the dataset shuffles itself
        else:
            history = fit_distributed(model, strategy, dataset, epochs=train.epochs, steps=steps,
                                      global_batch=train.batch_size, callbacks=callbacks, validation_data=validation)
        losses = history.history.get("loss", [])
        if losses and not np.isfinite(losses[-1]):
            raise TrainingError(f"{title or name}: the loss became {losses[-1]}; training stopped "
                                f"(see {folder / 'history.csv'}; a rerun resumes from the last backup)")
        if not writer:
            return model  # the chief writes final.keras and removes the backup
        save_keras_atomic(model, final)
        shutil.rmtree(folder / BACKUP_DIR, ignore_errors=True)
    chosen = folder / BEST_FILE if train.select == "best" else final
    if not chosen.exists():
        raise TrainingError(f"{chosen}: missing (select=best, but no epoch had a finite validation loss, or "
                            f"the file was removed); delete {folder} to train this network again")
    try:
        return load_trained(chosen)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise TrainingError(f"{chosen}: cannot be loaded ({type(exc).__name__}: {exc}); "
                            f"delete {folder} to train this network again") from None

