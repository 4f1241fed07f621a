"""A model with a site calibration inside its graph: age = intercept + slope * the model's estimate.

Keras' built-in ``Rescaling`` layer (x * scale + offset) holds the correction, so the calibrated
graph uses only Keras classes: every export (SavedModel, ONNX, portable .keras) applies it.
"""

from __future__ import annotations

from kerasmyelin.models.graph import shared_inputs

LAYER_NAME = "site_calibration"


def with_site_calibration(model, slope: float, intercept: float, name: str = "calibrated"):
    """One functional model: ``model``'s estimate corrected by ``intercept + slope * estimate``.

    Raises:
        ValueError: ``model`` already ends in a site calibration (calibrate the original model).
    """
    import keras

    if any(layer.name == LAYER_NAME for layer in model.layers):
        raise ValueError("this model is already calibrated; calibrate the model it was made from")
    inputs = shared_inputs([model])  # the model's own: the ten, or one contrast's five
    out = keras.layers.Rescaling(scale=float(slope), offset=float(intercept), name=LAYER_NAME)(model(inputs))
    return keras.Model(inputs, out, name=name)
