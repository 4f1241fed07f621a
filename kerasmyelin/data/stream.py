"""``tf.data`` streams over a sharded ten-slice set (``data.shards``) in bounded memory.

Training stream, epoch by epoch (epoch ``e`` depends only on ``seed`` and ``e``):

1. the worker's shard files in an order drawn from (seed, e);
2. their records interleaved, ``CYCLE_SHARDS`` files at a time, one record from each in turn;
   records of infants not selected are dropped by position, unparsed;
3. a block shuffle: every run of ``shuffle_buffer`` consecutive records is put in an order drawn
   from (seed, e, block number). This, not ``Dataset.shuffle``'s sliding buffer, because its
   order is a pure function of the epoch: a resumed run starts at the right epoch and skips at
   most one epoch's records, where a sliding buffer would have to replay every epoch before;
4. records parsed, float16 -> float32, and augmented with a seed drawn from (seed, e, position).

Memory holds about two blocks of serialised records (``shuffle_buffer`` x 330 KB each at 128x128)
and one read buffer per open shard, whatever the number of infants. Evaluation streams read the
selected infants' records by offset, in the order asked for.
"""

from __future__ import annotations

import numpy as np

from kerasmyelin.data.shard_records import parse_records
from kerasmyelin.data.shards import ShardedTenSliceSet
from kerasmyelin.errors import ConfigError
from kerasmyelin.levels import INPUT_NAMES

SHUFFLE_BUFFER = 512  # records per shuffled block: ~170 MB at 128x128
CYCLE_SHARDS = 16  # shard files read side by side
_ORDER, _BLOCK, _AUGMENT = 0, 1, 2  # what a seed is drawn for: kept apart so draws never coincide
_READ_CHUNK = 64  # records an evaluation stream reads at a time


def check_worker(worker, available: int, what: str, hint: str = "") -> tuple[int, int]:
    """(index, count) of a data-parallel worker, checked against ``available`` units (``what``) to divide.

    Raises:
        ConfigError: a malformed worker, or fewer units than workers.
    """
    try:
        index, count = (int(v) for v in worker)
    except (TypeError, ValueError):
        raise ConfigError(f"worker must be (index, count), got {worker!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"worker {index} of {count}: the index must be in 0-{max(count - 1, 0)}")
    if available < count:
        raise ConfigError(f"{available} {what} cannot be divided among {count} workers{hint}")
    return index, count


def worker_shards(data: ShardedTenSliceSet, idx: np.ndarray, worker) -> np.ndarray:
    """Shard numbers this worker reads: every ``count``-th of the shards holding selected infants,
    from ``index`` (all of them when ``worker`` is None)."""
    shards = np.unique(data.shard[idx])
    if worker is None:
        return shards
    count = worker[1] if isinstance(worker, (tuple, list)) and len(worker) == 2 else "N"
    index, count = check_worker(worker, shards.size, f"shard file(s) of {data.folder} holding the selected infants",
                                f"; reshard with at least {count} shards ('kerasmyelin shard --shards {count}')")
    return shards[index::count]


def _record_sample(serialized, image_shape):
    """One serialised record -> ({name: (H, W, 1) float32}, (1,) float32 age in months)."""
    import tensorflow as tf

    images, ages, _ = parse_records(tf.reshape(serialized, [1]), image_shape)
    inputs = {name: images[name][0][..., None] for name in INPUT_NAMES}
    return inputs, ages[:1]


def _seed(seed, epoch, purpose: int, n):
    """A stateless seed (shape [2], int64) for draw ``n`` of one purpose in one epoch."""
    import tensorflow as tf

    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    fold = tf.random.experimental.stateless_fold_in
    return fold(fold(base, tf.constant(purpose, tf.int64)), tf.cast(n, tf.int64))


def _permuted(seed, size):
    import tensorflow as tf

    return tf.argsort(tf.random.stateless_uniform([size], seed=seed))


def training_stream(data: ShardedTenSliceSet, idx: np.ndarray, *, seed: int, skip: int, worker,
                    shuffle_buffer: int, augment=None):
    """The endless training stream of the infants at ``idx`` (see the module docstring).

    Args:
        skip: samples to skip from the start (a resumed run's epochs x steps x batch size).
        augment: ``(inputs, age, seed) -> (inputs, age)`` per sample, or None.

    Returns:
        Unbatched dataset of ({name: (H, W, 1) float32}, (1,) float32 age in months).
    """
    import tensorflow as tf

    if shuffle_buffer < 1:
        raise ConfigError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
    shards = worker_shards(data, idx, worker)
    keep = np.zeros(len(data), dtype=bool)
    keep[idx] = True
    keep &= np.isin(data.shard, shards)
    per_epoch = int(keep.sum())
    files = tf.constant([str(data.shard_files[k]) for k in shards])
    first = tf.constant(data.first_position[shards])
    keep = tf.constant(keep)

    def shard_records(j):
        return tf.data.TFRecordDataset(files[j]).enumerate().map(lambda i, rec: (first[j] + i, rec))

    def shuffled_block(block, batch):
        order = _permuted(block, tf.shape(batch[0])[0])
        return tf.gather(batch[0], order), tf.gather(batch[1], order)

    def epoch_stream(epoch):
        order = _permuted(_seed(seed, epoch, _ORDER, 0), len(shards))
        ds = tf.data.Dataset.from_tensor_slices(order).interleave(
            shard_records, cycle_length=min(len(shards), CYCLE_SHARDS), block_length=1)
        ds = ds.filter(lambda pos, rec: tf.gather(keep, pos)).batch(shuffle_buffer).enumerate()
        ds = ds.map(lambda b, batch: shuffled_block(_seed(seed, epoch, _BLOCK, b), batch)).unbatch()
        return ds.map(lambda pos, rec: (epoch, pos, rec))

    # Whole epochs are skipped by starting later, the rest record by record before any parsing.
    first_epoch, rest = divmod(int(skip), per_epoch)
    ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch_stream).skip(rest)

    def sample(epoch, pos, rec):
        inputs, age = _record_sample(rec, data.image_shape)
        if augment is None:
            return inputs, age
        return augment(inputs, age, _seed(seed, epoch, _AUGMENT, pos))

    return ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE)


def evaluation_stream(data: ShardedTenSliceSet, idx: np.ndarray, worker):
    """The infants at ``idx`` once, in that order (a worker: those in its shards), read by offset.

    Returns:
        Unbatched dataset of ({name: (H, W, 1) float32}, (1,) float32 age in months).
    """
    import tensorflow as tf

    if worker is not None:
        idx = idx[np.isin(data.shard[idx], worker_shards(data, idx, worker))]

    def records():
        for start in range(0, idx.size, _READ_CHUNK):
            yield from data.records(idx[start:start + _READ_CHUNK])

    ds = tf.data.Dataset.from_generator(records, output_signature=tf.TensorSpec([], tf.string))
    # A known length: Keras warns "ran out of data" after every pass over a dataset without one.
    ds = ds.apply(tf.data.experimental.assert_cardinality(idx.size))
    return ds.map(lambda rec: _record_sample(rec, data.image_shape), num_parallel_calls=tf.data.AUTOTUNE)
