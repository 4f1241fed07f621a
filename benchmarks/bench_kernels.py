"""Where a training step's time goes, kernel by kernel, and the rewrites that did not pay.

Usage:
    python benchmarks/bench_kernels.py            # kerasmyelin's settings (oneDNN on)
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_kernels.py   # TensorFlow's default kernels here

Prints, for one branch at batch 8 on one thread: each convolution kernel's time and GFLOP/s
(forward, weight gradient, input gradient), the exact alternatives tried for them (im2col +
matmul, depthwise for conv1, a grouped convolution for all ten conv2s, the weight gradient as a
forward convolution), Keras' Adam against the fused kernel for the network's 6.9 M parameters,
and eager against graph prediction. Numbers recorded in docs/performance.md.
"""

from __future__ import annotations

import time

import numpy as np

import kerasmyelin  # noqa: F401  (first: its settings apply unless the environment says otherwise)


def _time(f, *args, n: int = 20) -> float:
    for _ in range(3):
        f(*args)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = f(*args)
        np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _update_step(tf, opt, grads, variables):
    """One compiled optimizer update; returns a variable so the timer waits for it."""
    @tf.function
    def step():
        opt.apply_gradients(zip(grads, variables))

    def run():
        step()
        return variables[0]
    return run


def main() -> None:
    import keras
    import tensorflow as tf

    from kerasmyelin.levels import INPUT_NAMES
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn
    from kerasmyelin.runtime import state
    from kerasmyelin.training.optimizer import FusedAdam

    print(f"runtime: {state()}; batch 8; times are medians of 20 calls")
    b, rng = 8, np.random.default_rng(0)
    x = tf.constant(rng.random((b, 128, 128, 1), dtype=np.float32))
    w1 = tf.constant(rng.normal(size=(5, 5, 1, 16)).astype(np.float32))
    g1 = tf.constant(rng.random((b, 124, 124, 16), dtype=np.float32))
    h = tf.constant(rng.random((b, 62, 62, 16), dtype=np.float32))
    w2 = tf.constant(rng.normal(size=(5, 5, 16, 8)).astype(np.float32))
    g2 = tf.constant(rng.random((b, 58, 58, 8), dtype=np.float32))
    f1, f2 = 2 * b * 124 * 124 * 16 * 25, 2 * b * 58 * 58 * 8 * 400

    def wgrad(inp, size, grad):
        return tf.raw_ops.Conv2DBackpropFilter(input=inp, filter_sizes=size, out_backprop=grad,
                                               strides=[1, 1, 1, 1], padding="VALID")

    def wgrad_as_forward(inp, grad):  # dW = correlation of the input with the output gradient
        y = tf.nn.conv2d(tf.transpose(inp, [3, 1, 2, 0]), tf.transpose(grad, [1, 2, 0, 3]), 1, "VALID")
        return tf.transpose(y, [1, 2, 0, 3])

    def im2col(inp):
        return tf.stack([inp[:, dy:dy + 124, dx:dx + 124, 0] for dy in range(5) for dx in range(5)], axis=-1)

    xc = tf.concat([x] * 10, axis=-1)
    wd = tf.constant(rng.normal(size=(5, 5, 10, 16)).astype(np.float32))
    hg = tf.concat([h] * 10, axis=-1)
    wg = tf.constant(rng.normal(size=(5, 5, 16, 80)).astype(np.float32))
    rows = [
        ("conv1 forward", tf.function(lambda: tf.nn.conv2d(x, w1, 1, "VALID")), f1),
        ("conv1 forward, im2col + matmul", tf.function(lambda: tf.einsum("bhwk,kc->bhwc", im2col(x), tf.reshape(w1, (25, 16)))), f1),
        ("conv1 weight gradient", tf.function(lambda: wgrad(x, [5, 5, 1, 16], g1)), f1),
        ("conv1 weight gradient as forward conv", tf.function(lambda: wgrad_as_forward(x, g1)), f1),
        ("conv1 x10 as one depthwise conv (/10)", tf.function(lambda: tf.nn.depthwise_conv2d(xc, wd, [1, 1, 1, 1], "VALID")), 10 * f1),
        ("conv2 forward", tf.function(lambda: tf.nn.conv2d(h, w2, 1, "VALID")), f2),
        ("conv2 x10 as one grouped conv (/10)", tf.function(lambda: tf.nn.conv2d(hg, wg, 1, "VALID")), 10 * f2),
        ("conv2 weight gradient", tf.function(lambda: wgrad(h, [5, 5, 16, 8], g2)), f2),
        ("conv2 weight gradient as forward conv", tf.function(lambda: wgrad_as_forward(h, g2)), f2),
        ("conv2 input gradient", tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[b, 62, 62, 16], filter=w2, out_backprop=g2, strides=[1, 1, 1, 1], padding="VALID")), f2),
    ]
    print(f"\n{'kernel (one branch)':<42}{'ms':>8}{'GFLOP/s':>9}")
    for name, fn, flop in rows:
        try:
            dt = _time(fn)
        except (tf.errors.OpError, ValueError) as exc:  # e.g. no grouped-convolution kernel on this CPU
            print(f"{name:<42}{'n/a':>8}  {type(exc).__name__}")
            continue
        scale = 10 if "(/10)" in name else 1
        print(f"{name:<42}{dt * 1e3 / scale:>8.2f}{flop / dt / 1e9:>9.1f}")

    model = build_myelin_cnn()
    grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32) * 1e-3) for v in model.trainable_variables]
    print()
    for cls in (keras.optimizers.Adam, FusedAdam):
        variables = [keras.Variable(v.numpy()) for v in model.trainable_variables]
        opt = cls(learning_rate=1e-3)
        opt.build(variables)
        dt = _time(_update_step(tf, opt, grads, variables))
        print(f"Adam update, {cls.__name__:<10} {dt * 1e3:7.1f} ms for {model.count_params():,} parameters")

    batch = {n: tf.constant(rng.random((64, 128, 128, 1), dtype=np.float32)) for n in INPUT_NAMES}
    graph = tf.function(lambda: model(batch, training=False))
    for name, fn in (("eager", lambda: model(batch, training=False)), ("graph", graph)):
        print(f"prediction, {name}: {64 / _time(fn, n=8):6.0f} subjects/s (batch 64)")


if __name__ == "__main__":
    main()
