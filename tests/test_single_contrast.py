"""Single-contrast networks (``model.contrasts``: T1w or T2w alone), from the record and the
datasets that feed them to a trained run, its estimator and its ensemble, on tiny shapes."""

import json
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.cli.main import main  # noqa: E402
from kerasmyelin.data.prepare import PrepConfig  # noqa: E402
from kerasmyelin.errors import InputError  # noqa: E402
from kerasmyelin.levels import INPUT_NAMES, contrast_input_names, contrasts_of  # noqa: E402
from kerasmyelin.model_record import ModelRecord  # noqa: E402
from kerasmyelin.models.ensemble import build_ensemble, fold_mean  # noqa: E402
from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn  # noqa: E402
from tests.conftest import SMOKE_YAML  # noqa: E402

SIZE = 32
T1W = ModelConfig(image_size=SIZE, conv_filters=(4, 2), branch_units=8, side_units=(8, 8), joint_units=(8, 4, 2),
                  contrasts=("T1w",))
T1W_INPUTS = ("t1w_a", "t1w_b", "t1w_c", "t1w_d", "t1w_e")
T2W_INPUTS = ("t2w_a", "t2w_b", "t2w_c", "t2w_d", "t2w_e")
# Keras 3.15 calls a functional model with extra dict keys after this warning, ignoring them:
# everything kerasmyelin feeds a model must hold only that model's inputs.
EXTRA_KEYS_WARNING = "doesn't match the expected structure"


def ten_images(n=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE) if n is None else (n, SIZE, SIZE, 1)
    return {name: rng.random(shape, dtype=np.float32) for name in INPUT_NAMES}


def test_levels_name_the_inputs_of_each_contrast_set():
    assert contrast_input_names(("T2w",)) == T2W_INPUTS
    assert contrast_input_names() == INPUT_NAMES
    assert contrasts_of(reversed(T1W_INPUTS)) == ("T1w",)
    assert contrasts_of(INPUT_NAMES) == ("T1w", "T2w")
    with pytest.raises(ValueError, match="not the five levels"):
        contrasts_of(T1W_INPUTS[:4])
    with pytest.raises(ValueError, match="not the five levels"):
        contrasts_of(T1W_INPUTS + ("t2w_a",))


def test_record_holds_one_contrast_and_its_five_inputs():
    prep = PrepConfig(image_size=SIZE).as_dict()
    record = ModelRecord(prep_config=prep, image_size=SIZE, inputs=T2W_INPUTS, contrasts=("T2w",))
    back = ModelRecord.from_json(json.loads(record.dumps()))
    assert back.contrasts == ("T2w",) and back.inputs == T2W_INPUTS
    # contrasts alone: the inputs follow from them
    body = {k: v for k, v in record.to_json().items() if k != "inputs"}
    assert ModelRecord.from_json(body).inputs == T2W_INPUTS
    with pytest.raises(ValueError, match="inputs must be"):
        ModelRecord(prep_config=prep, image_size=SIZE, inputs=INPUT_NAMES, contrasts=("T2w",))
    with pytest.raises(ValueError, match="order"):
        ModelRecord(prep_config=prep, image_size=SIZE, contrasts=("T2w", "T1w"))
    with pytest.raises(InputError, match="damaged"):
        ModelRecord.from_json(dict(record.to_json(), contrasts=["T2w", "T2w"]))


def test_datasets_feed_only_the_named_inputs_in_memory():
    from kerasmyelin.data.cache import TenSliceSet
    from kerasmyelin.data.pipeline import make_dataset, model_inputs

    data = TenSliceSet(images={n: v[..., 0] for n, v in ten_images(6).items()},
                       participant_id=np.array([f"s{i}" for i in range(6)]),
                       age_months=np.arange(6, dtype=np.float32), manifest={})
    x, _ = next(iter(make_dataset(data, np.arange(6), 3, training=False, input_names=T2W_INPUTS)))
    assert sorted(x) == sorted(T2W_INPUTS)
    np.testing.assert_array_equal(x["t2w_c"].numpy()[..., 0], data.images["t2w_c"][:3])
    x, _ = next(iter(make_dataset(data, np.arange(6), 3, training=True, augment=True, input_names=T1W_INPUTS)))
    assert sorted(x) == sorted(T1W_INPUTS)
    assert sorted(model_inputs(data.images, T1W_INPUTS)) == sorted(T1W_INPUTS)


def test_ensemble_and_fold_mean_of_single_contrast_members_take_their_five_inputs(tmp_path):
    from kerasmyelin.training.callbacks import save_keras_atomic
    from kerasmyelin.training.fit import load_trained

    young, old = build_myelin_cnn(T1W, name="young"), build_myelin_cnn(T1W, name="old")
    ensemble = build_ensemble([("young", young), ("old", old)], rule="gate")
    assert [t.name for t in ensemble.inputs] == list(T1W_INPUTS)
    x = {n: v for n, v in ten_images(3).items() if n in T1W_INPUTS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no extra-key warning: it gets exactly its inputs
        got = np.asarray(ensemble(x, training=False))
    assert got.shape == (3, 1) and np.all(np.isfinite(got))
    save_keras_atomic(ensemble, tmp_path / "e.keras")
    np.testing.assert_allclose(np.asarray(load_trained(tmp_path / "e.keras")(x, training=False)), got, atol=1e-5)
    mean = fold_mean([build_myelin_cnn(T1W, name="a"), build_myelin_cnn(T1W, name="b")])
    assert [t.name for t in mean.inputs] == list(T1W_INPUTS)
    t2w = build_myelin_cnn(ModelConfig(**{**T1W.as_dict(), "contrasts": ("T2w",)}), name="other")
    with pytest.raises(ValueError, match="same inputs"):
        build_ensemble([("young", build_myelin_cnn(T1W, name="y")), ("other", t2w)])


def test_integrated_gradients_of_a_single_contrast_network_covers_its_five_slices():
    from kerasmyelin.explain.saliency import grad_cam, integrated_gradients

    network = build_myelin_cnn(T1W)
    images = ten_images()  # all ten given, as the cache holds them: only the model's five are read
    attribution = integrated_gradients(network, images, steps=8)
    assert sorted(attribution.maps) == sorted(T1W_INPUTS)
    assert sorted(grad_cam(network, images)) == sorted(T1W_INPUTS)
    with pytest.raises(ValueError, match="t1w_e"):
        integrated_gradients(network, {n: v for n, v in images.items() if n != "t1w_e"})


@pytest.mark.parametrize("given, needle", [(["T2w", "T1w"], "order"), (["T2w", "T2w"], "twice")])
def test_bad_contrasts_on_the_command_line_are_refused(given, needle, tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE_YAML), "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "run"), "--contrasts", *given])
    assert code != 0 and needle in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def t2w_run(tiny_tenslice, tmp_path_factory):
    """A two-fold, one-epoch smoke run of the T2w-only network, evaluated."""
    out = tmp_path_factory.mktemp("single") / "t2w"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["evaluate", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out),
                     "--quiet", "--contrasts", "T2w", "--set", "train.epochs=1"])
    assert code == 0
    return out, [str(w.message) for w in caught]


def test_t2w_only_run_trains_on_five_inputs_and_records_its_contrast(t2w_run):
    from kerasmyelin.io.model_files import read_embedded_record
    from kerasmyelin.io.predictions import read_predictions
    from kerasmyelin.training.config import load_experiment
    from kerasmyelin.training.fit import load_trained

    run, messages = t2w_run
    assert not [m for m in messages if EXTRA_KEYS_WARNING in m]  # fit, validation, predictions: five inputs
    assert load_experiment(run / "config.yaml").model.contrasts == ("T2w",)
    info = json.loads((run / "run.json").read_text())
    assert info["contrasts"] == ["T2w"] and info["inputs"] == list(T2W_INPUTS)
    tested = 0
    for k in range(2):
        model = load_trained(run / f"fold-{k}" / "model.keras")
        assert [t.name for t in model.inputs] == list(T2W_INPUTS)
        assert "joint_concat" not in {layer.name for layer in model.layers}
        record = ModelRecord.loads(read_embedded_record(run / f"fold-{k}" / "model.keras"))
        assert record.contrasts == ("T2w",)
        preds = read_predictions(run / f"fold-{k}" / "predictions.csv")
        assert np.all(np.isfinite(preds["predicted_months"]))
        tested += len(preds["predicted_months"])
    assert tested == 16
    assert json.loads((run / "metrics.json").read_text())  # evaluate reported on it


def test_estimator_of_a_single_contrast_run_needs_only_its_five_slices(t2w_run):
    from kerasmyelin.wholebrain.estimator import TrainedEstimator

    run, _ = t2w_run
    estimator = TrainedEstimator.from_path(run)  # no full/: the mean of the two fold models
    assert estimator.contrasts == ("T2w",) and estimator.input_names == T2W_INPUTS
    images = ten_images(seed=3)
    five = {n: images[n] for n in T2W_INPUTS}
    assert estimator.predict(five) == pytest.approx(estimator.predict(images), abs=1e-6)
    changed = dict(images, **{n: np.zeros((SIZE, SIZE), np.float32) for n in T1W_INPUTS})
    assert estimator.predict(changed) == pytest.approx(estimator.predict(images), abs=1e-6)  # T1w unread
    with pytest.raises(InputError, match=r"\(T2w\) needs the slices"):
        estimator.predict({n: images[n] for n in T1W_INPUTS})
