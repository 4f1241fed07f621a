"""The training loop under a ``tf.distribute`` strategy (``--strategy mirrored|multiworker``).

Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` ("Attempt to convert a value
(PerReplica ...)", keras-team/keras issue 20585), so a distributed network is trained by this
loop instead: the step is ``strategy.run`` inside a ``tf.function``, the Keras model and optimizer
are made under ``strategy.scope()`` (``fit.train_network``), and the same callbacks that ``fit``
drives (``callbacks.make_callbacks``) are driven here through ``keras.callbacks.CallbackList``
with the logs ``fit`` gives them: ``loss`` and ``mae`` (training, the epoch's mean over its
samples), ``val_loss`` and ``val_mae`` (the validation infants). Checkpoints, backups and resume,
``history.csv``, TensorBoard, the learning curve, early stopping and progress are therefore
written by one piece of code whichever loop runs.

Arithmetic: each replica's loss is its share of the paper's squared error over the *global*
batch (``tf.nn.compute_average_loss`` with the global batch size), and the optimizer sums the
replicas' gradients once (Keras' TensorFlow optimizer all-reduces in ``apply_gradients``), so N
replicas take the step one process takes on the whole batch, up to float32 summation order.
Metrics are sums over samples all-reduced across replicas and divided by the sample count:
the per-sample mean that ``fit``'s size-weighted batch means give, validation's partial last
batch included.
"""

from __future__ import annotations

import math

from kerasmyelin.errors import ConfigError
from kerasmyelin.training.objective import LOSS, METRIC

METRICS = ("loss", METRIC)  # the logs' keys, as fit names them


def distribute_dataset(strategy, data, make, global_batch: int, *, training: bool):
    """A training or validation stream split across the strategy's replicas.

    Split element-wise (``AutoShardPolicy.DATA``), every worker reading the whole stream: at
    every step the replicas' batches together are exactly the batch of ``global_batch`` one
    process reads. That is how an in-memory cache (``TenSliceSet``) is split, and any validation
    stream (a few infants, whose metrics then equal the single process's). A sharded set's
    training stream is instead read shard-wise: each worker builds its own stream over its own
    shard files with the per-replica batch size, so no worker reads the whole cohort.

    Args:
        strategy: a ``tf.distribute.Strategy``.
        data: the set the stream reads (in memory or sharded).
        make: ``make(batch_size, **extra) -> tf.data.Dataset`` of (inputs, age) batches; ``extra``
            is ``worker=(index, count)`` for a sharded training stream.
        global_batch: samples per step over all replicas.
        training: a training stream (endless) rather than a validation one.

    Returns:
        A distributed dataset, as ``fit_distributed`` takes it.
    """
    import tensorflow as tf

    from kerasmyelin.data.cache import TenSliceSet

    if training and not isinstance(data, TenSliceSet):
        return strategy.distribute_datasets_from_function(
            lambda ctx: make(ctx.get_per_replica_batch_size(global_batch),
                             worker=(ctx.input_pipeline_id, ctx.num_input_pipelines)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(make(global_batch).with_options(options))


def _step_functions(model, strategy, global_batch: int):
    """(train_step(iterator), test_step(batch)): one distributed step each, returning the
    all-reduced sums {"loss": squared error, "mae": absolute error, "count": samples}."""
    import keras
    import tensorflow as tf

    squared, absolute = keras.losses.get(LOSS), keras.losses.get(METRIC)  # per-sample, as compiled
    total = tf.distribute.ReduceOp.SUM

    def sums(y, predicted, per_sample_loss):
        return {"loss": tf.reduce_sum(per_sample_loss), METRIC: tf.reduce_sum(absolute(y, predicted)),
                "count": tf.cast(tf.shape(y)[0], tf.float32)}

    def replica_train(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            predicted = model(x, training=True)
            per_sample = squared(y, predicted)
            # The mean over the global batch: summed over replicas, as one process's loss.
            loss = tf.nn.compute_average_loss(per_sample, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # all-reduces once
        return sums(y, predicted, per_sample)

    def replica_test(batch):
        x, y = batch

        def evaluate():
            predicted = model(x, training=False)
            return sums(y, predicted, squared(y, predicted))

        # The last, partial batch may leave a replica without infants, and convolutions refuse
        # an empty batch.
        return tf.cond(tf.shape(y)[0] > 0, evaluate, lambda: dict.fromkeys((*METRICS, "count"), tf.constant(0.0)))

    def reduced(per_replica):
        return {k: strategy.reduce(total, v, axis=None) for k, v in per_replica.items()}

    @tf.function
    def train_step(iterator):
        return reduced(strategy.run(replica_train, args=(next(iterator),)))

    @tf.function
    def test_step(batch):
        return reduced(strategy.run(replica_test, args=(batch,)))

    return train_step, test_step


class _Means:
    """Running per-sample means of the steps' summed errors (float64 sums of float32 steps)."""

    def __init__(self):
        self.sums = dict.fromkeys((*METRICS, "count"), 0.0)

    def add(self, step_sums) -> dict[str, float]:
        for key in self.sums:
            self.sums[key] += float(step_sums[key])
        return self.logs()

    def logs(self) -> dict[str, float]:
        count = self.sums["count"]
        return {k: self.sums[k] / count if count else math.nan for k in METRICS}


def _evaluate(test_step, validation_data, callbacks) -> dict[str, float]:
    """One pass over the validation stream, with the test hooks ``fit``'s ``evaluate`` calls
    (TensorBoard writes ``evaluation_*_vs_iterations`` from them)."""
    callbacks.on_test_begin()
    means = _Means()
    for step, batch in enumerate(validation_data):
        callbacks.on_test_batch_begin(step)
        callbacks.on_test_batch_end(step, means.add(test_step(batch)))
    logs = means.logs()
    callbacks.on_test_end(logs)
    return logs


def fit_distributed(model, strategy, train_data, *, epochs: int, steps: int, global_batch: int,
                    callbacks: list, validation_data=None):
    """Train ``model`` under ``strategy`` as ``model.fit(train_data, epochs=epochs,
    steps_per_epoch=steps, callbacks=callbacks, validation_data=validation_data)`` would.

    Args:
        model: a compiled ``keras.Model`` whose variables and optimizer (built) were made under
            ``strategy.scope()``.
        strategy: the ``tf.distribute.Strategy``.
        train_data: distributed endless training stream (``distribute_dataset``); one iterator
            serves every epoch, as ``fit``'s does, so a run resumed with ``skip_batches`` reads on
            where the first stopped.
        epochs: the last epoch to train (a resumed run starts at the epoch a callback sets in
            ``model._initial_epoch``, as ``fit`` does).
        steps: steps per epoch.
        global_batch: samples per step over all replicas.
        callbacks: ``make_callbacks``' list; called outside ``strategy.scope()``, so what they
            create (a best-checkpoint copy of the model) is local and needs no other worker.
        validation_data: distributed finite validation stream, or None.

    Returns:
        ``keras.callbacks.History``, as ``fit`` returns.
    """
    import keras

    if global_batch < strategy.num_replicas_in_sync:
        raise ConfigError(f"train.batch_size is {global_batch}, fewer than the {strategy.num_replicas_in_sync} "
                          "replicas training it: each replica needs at least one infant per step")
    history = keras.callbacks.History()
    hooks = keras.callbacks.CallbackList([*callbacks, history], model=model, verbose=0, epochs=epochs,
                                         steps=steps)
    train_step, test_step = _step_functions(model, strategy, global_batch)
    iterator = iter(train_data)
    model.stop_training = False
    hooks.on_train_begin()
    logs = None
    for epoch in range(model._initial_epoch or 0, epochs):  # _initial_epoch: what fit reads too
        hooks.on_epoch_begin(epoch)
        means = _Means()
        for step in range(steps):
            hooks.on_train_batch_begin(step)
            hooks.on_train_batch_end(step, means.add(train_step(iterator)))
            if model.stop_training:
                break
        logs = means.logs()
        if validation_data is not None:
            logs.update({f"val_{k}": v for k, v in _evaluate(test_step, validation_data, hooks).items()})
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    hooks.on_train_end(logs)
    return history
