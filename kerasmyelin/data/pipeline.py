"""The ``tf.data`` pipeline that feeds the model from a ten-slice cache.

Training, evaluation and serving see the same images: the cache already holds them prepared
(``data.prepare``), and ``model_inputs`` only adds the channel axis. Training may add
augmentation (off in the paper configuration). Training datasets repeat forever and are used
with ``steps_per_epoch``: Keras 3.15 ``fit`` on a finite dataset stalls ~4.5 s at the start of
many epochs while the previous iterator is torn down.

``make_dataset`` takes the in-memory set (``tenslice.npz``) or a sharded one (``shards.json``),
which it streams from disk in bounded memory (``data.stream``).
"""

from __future__ import annotations

import math

import numpy as np

from kerasmyelin.data.cache import TenSliceSet
from kerasmyelin.data.shards import ShardedTenSliceSet
from kerasmyelin.data.stream import (
    SHUFFLE_BUFFER,
    check_worker,
    evaluation_stream,
    training_stream,
)
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES


def model_inputs(images: dict[str, np.ndarray], names=INPUT_NAMES) -> dict[str, np.ndarray]:
    """input name -> (N, H, W) images  ==>  input name -> (N, H, W, 1) float32, as the model takes.

    ``names``: the model's inputs (``models.graph.model_input_names``; five for a single-contrast
    network); the other images are left out, as the model does not take them."""
    return {name: np.asarray(images[name], dtype=np.float32)[..., None] for name in names}


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches that cover n samples once (the last one partial)."""
    return max(1, math.ceil(n / batch_size))


# Exponents of the intensity curves' terms: a convex mix of x^0.5, x and x^2 spans gamma-like
# brightening, the identity and darkening, and stays smooth and strictly increasing.
CURVE_EXPONENTS = (0.5, 1.0, 2.0)


def intensity_curve(image, weights):
    """``sum_i w_i * |x|^g_i * sign(x)`` over :data:`CURVE_EXPONENTS` (weights >= 0, summing to 1):
    smooth, strictly increasing, 0 -> 0 and 1 -> 1, so the order of tissue intensities -- which
    carries myelination -- is kept and only the scale between them changes."""
    import tensorflow as tf

    magnitude = tf.abs(image)
    out = tf.zeros_like(image)
    for i, exponent in enumerate(CURVE_EXPONENTS):
        out += weights[i] * tf.pow(magnitude, exponent)
    return tf.sign(image) * out


def _augment(inputs, age, seed, flip_and_gain: bool = True, curves: bool = False):
    """Flip and gain: one random left-right flip for all the images of an infant and a per-contrast
    gain. Curves: a random intensity curve (:func:`intensity_curve`) per contrast, the same for
    its five levels: a scanner's intensity mapping belongs to the acquired volume, and curves
    per slice would garble the comparison between levels that the network may use."""
    import tensorflow as tf

    out = dict(inputs)
    if flip_and_gain:
        seeds = tf.random.experimental.stateless_split(seed, 1 + len(CONTRASTS))
        flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        gains = {c: tf.random.stateless_uniform([], seeds[1 + i], 0.9, 1.1) for i, c in enumerate(CONTRASTS)}
        for name, image in out.items():
            image = tf.cond(flip, lambda im=image: tf.reverse(im, axis=[1]), lambda im=image: im)
            out[name] = image * gains["T1w" if name.startswith("t1w") else "T2w"]
    if curves:
        # Their own stream: switching curves on leaves the flips and gains of a seed unchanged.
        seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 17),
                                                       len(CONTRASTS))
        weights = {}
        for i, c in enumerate(CONTRASTS):
            draws = -tf.math.log(tf.random.stateless_uniform([len(CURVE_EXPONENTS)], seeds[i], 1e-6, 1.0))
            weights[c] = draws / tf.reduce_sum(draws)  # flat Dirichlet: every mix equally likely
        for name, image in out.items():
            out[name] = intensity_curve(image, weights["T1w" if name.startswith("t1w") else "T2w"])
    return out, age


def augmenter(flip_and_gain: bool, curves: bool):
    """The per-sample augmentation ``(inputs, age, seed) -> (inputs, age)``, or None when both are off."""
    if not (flip_and_gain or curves):
        return None
    return lambda inputs, age, seed: _augment(inputs, age, seed, flip_and_gain, curves)


def make_dataset(data: TenSliceSet | ShardedTenSliceSet, indices, batch_size: int, *, training: bool,
                 seed: int = 0, augment: bool = False, skip_batches: int = 0, worker=None,
                 shuffle_buffer: int = SHUFFLE_BUFFER, intensity_curves: bool = False,
                 input_names=INPUT_NAMES):
    """A ``tf.data.Dataset`` of (inputs dict, age) batches for the infants at ``indices``.

    Args:
        data: the ten-slice set, in memory or sharded.
        indices: positions (into ``data``) of the infants to use.
        batch_size: samples per batch.
        training: shuffle (seeded), optionally augment, and repeat forever.
        seed: shuffle and augmentation seed.
        augment: training-only flips and gains (``_augment``); ignored when not training.
        intensity_curves: training-only random monotone intensity curves (``_augment``).
        skip_batches: start the training stream this many batches in. The stream (shuffle order
            and augmentation draws) depends only on ``seed``, so a run resumed after N epochs of
            S steps passes N * S and sees exactly the batches the uninterrupted run saw.
        worker: (index, count) of a data-parallel worker, or None for all data. A sharded set
            gives the worker every ``count``-th of the shard files that hold selected infants,
            from ``index``; an in-memory set every ``count``-th selected infant. Workers'
            datasets are disjoint and together cover the selection.
        shuffle_buffer: sharded set only: records shuffled together (``data.stream``); memory
            holds about two such blocks of serialised records.
        input_names: the inputs of the model fed (``levels.contrast_input_names``): the ten, or a
            single contrast's five; the set's other images are left out.

    Returns:
        Dataset of ({name: (B, H, W, 1) float32} over ``input_names``, (B, 1) float32 age in months). Evaluation
        datasets yield the infants in the order of ``indices``; a sharded training stream gives
        every selected infant once per epoch, in shuffled shard files and shuffled blocks.
    """
    import tensorflow as tf

    augment_fn = augmenter(bool(augment), bool(intensity_curves)) if training else None
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        raise ValueError("no infants selected for the dataset")
    if isinstance(data, ShardedTenSliceSet):
        if training:
            ds = training_stream(data, idx, seed=seed, skip=int(skip_batches) * batch_size, worker=worker,
                                 shuffle_buffer=shuffle_buffer, augment=augment_fn)
        else:
            ds = evaluation_stream(data, idx, worker)
        if set(input_names) != set(INPUT_NAMES):
            names = tuple(input_names)
            ds = ds.map(lambda x, y: ({n: x[n] for n in names}, y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if worker is not None:
        index, count = check_worker(worker, idx.size, "infants")
        idx = idx[index::count]
    inputs = model_inputs({name: data.images[name][idx] for name in input_names}, input_names)
    ages = data.age_months[idx].astype(np.float32)[:, None]
    ds = tf.data.Dataset.from_tensor_slices((inputs, ages)).cache()
    if training:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True).repeat()
        if augment_fn is not None:
            seeds = tf.data.Dataset.random(seed=seed).batch(2).map(lambda s: tf.cast(s, tf.int64))
            ds = tf.data.Dataset.zip((ds, seeds))
        # Skipped before augmenting: passing over 10^5 samples costs a second, not their maps.
        ds = ds.skip(int(skip_batches) * batch_size)
        if augment_fn is not None:
            ds = ds.map(lambda xy, s: augment_fn(xy[0], xy[1], s), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
