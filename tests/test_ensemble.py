"""The ensemble's two combining rules, on stub members whose outputs are known exactly."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.levels import INPUT_NAMES  # noqa: E402
from kerasmyelin.models.ensemble import build_ensemble, combine, gate_weight  # noqa: E402
from kerasmyelin.training.callbacks import save_keras_atomic  # noqa: E402
from kerasmyelin.training.fit import load_trained  # noqa: E402

SIZE = 8


def stub_member(name: str, scale: float, offset: float):
    """A model over the ten named inputs returning scale * mean(t1w_a) + offset (months)."""
    inputs = {n: keras.Input(shape=(SIZE, SIZE, 1), name=n) for n in INPUT_NAMES}
    # Flatten + Dense (layer types the project writes, so the safe loader admits it) as a mean.
    x = keras.layers.Flatten(name=f"{name}_flat")(inputs["t1w_a"])
    out = keras.layers.Dense(1, name=f"{name}_age")(x)
    model = keras.Model(inputs, out, name=name)
    kernel = np.full((SIZE * SIZE, 1), scale / (SIZE * SIZE), np.float32)
    model.get_layer(f"{name}_age").set_weights([kernel, np.array([offset], np.float32)])
    return model


def batch(values):
    """Inputs whose t1w_a mean is each of ``values`` (one infant per value)."""
    v = np.asarray(values, dtype=np.float32)
    return {n: np.broadcast_to(v[:, None, None, None], (v.size, SIZE, SIZE, 1)).copy() for n in INPUT_NAMES}


def test_gate_weight_is_a_smooth_handover_across_the_overlap():
    e = np.array([-2.0, 8.0, 10.0, 12.0, 14.0, 16.0, 30.0], dtype=np.float32)
    w = np.asarray(gate_weight(e, 8.0, 16.0))
    np.testing.assert_allclose(w, [0, 0, 0.15625, 0.5, 0.84375, 1, 1], atol=1e-6)
    fine = np.linspace(7, 17, 1001, dtype=np.float32)
    wf = np.asarray(gate_weight(fine, 8.0, 16.0))
    assert np.all(np.diff(wf) >= 0)
    assert np.max(np.abs(np.diff(wf))) < 2e-3  # no jump anywhere


def test_average_rule_is_the_mean_of_the_members():
    young, old = stub_member("young", 1.0, 0.0), stub_member("old", 1.0, 4.0)
    ens = build_ensemble([("young", young), ("old", old)], rule="average")
    x = batch([2.0, 12.0, 20.0])
    np.testing.assert_allclose(ens.predict(x, verbose=0).ravel(), [4.0, 14.0, 22.0], atol=1e-5)


def test_gate_rule_trusts_the_younger_member_early_and_the_older_late():
    # young says v, old says v + 4: first pass (mean) = v + 2
    young, old = stub_member("young", 1.0, 0.0), stub_member("old", 1.0, 4.0)
    ens = build_ensemble([("young", young), ("old", old)], rule="gate", blend_months=(8.0, 16.0))
    v = np.array([1.0, 10.0, 20.0], dtype=np.float32)
    got = ens.predict(batch(v), verbose=0).ravel()
    w = np.asarray(gate_weight(v + 2.0, 8.0, 16.0))
    np.testing.assert_allclose(got, (1 - w) * v + w * (v + 4.0), atol=1e-5)
    assert got[0] == pytest.approx(1.0, abs=1e-5)    # first pass 3 months: younger member only
    assert got[1] == pytest.approx(12.0, abs=1e-5)   # first pass 12: half and half
    assert got[2] == pytest.approx(24.0, abs=1e-5)   # first pass 22: older member only


def test_ensemble_is_one_graph_that_reloads_safely(tmp_path):
    young, old = stub_member("young", 2.0, -1.0), stub_member("old", 0.5, 9.0)
    ens = build_ensemble([("young", young), ("old", old)], rule="gate", name="ens")
    x = batch([0.5, 6.0, 11.0, 30.0])
    before = ens.predict(x, verbose=0)
    path = save_keras_atomic(ens, tmp_path / "ens.keras")
    again = load_trained(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), before, atol=1e-6)
    assert again.get_layer("ensemble_age").rule == "gate"
    assert {layer.name for layer in again.layers} >= {"young", "old", "ensemble_age"}


def test_combine_refuses_unknown_rules_and_members_need_distinct_names():
    with pytest.raises(ValueError, match="rule"):
        combine(np.zeros((1, 1)), np.zeros((1, 1)), "median", (8.0, 16.0))
    a, b = stub_member("same", 1.0, 0.0), stub_member("same", 1.0, 1.0)
    with pytest.raises(ValueError, match="distinct"):
        build_ensemble([("young", a), ("old", b)])
