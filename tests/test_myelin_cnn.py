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
