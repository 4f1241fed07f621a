"""Saliency on tiny models: integrated gradients' axioms, and Grad-CAM's contract and refusal."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.explain.saliency import METHODS, grad_cam, integrated_gradients  # noqa: E402
from kerasmyelin.levels import INPUT_NAMES  # noqa: E402
from kerasmyelin.models.ensemble import build_ensemble  # noqa: E402
from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn  # noqa: E402

SIZE = 32
TINY = ModelConfig(image_size=SIZE, conv_filters=(4, 4), branch_units=8, side_units=(8,), joint_units=(8,))


def tiny_network(name: str, seed: int, out_bias: float):
    """The paper's architecture at 32x32 with random biases (so the network is not positively
    homogeneous and integrated gradients has a real integral to approximate), scaled to months."""
    keras.utils.set_random_seed(seed)
    model = build_myelin_cnn(TINY, name=name)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if len(weights) == 2:
            layer.set_weights([weights[0], rng.normal(0.0, 0.3, weights[1].shape).astype(np.float32)])
    kernel, _ = model.get_layer("age").get_weights()
    model.get_layer("age").set_weights([20.0 * kernel, np.array([out_bias], np.float32)])
    return model


def infant(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.random((SIZE, SIZE), dtype=np.float32) for n in INPUT_NAMES}


@pytest.fixture(scope="module")
def network():
    return tiny_network("myelin_cnn", seed=0, out_bias=4.0)


@pytest.fixture(scope="module")
def ensemble():
    # first-pass estimates of about 9 months (baseline) and 12 (infant): both ends of the path lie
    # in the gate's 8-16 month hand-over, so the gate's weight changes along it
    young, old = tiny_network("young", seed=1, out_bias=2.0), tiny_network("old", seed=2, out_bias=6.0)
    return build_ensemble([("young", young), ("old", old)], rule="gate", blend_months=(8.0, 16.0))


def output(model, images) -> float:
    return float(model({n: v[None, :, :, None] for n, v in images.items()}, training=False)[0, 0])


def test_methods_are_named():
    assert METHODS == ("integrated_gradients", "grad_cam")


def test_attributions_add_up_to_the_change_in_estimate(network):
    a = integrated_gradients(network, infant(), steps=64)
    change = a.estimate - a.baseline_estimate
    assert abs(change) > 0.1
    assert a.completeness_error < 0.05 * abs(change)
    assert sum(a.months.values()) == pytest.approx(change, rel=0.05)
    assert a.completeness_error == pytest.approx(abs(sum(a.months.values()) - change), abs=1e-6)
    for n in INPUT_NAMES:
        assert a.maps[n].shape == (SIZE, SIZE) and a.maps[n].dtype == np.float32
        assert a.months[n] == pytest.approx(float(a.maps[n].sum(dtype=np.float64)), abs=1e-6)
    # the estimates are the model's own outputs
    assert a.estimate == pytest.approx(output(network, infant()), abs=1e-4)
    black = {n: np.zeros((SIZE, SIZE), np.float32) for n in INPUT_NAMES}
    assert a.baseline_estimate == pytest.approx(output(network, black), abs=1e-4)


def test_pixels_at_the_baseline_get_exactly_zero(network):
    images = infant()
    images["t1w_b"][:, : SIZE // 2] = 0.0         # half a slice black
    images["t2w_d"][:] = 0.0                     # a whole slice black
    a = integrated_gradients(network, images, steps=8)
    assert np.all(a.maps["t1w_b"][:, : SIZE // 2] == 0.0)
    assert np.any(a.maps["t1w_b"][:, SIZE // 2:] != 0.0)
    assert np.all(a.maps["t2w_d"] == 0.0) and a.months["t2w_d"] == 0.0
    # and with another baseline, pixels equal to it are the zero ones
    grey = integrated_gradients(network, {n: np.full((SIZE, SIZE), 0.5, np.float32) for n in INPUT_NAMES},
                                steps=4, baseline=0.5)
    assert all(np.all(m == 0.0) for m in grey.maps.values())
    assert grey.estimate == grey.baseline_estimate


def test_heat_is_on_one_common_scale_in_0_1(network):
    a = integrated_gradients(network, infant(), steps=8)
    tops = [float(h.max()) for h in a.heat.values()]
    assert max(tops) == 1.0
    assert all(0.0 <= float(h.min()) and h.dtype == np.float32 and h.shape == (SIZE, SIZE) for h in a.heat.values())
    assert min(tops) < 1.0  # not each map scaled to its own maximum


def test_only_the_input_the_model_reads_gets_months():
    inputs = {n: keras.Input(shape=(SIZE, SIZE, 1), name=n) for n in INPUT_NAMES}
    x = keras.layers.GlobalAveragePooling2D(name="t2w_c_pool")(inputs["t2w_c"])
    x = keras.layers.Dense(1, activation="softplus", name="t2w_c_dense")(x)
    age = keras.layers.Dense(1, name="age")(x)
    model = keras.Model(inputs, age, name="t2w_c_only")
    model.get_layer("t2w_c_dense").set_weights([np.array([[6.0]], np.float32), np.array([-2.0], np.float32)])
    model.get_layer("age").set_weights([np.array([[3.0]], np.float32), np.array([1.0], np.float32)])
    a = integrated_gradients(model, infant(), steps=32)
    change = a.estimate - a.baseline_estimate
    assert change > 1.0
    assert a.months["t2w_c"] == pytest.approx(change, rel=0.01)
    assert all(a.months[n] == 0.0 for n in INPUT_NAMES if n != "t2w_c")
    assert all(float(a.heat[n].max()) == 0.0 for n in INPUT_NAMES if n != "t2w_c")
    assert float(a.heat["t2w_c"].max()) == 1.0


def test_explains_the_gated_ensemble_through_its_gate(ensemble):
    a = integrated_gradients(ensemble, infant(), steps=64)
    assert a.estimate == pytest.approx(output(ensemble, infant()), abs=1e-4)
    change = a.estimate - a.baseline_estimate
    assert abs(change) > 0.1
    assert a.completeness_error < 0.05 * abs(change)
    assert max(float(h.max()) for h in a.heat.values()) == 1.0


def test_grad_cam_maps_of_the_plain_network(network):
    heat = grad_cam(network, infant())
    assert sorted(heat) == sorted(INPUT_NAMES)
    assert all(h.shape == (SIZE, SIZE) and h.dtype == np.float32 for h in heat.values())
    assert all(float(h.min()) >= 0.0 and float(h.max()) <= 1.0 for h in heat.values())
    assert max(float(h.max()) for h in heat.values()) == 1.0


def test_grad_cam_refuses_an_ensemble_and_points_to_integrated_gradients(ensemble):
    with pytest.raises(ValueError, match="integrated_gradients"):
        grad_cam(ensemble, infant())


def test_images_that_do_not_fit_the_model_are_refused(network):
    images = infant()
    del images["t1w_e"]
    with pytest.raises(ValueError, match="t1w_e"):
        integrated_gradients(network, images)
    images = infant()
    images["t2w_a"] = np.zeros((SIZE + 1, SIZE), np.float32)
    with pytest.raises(ValueError, match="t2w_a"):
        integrated_gradients(network, images)


@pytest.mark.parametrize("padding, offset", [("valid", 6.5), ("same", 0.5)])
def test_grad_cam_places_conv2_pixels_at_their_receptive_field_centres(padding, offset):
    # conv 5x5 -> pool 2 -> conv 5x5; valid: conv2 pixel m is centred on input 2 * (m + 2) + 0.5 + 2
    # = 2m + 6.5; same: 2m + 0.5 (the centre of the 2x2 pooling window).
    from kerasmyelin.explain.saliency import _centres

    model = build_myelin_cnn(ModelConfig(image_size=SIZE, conv_filters=(2, 2), padding=padding,
                                         branch_units=2, side_units=(2,), joint_units=(2,)))
    chain = [model.get_layer(f"t1w_a_{op}") for op in ("conv1", "pool1", "conv2")]
    assert _centres(chain) == (2.0, offset)
