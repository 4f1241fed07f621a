"""Which slices, and which pixels in them, moved one infant's estimated age.

Two methods, named in ``METHODS``:

- ``integrated_gradients`` (Sundararajan, Taly and Yan 2017, "Axiomatic attribution for deep
  networks", ICML): the default, for any model over the ten named inputs. It integrates the
  gradient of the estimate along the straight path from a black baseline to the infant's images
  and multiplies by (image - baseline). Two of its axioms are what a report needs:

  * completeness: the attributions of all pixels of all ten slices add up to
    estimate - estimate(baseline), so each slice's sum is the number of months it contributed
    and the ten numbers add up to the estimate minus the all-black input's estimate (up to the
    quadrature error, which is measured and returned as ``completeness_error``);
  * implementation invariance: it depends only on the function the model computes, not on its
    layers, so the plain network, the gated ensemble (nested members plus the custom combiner
    layer, whose gate is differentiable) and a fold average are all explained the same way.

- ``grad_cam`` (Selvaraju et al. 2017): the plain network only. It weights one convolution
  layer's maps by their mean gradient, so it needs exactly that layer in the model; an ensemble
  has two members with a conv layer each and a gate between them, and no single layer to read.
  It is coarse (at 128x128 each conv2 value stands for a 2x2 block of pixels and sees 14x14 of
  them) and carries no months; it is here for comparison with the literature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kerasmyelin.levels import INPUT_NAMES, contrasts_of

METHODS: tuple[str, ...] = ("integrated_gradients", "grad_cam")

# Smoothing of |attribution| for display: 2 pixels at the paper's 128x128, scaled with the size.
HEAT_SIGMA_AT_128 = 2.0



@dataclass(frozen=True)
class Attribution:
    """Integrated-gradients attribution of one infant's estimate.

    Attributes:
        maps: input name -> (size, size) float32 signed attribution, months per pixel.
        heat: input name -> (size, size) float32 in [0, 1]: |attribution| smoothed with a
            Gaussian (sigma 2 px at 128, scaled with the size) and divided by one maximum common
            to all ten maps, so slices can be compared with each other. All zero when the
            attribution is zero everywhere.
        months: input name -> months that slice contributed relative to the baseline (the sum
            of its map).
        estimate: the model's estimate at the images, months.
        baseline_estimate: the model's estimate at the baseline images, months.
        completeness_error: |sum of all attributions - (estimate - baseline_estimate)|, months;
            the quadrature error, which falls as ``steps`` grows.
        steps: interpolation steps used.
        baseline: the baseline intensity (0.0: black).
    """

    maps: dict[str, np.ndarray]
    heat: dict[str, np.ndarray]
    months: dict[str, float]
    estimate: float
    baseline_estimate: float
    completeness_error: float
    steps: int
    baseline: float
    method: str = field(default="integrated_gradients")


def _check_images(model, images: dict[str, np.ndarray]) -> tuple[list[str], int]:
    """The model's input names (in ``INPUT_NAMES`` order: the ten, or one contrast's five) and
    image side, after checking ``images`` holds each of them at that size (others may be there
    too, and are not read)."""
    from kerasmyelin.models.graph import model_input_names

    given = model_input_names(model)
    try:
        contrasts_of(given)
    except ValueError as exc:
        raise ValueError(f"model {model.name!r}: {exc}") from None
    names = [n for n in INPUT_NAMES if n in given]
    missing = [n for n in names if n not in images]
    if missing:
        raise ValueError(f"images lack {missing}; one (size, size) image per input is needed")
    size = int(model.inputs[0].shape[1])
    for n in names:
        shape = np.shape(images[n])
        if shape != (size, size):
            raise ValueError(f"image {n!r} has shape {shape}; model {model.name!r} takes "
                             f"({size}, {size}) slices")
    return names, size


def _common_heat(abs_maps: dict[str, np.ndarray], size: int, smooth: bool = True) -> dict[str, np.ndarray]:
    """Smooth each map and scale all by one common maximum into [0, 1]."""
    from scipy.ndimage import gaussian_filter

    sigma = HEAT_SIGMA_AT_128 * size / 128.0
    out = {n: (gaussian_filter(m.astype(np.float64), sigma, mode="nearest") if smooth else m.astype(np.float64))
           for n, m in abs_maps.items()}
    top = max(float(m.max()) for m in out.values())
    if not np.isfinite(top) or top <= 0.0:
        return {n: np.zeros((size, size), np.float32) for n in out}
    return {n: np.clip(m / top, 0.0, 1.0).astype(np.float32) for n, m in out.items()}


def integrated_gradients(model, images: dict[str, np.ndarray], steps: int = 32,
                         baseline: float = 0.0) -> Attribution:
    """Integrated gradients of one infant's estimate with respect to its ten slices.

    The path integral is taken with the midpoint rule: the gradients at the ``steps`` images
    baseline + (k + 0.5) / steps * (image - baseline), k = 0 .. steps - 1, are computed in one
    batch together with the estimates at the images and at the baseline.

    Args:
        model: any Keras model taking the ten (batch, size, size, 1) float32 inputs named by
            ``levels.INPUT_NAMES`` (or one contrast's five: a single-contrast network, whose
            attribution then covers those five only) and returning (batch, 1) age in months:
            the network, the ensemble, a fold average.
        images: input name -> (size, size) float32 slice of one infant.
        steps: interpolation steps (32 gives a completeness error of a few percent on the
            trained networks; more is slower and more exact).
        baseline: the reference intensity every pixel starts from (0.0: black, no tissue).

    Returns:
        The ``Attribution``.
    """
    import tensorflow as tf

    from kerasmyelin.models.graph import graph_gradients

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    names, size = _check_images(model, images)
    alphas = ((np.arange(steps, dtype=np.float64) + 0.5) / steps).astype(np.float32)
    x = {n: np.asarray(images[n], dtype=np.float32) for n in names}
    b = np.float32(baseline)
    batch = {}
    for n in names:
        path = b + alphas[:, None, None] * (x[n] - b)[None]
        stack = np.concatenate([path, x[n][None], np.full((1, size, size), b, np.float32)])
        batch[n] = tf.constant(stack[..., None])
    ages, grads = graph_gradients(model)(batch)
    ages = np.asarray(ages, dtype=np.float64).reshape(-1)
    maps = {}
    for n in names:
        mean_grad = np.asarray(grads[n], dtype=np.float64)[:steps, :, :, 0].mean(axis=0)
        maps[n] = ((x[n].astype(np.float64) - float(b)) * mean_grad).astype(np.float32)
    months = {n: float(maps[n].sum(dtype=np.float64)) for n in names}
    estimate, baseline_estimate = float(ages[steps]), float(ages[steps + 1])
    error = abs(sum(months.values()) - (estimate - baseline_estimate))
    heat = _common_heat({n: np.abs(m) for n, m in maps.items()}, size)
    return Attribution(maps=maps, heat=heat, months=months, estimate=estimate,
                       baseline_estimate=baseline_estimate, completeness_error=float(error),
                       steps=int(steps), baseline=float(baseline))


def _centres(layers) -> tuple[float, float]:
    """(scale, offset) with input pixel = scale * m + offset for the centre of output pixel m of
    a chain of conv / pool layers (first layer first)."""
    scale, offset = 1.0, 0.0
    for layer in layers:
        k = layer.kernel_size[0] if hasattr(layer, "kernel_size") else layer.pool_size[0]
        s = layer.strides[0]
        before = 0 if layer.padding == "valid" else max(k - s, 0) // 2
        # this layer's output m sits at its input s * m + (k - 1) / 2 - before
        offset += scale * ((k - 1) / 2.0 - before)
        scale *= s
    return scale, offset


def _upsample(cam: np.ndarray, size: int, scale: float, offset: float) -> np.ndarray:
    """Bilinear interpolation of a feature map to the input grid, each feature pixel placed at
    the centre of its receptive field (edges held constant beyond the outermost centres)."""
    grid = (np.arange(size) - offset) / scale
    at = np.arange(cam.shape[0])
    rows = np.stack([np.interp(grid, at, cam[:, j]) for j in range(cam.shape[1])], axis=1)
    return np.stack([np.interp(grid, np.arange(cam.shape[1]), rows[i]) for i in range(size)])


def grad_cam(model, images: dict[str, np.ndarray], layer_suffix: str = "conv2") -> dict[str, np.ndarray]:
    """Grad-CAM of the plain network for one infant, one map per slice.

    For each input the maps of its layer ``f"{input_name}_{layer_suffix}"`` are weighted by the
    mean gradient of the estimate over each map, summed, passed through a ReLU and interpolated
    linearly to the input grid (each feature pixel at the centre of its receptive field).

    Args:
        model: the plain network (``models.myelin_cnn.build_myelin_cnn``).
        images: input name -> (size, size) float32 slice of one infant.
        layer_suffix: which per-slice layer to read ("conv2": the last convolution).

    Returns:
        input name -> (size, size) float32 in [0, 1], divided by one maximum common to all ten
        maps (all zero when no map is positive).

    Raises:
        ValueError: the model has no such per-slice layers (an ensemble or a fold average:
            explain those with ``integrated_gradients``).
    """
    import keras
    import tensorflow as tf

    names, size = _check_images(model, images)
    present = {layer.name for layer in model.layers}
    missing = [f"{n}_{layer_suffix}" for n in names if f"{n}_{layer_suffix}" not in present]
    if missing:
        raise ValueError(f"grad_cam reads the plain network's per-slice layers, and model {model.name!r} "
                         f"has no layer {missing[0]!r}{' (nor the others)' if len(missing) == len(names) > 1 else ''}; "
                         "for an ensemble or a fold average use integrated_gradients, which explains any "
                         "model over the ten inputs")
    targets = [model.get_layer(f"{n}_{layer_suffix}") for n in names]
    probe = keras.Model(inputs=model.input, outputs=[t.output for t in targets] + [model.outputs[0]])
    batch = {n: tf.constant(np.asarray(images[n], np.float32)[None, :, :, None]) for n in names}
    with tf.GradientTape() as tape:
        tape.watch(batch)  # records every op, trainable weights or not
        *features, age = probe(batch, training=False)
    grads = tape.gradient(age, features, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    cams = {}
    for n, f, g, target in zip(names, features, grads, targets):
        weights = tf.reduce_mean(g, axis=(1, 2))  # (1, maps)
        cam = tf.nn.relu(tf.reduce_sum(f * weights[:, None, None, :], axis=-1))[0]
        chain = [layer for layer in model.layers
                 if layer.name.startswith(f"{n}_") and (hasattr(layer, "kernel_size") or hasattr(layer, "pool_size"))]
        chain = chain[:chain.index(target) + 1]
        cams[n] = _upsample(np.asarray(cam, np.float64), size, *_centres(chain))
    return _common_heat(cams, size, smooth=False)
