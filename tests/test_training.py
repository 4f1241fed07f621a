"""Training on tiny shapes: a two-epoch smoke run lowers the loss, writes every artefact, resumes."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.data.cache import read_cache  # noqa: E402
from kerasmyelin.training.callbacks import read_history  # noqa: E402
from kerasmyelin.training.config import load_experiment  # noqa: E402
from kerasmyelin.training.fit import train_network
from kerasmyelin.training.objective import make_optimizer  # noqa: E402
from tests.conftest import SMOKE_YAML  # noqa: E402


def test_optimizer_is_the_papers_adam():
    opt = make_optimizer(load_experiment().train)
    assert isinstance(opt, keras.optimizers.Adam)
    assert (float(opt.learning_rate), opt.beta_1, opt.beta_2, opt.epsilon) == pytest.approx((1e-3, 0.9, 0.999, 1e-8))


def test_two_epoch_smoke_training_lowers_the_loss_and_writes_its_artefacts(tiny_tenslice, tmp_path):
    config = load_experiment(SMOKE_YAML, ["train.select=best"])
    data = read_cache(tiny_tenslice)
    folder = tmp_path / "net"
    model = train_network(config.model, config.train, data, np.arange(0, 16, 1)[np.arange(16) % 4 != 0],
                          np.arange(0, 16, 4), folder, name="simple", progress=False)
    rows = read_history(folder / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert rows[1]["loss"] < rows[0]["loss"]
    assert {"loss", "mae", "val_loss", "val_mae", "epoch_seconds"} <= set(rows[0])
    assert all(0 < r["epoch_seconds"] < 600 for r in rows)
    for name in ("final.keras", "best.keras", "best.json", "learning_curve.png"):
        assert (folder / name).stat().st_size > 0, name
    assert list((folder / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert not (folder / "backup").exists(), "a finished run keeps no resume state"
    assert model.name == "simple" and model.output.shape[-1] == 1
    # select=best returns the best checkpoint's weights, and best.json names its (0-based) epoch
    best = json.loads((folder / "best.json").read_text())
    assert best["epoch"] in (0, 1)
    assert best["val_loss"] == pytest.approx(min(r["val_loss"] for r in rows), rel=1e-6)
    stored = keras.models.load_model(folder / "best.keras", compile=False)
    for a, b in zip(model.get_weights(), stored.get_weights()):
        np.testing.assert_array_equal(a, b)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_from_its_backup(tiny_tenslice, tmp_path, monkeypatch):
    import kerasmyelin.training.fit as fit

    config = load_experiment(SMOKE_YAML, ["train.epochs=4", "train.validation_fraction=0"])
    data = read_cache(tiny_tenslice)
    folder = tmp_path / "net"
    real = fit.make_callbacks
    monkeypatch.setattr(fit, "make_callbacks", lambda *a, **k: real(*a, **k) + [_Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        train_network(config.model, config.train, data, np.arange(16), [], folder, progress=False)
    assert not (folder / "final.keras").exists()
    assert (folder / "backup").is_dir()
    monkeypatch.setattr(fit, "make_callbacks", real)
    train_network(config.model, config.train, data, np.arange(16), [], folder, progress=False)
    lines = (folder / "history.csv").read_text().strip().splitlines()
    # header + epochs 0, 1 before the interruption + epochs 2, 3 after: none trained twice
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    assert (folder / "final.keras").exists()


def test_a_finished_network_is_not_trained_again(tiny_tenslice, tmp_path):
    config = load_experiment(SMOKE_YAML, ["train.epochs=1", "train.validation_fraction=0"])
    data = read_cache(tiny_tenslice)
    folder = tmp_path / "net"
    first = train_network(config.model, config.train, data, np.arange(16), [], folder, progress=False)
    stamp = (folder / "final.keras").stat().st_mtime_ns
    again = train_network(config.model, config.train, data, np.arange(16), [], folder, progress=False)
    assert (folder / "final.keras").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.get_weights()[0], again.get_weights()[0])
