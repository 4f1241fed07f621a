"""What TensorBoard shows of one network beyond Keras' own ``TensorBoard`` callback.

Keras' callback (added by ``callbacks.make_callbacks``) writes the scalars of every epoch into
``tensorboard/train`` (``epoch_loss``, ``epoch_mae``, ``epoch_learning_rate``,
``epoch_epoch_seconds``) and ``tensorboard/validation`` (``epoch_loss``, ``epoch_mae``), and the
conceptual Keras graph (tag ``keras``, train run). The ``NetworkSummaries`` callback made here
writes into ``tensorboard/`` itself:

- ``{which}_inputs/{participant_id}``: the ten input slices of three monitored infants
  (youngest, middle, oldest) as one 2 x 5 picture, T1w above T2w, levels a-e left to right;
  once, when a network starts (not again when it resumes).
- ``{which}_scatter``: estimated against corrected age of the monitored infants (the paper's
  Figure 4 for one network), every ``train.curve_every_epochs`` epochs and at the end.
- ``weights/{variable path}``: a histogram of every weight, at the first epoch, every
  ``train.histogram_every_epochs`` epochs and at the end.
- the op graph of the network's forward pass (Graphs dashboard), once.
- the hparams session: the network's settings (``network_hparams``), and ``final/loss``,
  ``final/mae``, ``final/val_loss``, ``final/val_mae`` at the end. The HParams dashboard shows one
  row per network with its settings beside those final values and the last value of every
  scalar of its ``train`` and ``validation`` runs.

``{which}`` is ``validation`` (the network's validation infants) or, for a network trained
without a validation share, ``training``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, LEVEL_KEYS, input_name

# Training settings that only say how often something is written: not hyperparameters.
NOT_HPARAMS = ("backup_every_epochs", "curve_every_epochs", "histogram_every_epochs")
SHOWN_INFANTS = 3
MAX_SCATTER_INFANTS = 256
HISTOGRAM_BUCKETS = 30


@dataclass(frozen=True)
class MonitorSet:
    """The infants TensorBoard shows: their input slices and their estimates.

    Attributes:
        which: "validation" or "training" (a network without validation infants).
        participant_id: (N,) ids.
        age_months: (N,) corrected ages in months.
        images: input name -> (N, size, size) float32 prepared slices.
    """

    which: str
    participant_id: np.ndarray
    age_months: np.ndarray
    images: dict[str, np.ndarray]

    @classmethod
    def from_data(cls, data, indices, which: str, limit: int = MAX_SCATTER_INFANTS) -> MonitorSet:
        """The infants at ``indices`` of a ten-slice set, in memory or sharded (at most ``limit``,
        spread over age; only their images are read)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size > limit:
            idx = idx[np.argsort(data.age_months[idx], kind="stable")]
            idx = idx[np.linspace(0, idx.size - 1, limit).round().astype(np.int64)]
        return cls(which, np.asarray(data.participant_id)[idx], np.asarray(data.age_months, np.float64)[idx],
                   {name: np.asarray(image, dtype=np.float32) for name, image in data.images_at(idx).items()})

    def shown(self, n: int = SHOWN_INFANTS) -> np.ndarray:
        """Positions of up to ``n`` infants spread over age: youngest, ..., oldest."""
        order = np.argsort(self.age_months, kind="stable")
        if order.size <= n:
            return order
        return order[np.linspace(0, order.size - 1, n).round().astype(np.int64)]


def slice_montage(images: dict[str, np.ndarray], gap: int = 1) -> np.ndarray:
    """One infant's ten (size, size) slices as a (2 size + gap, 5 size + 4 gap) picture in [0, 1]:
    T1w on the top row, T2w below, levels a-e from left to right, separated by ``gap`` white
    pixels."""
    size = images[INPUT_NAMES[0]].shape[0]
    out = np.ones((len(CONTRASTS) * (size + gap) - gap, len(LEVEL_KEYS) * (size + gap) - gap), np.float32)
    for row, contrast in enumerate(CONTRASTS):
        for col, key in enumerate(LEVEL_KEYS):
            y, x = row * (size + gap), col * (size + gap)
            out[y:y + size, x:x + size] = np.clip(images[input_name(contrast, key)], 0.0, 1.0)
    return out


def weight_histogram(values, buckets: int = HISTOGRAM_BUCKETS) -> np.ndarray | None:
    """TensorBoard's histogram of an array: (buckets, 3) float64 rows of (left edge, right edge,
    count) over its finite values; None when it has none.

    ``tf.summary.histogram`` (what Keras' ``histogram_freq`` uses) one-hot encodes every value
    into the buckets: for the paper network's 6.9 million weights a snapshot took 1.4-2.2 s on
    2 cores, with ``numpy.histogram`` 0.1 s (0.2 s including the writing).
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:  # all equal (a fresh bias): one centred bucket, as TensorBoard draws it
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(a, bins=buckets, range=(lo, hi))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def _hparam_value(value):
    """A setting as the hparams plugin stores it: bool, number or text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def network_hparams(model_config, train, extra: dict | None = None) -> dict[str, bool | int | float | str]:
    """The HParams dashboard's columns for one network.

    Args:
        model_config: ``ModelConfig`` (as ``model.*``).
        train: ``TrainConfig`` (as ``train.*``, without the write intervals ``NOT_HPARAMS``).
        extra: what the caller knows besides (experiment name, fold, member, age range, infants).

    Returns:
        name -> bool, int, float or str (tuples joined with commas, None as "none").
    """
    from kerasmyelin.config import to_dict

    values = {f"model.{k}": _hparam_value(v) for k, v in to_dict(model_config).items()}
    values.update({f"train.{k}": _hparam_value(v) for k, v in to_dict(train).items() if k not in NOT_HPARAMS})
    values.update({k: _hparam_value(v) for k, v in (extra or {}).items()})
    return values


def make_summary_callback(log_dir: str | os.PathLike, monitor: MonitorSet, *, hparams: dict | None,
                          every: int, histogram_every: int, first_start: bool):
    """The ``NetworkSummaries`` callback (see the module docstring).

    Args:
        log_dir: the network's ``tensorboard/`` folder.
        monitor: the infants shown.
        hparams: ``network_hparams`` values, or None for no hparams session.
        every: scatter interval in epochs.
        histogram_every: histogram interval in epochs; 0 for none.
        first_start: False when the network resumes from a backup: the once-only summaries
            (input slices, graph, hparams session) were written by the first start.
    """
    import keras
    import tensorflow as tf

    class NetworkSummaries(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.log_dir = Path(log_dir)
            self.writer = None
            self.forward = None
            self.last_epoch = self.last_scatter = self.last_histogram = None

        def _forward(self):
            """The forward pass as one graph (traced once): the scatter's estimates and the graph."""
            if self.forward is None:
                model = self.model
                spec = {t.name.split(":")[0]: tf.TensorSpec((None, *t.shape[1:]), tf.float32) for t in model.inputs}
                self.forward = tf.function(lambda inputs: model(inputs, training=False), input_signature=[spec])
            return self.forward

        def on_train_begin(self, logs=None):
            self.writer = tf.summary.create_file_writer(str(self.log_dir))
            if not first_start:
                return
            with self.writer.as_default():
                if hparams:
                    from tensorboard.plugins.hparams import api as hp

                    # No trial id: sessions with the same settings (reruns) group as one trial, others never do.
                    hp.hparams(hparams)
                for i in monitor.shown():
                    picture = slice_montage({n: monitor.images[n][i] for n in INPUT_NAMES})
                    label = re.sub(r"[^A-Za-z0-9_.-]", "_", str(monitor.participant_id[i]))  # a valid tag
                    tf.summary.image(f"{monitor.which}_inputs/{label}", picture[None, :, :, None],
                                     step=0, description=f"{monitor.age_months[i]:.1f} months; T1w (top) and T2w "
                                     "(bottom) at levels a-e, as the network sees them")
                tf.summary.graph(self._forward().get_concrete_function().graph)
            self.writer.flush()

        def on_epoch_end(self, epoch, logs=None):
            self.last_epoch = epoch
            if histogram_every and epoch % histogram_every == 0:
                self._histograms(epoch)
            if (epoch + 1) % every == 0:
                self._scatter(epoch)

        def on_train_end(self, logs=None):
            # Last epoch's state, unless already written (an interval that ends on it). A run
            # stopped by NaN or early stopping ends here too.
            epoch = self.last_epoch
            if epoch is not None:
                if histogram_every and self.last_histogram != epoch:
                    self._histograms(epoch)
                if self.last_scatter != epoch:
                    self._scatter(epoch)
                with self.writer.as_default():
                    for key in ("loss", "mae", "val_loss", "val_mae"):
                        if key in (logs or {}):
                            tf.summary.scalar(f"final/{key}", float(logs[key]), step=epoch)
            self.writer.close()

        def _histograms(self, epoch):
            from tensorboard.plugins.histogram import metadata

            with self.writer.as_default():
                for weight in self.model.weights:
                    table = weight_histogram(weight.numpy())
                    if table is not None:
                        tag = f"weights/{weight.path.replace(':', '_')}"
                        tf.summary.write(tag, tf.constant(table), step=epoch,
                                         metadata=metadata.create_summary_metadata(tag, ""))
            self.writer.flush()
            self.last_histogram = epoch

        def _scatter(self, epoch):
            from kerasmyelin.data.pipeline import model_inputs
            from kerasmyelin.evaluation.plots import scatter_image

            from kerasmyelin.models.graph import model_input_names

            forward = self._forward()
            names = model_input_names(self.model)  # the monitor holds all ten, the model may take five
            estimates = []
            for start in range(0, monitor.age_months.size, 64):
                chunk = model_inputs({n: v[start:start + 64] for n, v in monitor.images.items()}, names)
                estimates.append(np.asarray(forward(chunk)).reshape(-1))
            predicted = np.concatenate(estimates)
            mae = float(np.mean(np.abs(predicted - monitor.age_months)))
            picture = scatter_image({"label": f"{monitor.which} infants after epoch {epoch + 1}\nMAE {mae:.2f} months",
                                     "true": monitor.age_months, "predicted": predicted})
            with self.writer.as_default():
                tf.summary.image(f"{monitor.which}_scatter", picture[None, :, :, :3], step=epoch,
                                 description="estimated against corrected age (months); dashed: identity")
            self.writer.flush()
            self.last_scatter = epoch

    return NetworkSummaries()
