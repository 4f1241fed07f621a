"""Contract and golden tests of the paper's network (tiny shapes except the golden count)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.levels import INPUT_NAMES  # noqa: E402
from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn  # noqa: E402

TINY = ModelConfig(image_size=32, conv_filters=(4, 2), branch_units=8, side_units=(8, 8), joint_units=(8, 4, 2))


def test_golden_parameter_count_of_the_paper_model():
    model = build_myelin_cnn()
    assert model.count_params() == 6_937_191
    # 128 -> 124 -> 62 -> 58 -> 29: the paper's 29 x 29 x 8 feature maps
    assert model.get_layer("t1w_a_pool2").output.shape[1:] == (29, 29, 8)


def test_same_padding_option_changes_the_feature_maps():
    model = build_myelin_cnn(ModelConfig(padding="same"))
    assert model.get_layer("t2w_e_pool2").output.shape[1:] == (32, 32, 8)
    assert model.count_params() != 6_937_191


def test_inputs_and_layer_names_read_like_figure_2():
    model = build_myelin_cnn(TINY)
    assert [t.name for t in model.inputs] == list(INPUT_NAMES)
    names = {layer.name for layer in model.layers}
    for key in INPUT_NAMES:
        assert {f"{key}_conv1", f"{key}_pool1", f"{key}_conv2", f"{key}_pool2", f"{key}_dense"} <= names
    assert {"t1w_concat", "t1w_dense1", "t1w_dense2", "t2w_concat", "t2w_dense2", "joint_concat",
            "joint_dense1", "joint_dense2", "joint_dense3", "age"} <= names
    assert model.get_layer("age").activation.__name__ == "linear"


def _batch(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.random((n, size, size, 1), dtype=np.float32) for name in INPUT_NAMES}


def test_call_predict_on_dataset_and_keras_round_trip(tmp_path):
    import tensorflow as tf

    model = build_myelin_cnn(TINY)
    x = _batch()
    direct = model(x, training=False).numpy()
    assert direct.shape == (3, 1)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    np.testing.assert_allclose(model.predict(ds, verbose=0), direct, rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded(x, training=False).numpy(), direct, rtol=1e-6, atol=1e-6)


def test_gaussian_glorot_option_draws_from_a_normal():
    model = build_myelin_cnn(ModelConfig(image_size=32, initializer="nnc_gaussian_glorot"))
    w = model.get_layer("t1w_a_dense").kernel.numpy().ravel()
    # Uniform Glorot is bounded by sqrt(6 / (fan_in + fan_out)); a normal draw exceeds it.
    bound = np.sqrt(6.0 / (w.size / 100 + 100))
    assert np.abs(w).max() > bound


@pytest.mark.parametrize("kwargs", [{"padding": "causal"}, {"initializer": "he"}, {"image_size": 12}])
def test_bad_model_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("contrast", ["T1w", "T2w"])
def test_single_contrast_network_has_five_inputs_and_the_full_networks_layer_names(contrast):
    from dataclasses import replace

    full = build_myelin_cnn(TINY)
    model = build_myelin_cnn(replace(TINY, contrasts=(contrast,)))
    block = contrast.lower()
    assert [t.name for t in model.inputs] == [f"{block}_{lv}" for lv in "abcde"]
    names = {layer.name for layer in model.layers}
    other = "t2w" if block == "t1w" else "t1w"
    assert not any(n.startswith(f"{other}_") for n in names) and "joint_concat" not in names
    # every weighted layer is one of the full network's, with the same weight shapes, but
    # joint_dense1, which reads one side instead of two
    full_layers = {layer.name: layer for layer in full.layers}
    for layer in model.layers:
        if layer.get_weights() and layer.name != "joint_dense1":
            assert [w.shape for w in layer.get_weights()] == [w.shape for w in full_layers[layer.name].get_weights()]
    assert {f"{block}_concat", f"{block}_dense2", "joint_dense1", "joint_dense3", "age"} <= names
    assert model.get_layer("joint_dense1").kernel.shape == (8, 8)  # one side of 8 units
    assert model.count_params() < full.count_params()
    x = {n: v for n, v in _batch().items() if n.startswith(block)}
    assert model(x, training=False).shape == (3, 1)


def test_paper_single_contrast_parameter_count():
    # the full network less five branches (676,524 each), one side (500*100+100 + 100*100+100)
    # and the 100 joint_dense1 weights per unit that read the other side
    model = build_myelin_cnn(ModelConfig(contrasts=("T2w",)))
    assert model.count_params() == 3_474_371 == 6_937_191 - 5 * 676_524 - 60_200 - 100 * 200


@pytest.mark.parametrize("contrasts", [(), ("T1",), ("T2w", "T1w"), ("T1w", "T1w")])
def test_bad_contrasts_are_refused(contrasts):
    with pytest.raises(ValueError, match="contrast"):
        ModelConfig(contrasts=contrasts)


def test_bad_contrasts_in_a_config_file_are_a_config_error(tmp_path):
    from kerasmyelin.errors import ConfigError
    from kerasmyelin.training.config import load_experiment

    assert load_experiment(None, ["model.contrasts=[T2w]"]).model.contrasts == ("T2w",)
    with pytest.raises(ConfigError, match="order"):
        load_experiment(None, ["model.contrasts=[T2w, T1w]"])
    with pytest.raises(ConfigError, match="unknown contrast 'FLAIR'"):
        load_experiment(None, ["model.contrasts=[FLAIR]"])
