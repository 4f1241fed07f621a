"""Arithmetic cost of a network: the floating-point operations of its convolutions and matmuls.

Counts multiply-adds as two operations and leaves out biases, activations and pooling (a few
percent of the total, and memory-bound rather than arithmetic-bound). A training step costs the
forward pass, the weight gradients (as much again) and the input gradients (as much again for every
layer but those that read a model input directly: nothing asks for the gradient of the images).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkFlops:
    """Per-sample operation counts."""

    forward: float
    training: float

    @property
    def backward(self) -> float:
        return self.training - self.forward


def _layer_forward(layer) -> float:
    import keras

    if isinstance(layer, keras.layers.Conv2D):
        out = layer.output.shape  # (batch, h, w, filters)
        kh, kw = layer.kernel_size
        cin = layer.input.shape[-1]
        return 2.0 * out[1] * out[2] * out[3] * kh * kw * cin
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * layer.input.shape[-1] * layer.units
    return 0.0


def network_flops(model) -> NetworkFlops:
    """Forward and training operations per sample of a functional ``keras.Model``."""
    inputs = {id(t) for t in model.inputs}
    forward = training = 0.0
    for layer in model.layers:
        f = _layer_forward(layer)
        if not f:
            continue
        reads_model_input = id(layer.input) in inputs
        forward += f
        training += f * (2.0 if reads_model_input else 3.0)
    return NetworkFlops(forward=forward, training=training)
