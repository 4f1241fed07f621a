"""Run in a subprocess by ``test_performance.py``: the paper network's outputs, gradients and
weights after three Adam steps, for fixed weights and inputs, under this process's TensorFlow
settings (``TF_ENABLE_ONEDNN_OPTS`` in the environment) and the optimizer named on the command line.

Usage: python tests/equivalence_worker.py OUT.npz keras|fused
"""

import sys

import keras
import numpy as np
import tensorflow  # noqa: F401  (first: the environment given by the test decides the kernels)

from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.models.myelin_cnn import build_myelin_cnn
from kerasmyelin.training.optimizer import FusedAdam


def main(out: str, optimizer: str) -> None:
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_myelin_cnn()
    rng = np.random.default_rng(0)
    x = {name: tf.constant(rng.random((3, 128, 128, 1), dtype=np.float32)) for name in INPUT_NAMES}
    y = tf.constant([[2.0], [9.0], [20.0]])
    cls = FusedAdam if optimizer == "fused" else keras.optimizers.Adam
    opt = cls(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.reduce_mean(tf.square(pred - y))
        return pred, tape.gradient(loss, model.trainable_variables)

    pred, g = grads()
    result = {"pred": pred.numpy()}
    result.update({f"grad_{i}": t.numpy() for i, t in enumerate(g)})
    for _ in range(3):
        _, g = grads()
        opt.apply_gradients(zip(g, model.trainable_variables))
    result.update({f"weight_{i}": v.numpy() for i, v in enumerate(model.trainable_variables)})
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
