"""The one callback factory for training runs, and the few callbacks Keras lacks.

One role per checkpoint (nnU-Net's convention): ``backup/`` to resume a killed run,
``best.keras`` (lowest validation loss so far, kept across restarts; ``best.json`` gives its
0-based epoch as in ``history.csv``) and ``final.keras``
(written by ``fit.train_network`` when training ends). Beside them: ``history.csv`` (one row per
epoch), ``learning_curve.png`` (cost, training and validation error, like Neural Network
Console's plot) and ``tensorboard/`` (what it holds: ``training.summaries``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

from kerasmyelin.errors import TrainingError
from kerasmyelin.io.atomic import write_text_atomic

BACKUP_DIR = "backup"
BACKUP_STATE = "training_metadata.json"  # Keras' name: backups written before this format still resume
LEGACY_BACKUP_WEIGHTS = "latest.weights.h5"  # keras.callbacks.BackupAndRestore's file
BEST_FILE = "best.keras"
BEST_INFO = "best.json"
HISTORY_FILE = "history.csv"
CURVE_FILE = "learning_curve.png"
TENSORBOARD_DIR = "tensorboard"


def save_keras_atomic(model, path: str | os.PathLike, record: str | None = None) -> Path:
    """``model.save`` to a temporary sibling, then rename: a crash never leaves half a file. The
    file's sha256 goes into its folder's ``SHA256SUMS``, which every load checks.

    ``record``: the model's record (``ModelRecord.dumps()``), stored inside the archive."""
    from kerasmyelin.io.model_files import embed_record, record as record_checksum

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        if record is not None:
            embed_record(tmp, record)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    record_checksum(path)
    return path


def read_backup_state(backup_dir: str | os.PathLike) -> dict | None:
    """``{"epoch": epochs done, "weights": file name}`` of a folder's last complete backup, or None.

    Reads this project's state file and, for runs begun before it, the one Keras'
    ``BackupAndRestore`` writes (its weights are always ``latest.weights.h5``).
    """
    path = Path(backup_dir) / BACKUP_STATE
    try:
        state = json.loads(path.read_text())
        epoch = int(state["epoch"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path}: unreadable backup state ({exc}); delete {Path(backup_dir).parent} "
                            "to train this network again") from None
    weights = str(state.get("weights", LEGACY_BACKUP_WEIGHTS))
    if epoch < 0 or "/" in weights or not (Path(backup_dir) / weights).is_file():
        raise TrainingError(f"{path}: names a backup that is not there ({weights}); delete "
                            f"{Path(backup_dir).parent} to train this network again")
    return {"epoch": epoch, "weights": weights}


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of ``history.csv``, one per epoch; an epoch logged twice (rerun after a resume)
    keeps its last row."""
    rows: dict[int, dict[str, float]] = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                values = {k: _number(v) for k, v in row.items() if k and v not in (None, "")}
                if math.isfinite(values.get("epoch", math.nan)):
                    rows[int(values["epoch"])] = values
    except FileNotFoundError:
        return []
    return [rows[e] for e in sorted(rows)]


def _number(text: str) -> float:
    """A CSV cell as a float; CSVLogger's "NA" (no validation that epoch) and junk become NaN."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _keras_callbacks():
    """Callback classes built on Keras (made when Keras is first needed, not at import)."""
    import keras

    class RestoreBackup(keras.callbacks.Callback):
        """Restores the last complete backup (``PeriodicBackup``'s) when training begins, and
        writes nothing: what a multi-worker task other than the chief runs, reading the chief's."""

        def __init__(self, backup_dir):
            super().__init__()
            self.backup_dir = Path(backup_dir)

        def on_train_begin(self, logs=None):
            state = read_backup_state(self.backup_dir)
            if state is None:
                return
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(str(self.backup_dir / state["weights"]))
            self.model._initial_epoch = state["epoch"]  # what BackupAndRestore sets; fit reads it

    class PeriodicBackup(RestoreBackup):
        """Weights and optimizer state every ``every`` epochs (a backup costs ~80 MB of writing),
        restored when a killed run is started again.

        Unlike ``keras.callbacks.BackupAndRestore``, whose weights file and epoch counter are two
        files written one after the other (a kill between them resumes the wrong epoch with
        newer weights), each backup's weights go to their own epoch-named file first and the
        state file naming them is replaced atomically last: whatever instant the process dies,
        the state file names a complete backup. The previous backup is kept until the next
        one is complete.
        """

        def __init__(self, backup_dir, every: int):
            super().__init__(backup_dir)
            self.every = every

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % self.every == 0:
                self._save(epoch + 1)

        def _save(self, epochs_done: int):
            self.backup_dir.mkdir(parents=True, exist_ok=True)
            name = f"epoch-{epochs_done:05d}.weights.h5"
            tmp = self.backup_dir / f".{name}.{os.getpid()}.tmp.weights.h5"
            try:
                self.model.save_weights(str(tmp), overwrite=True)  # model and optimizer variables
                os.replace(tmp, self.backup_dir / name)
            finally:
                tmp.unlink(missing_ok=True)
            previous = read_backup_state(self.backup_dir)
            write_text_atomic(self.backup_dir / BACKUP_STATE, json.dumps({"epoch": epochs_done, "weights": name}))
            keep = {name, previous["weights"] if previous else name, BACKUP_STATE}
            for old in self.backup_dir.iterdir():
                if old.name not in keep and not old.name.startswith("."):
                    old.unlink(missing_ok=True)

    class BestCheckpoint(keras.callbacks.Callback):
        """Keep the weights with the lowest ``monitor`` in ``best.keras`` (no optimizer state).

        The best weights are held in memory and written (atomically, with ``best.json`` giving
        the epoch and value) when a backup is taken and when training ends, so the file on disk
        always belongs to the state a resumed run starts from, and improving epochs early in a
        run do not each cost a file write.
        """

        def __init__(self, folder, every: int, monitor: str = "val_loss"):
            super().__init__()
            self.folder = Path(folder)
            self.every = every
            self.monitor = monitor
            self.best = math.inf
            self._pending = None

        def on_train_begin(self, logs=None):
            self._pending = None
            self.best = math.inf
            if not (self.folder / BACKUP_DIR).is_dir():
                # A run starting from scratch: a best file left by an abandoned run is stale.
                for name in (BEST_FILE, BEST_INFO):
                    (self.folder / name).unlink(missing_ok=True)
                return
            try:
                self.best = float(json.loads((self.folder / BEST_INFO).read_text())[self.monitor])
            except (OSError, ValueError, KeyError):
                self.best = math.inf

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is not None and math.isfinite(value) and value < self.best:
                self.best = float(value)
                self._pending = (epoch, self.best, self.model.get_weights())  # get_weights copies
            if (epoch + 1) % self.every == 0:
                self._flush()

        def on_train_end(self, logs=None):
            self._flush()

        def _flush(self):
            if self._pending is None:
                return
            epoch, value, weights = self._pending
            shadow = keras.models.clone_model(self.model)
            shadow.set_weights(weights)
            save_keras_atomic(shadow, self.folder / BEST_FILE)
            write_text_atomic(self.folder / BEST_INFO, json.dumps({"epoch": epoch, self.monitor: value}) + "\n")
            self._pending = None

    class LearningCurve(keras.callbacks.Callback):
        """Redraw ``learning_curve.png`` from ``history.csv`` every ``every`` epochs and at the end."""

        def __init__(self, folder, every: int, title: str):
            super().__init__()
            self.folder = Path(folder)
            self.every = every
            self.title = title

        def _draw(self):
            from kerasmyelin.evaluation.plots import save_learning_curve

            rows = read_history(self.folder / HISTORY_FILE)
            if rows:
                save_learning_curve(rows, self.folder / CURVE_FILE, self.title)

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % self.every == 0:
                self._draw()

        def on_train_end(self, logs=None):
            self._draw()

    class EpochTimer(keras.callbacks.Callback):
        """Adds the epoch's wall time (``epoch_seconds``) to the logs the CSV and TensorBoard write."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.start

    class EpochProgress(keras.callbacks.Callback):
        """One progress bar per network, one tick per epoch, with the latest errors."""

        def __init__(self, epochs: int, description: str):
            super().__init__()
            self.epochs = epochs
            self.description = description
            self.bar = None

        def on_epoch_begin(self, epoch, logs=None):
            # Made at the first epoch, not at train begin: a resumed run starts at its epoch.
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.epochs, initial=epoch, desc=self.description, unit="epoch",
                                dynamic_ncols=True)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = {k: f"{logs[k]:.3g}" for k in ("loss", "mae", "val_mae") if k in logs}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.close()

    return RestoreBackup, PeriodicBackup, BestCheckpoint, LearningCurve, EpochProgress, EpochTimer


def make_callbacks(folder: str | os.PathLike, train, *, validation: bool, title: str,
                   progress: bool = True, monitor=None, hparams: dict | None = None, writer: bool = True) -> list:
    """All callbacks of one network's training run, for ``model.fit`` and for
    ``distributed.fit_distributed`` alike.

    Args:
        folder: the network's run folder.
        train: ``TrainConfig`` (epochs, backup, plot and histogram intervals, early stopping).
        validation: whether ``fit`` gets validation data (best checkpoint, early stopping).
        title: shown on the progress bar and the learning curve.
        progress: show a progress bar.
        monitor: ``summaries.MonitorSet``, the infants whose slices and estimates TensorBoard
            shows; None for Keras' scalars and graph only.
        hparams: ``summaries.network_hparams`` values for the HParams dashboard (with ``monitor``).
        writer: False for a multi-worker task other than the chief: only the callbacks that steer
            training (stop on NaN, early stopping, restore the chief's backup), none that writes,
            so every worker stops and resumes where the chief does and only the chief writes.

    Returns:
        Keras callbacks in the order they must run (the CSV row exists before the curve is drawn).
    """
    import keras

    RestoreBackup, PeriodicBackup, BestCheckpoint, LearningCurve, EpochProgress, EpochTimer = _keras_callbacks()
    folder = Path(folder)
    early_stopping = ([keras.callbacks.EarlyStopping(patience=train.early_stopping_patience,
                                                     restore_best_weights=False)]
                      if validation and train.early_stopping_patience else [])
    if not writer:
        return [keras.callbacks.TerminateOnNaN(), *early_stopping, RestoreBackup(folder / BACKUP_DIR)]
    callbacks = [
        EpochTimer(),  # first: every later callback sees the epoch's time in its logs
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(folder / HISTORY_FILE), append=True),
        # Scalars and the Keras graph; histograms come from summaries (~10x cheaper than Keras').
        keras.callbacks.TensorBoard(log_dir=str(folder / TENSORBOARD_DIR), write_graph=True,
                                    histogram_freq=0, profile_batch=0),
        LearningCurve(folder, train.curve_every_epochs, title),
    ]
    if monitor is not None:
        from kerasmyelin.training.summaries import make_summary_callback

        callbacks.append(make_summary_callback(
            folder / TENSORBOARD_DIR, monitor, hparams=hparams, every=train.curve_every_epochs,
            histogram_every=train.histogram_every_epochs,
            first_start=read_backup_state(folder / BACKUP_DIR) is None))
    if validation:
        callbacks.append(BestCheckpoint(folder, train.backup_every_epochs))
    callbacks += early_stopping
    # Last, so a backup records an epoch only after everything else has logged it.
    callbacks.append(PeriodicBackup(folder / BACKUP_DIR, train.backup_every_epochs))
    if progress:
        callbacks.insert(0, EpochProgress(train.epochs, title))
    return callbacks
