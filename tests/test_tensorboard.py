"""TensorBoard (issue 5 section 2): a training run writes every dashboard's data, read back from
the event files: scalars, input slices, prediction scatter, weight histograms, graph, hparams."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorboard")

from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.training.summaries import (
    MonitorSet,
    network_hparams,
    slice_montage,
    weight_histogram,
)
from tests.conftest import SMOKE_YAML


def _runs(log_dir):
    """run name ("." for the folder itself, "train", "validation") -> loaded EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for folder in sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
        acc.Reload()
        out[str(folder.relative_to(log_dir))] = acc
    return out


def _plugin_tags(acc, plugin):
    return {t for t in acc.Tags()["tensors"] if acc.SummaryMetadata(t).plugin_data.plugin_name == plugin}


def _steps(acc, tag):
    return [e.step for e in acc.Tensors(tag)]


@pytest.fixture(scope="module")
def trained(tiny_tenslice, tmp_path_factory):
    """One smoke network (fold 0: 7 training and 1 validation infant), 2 epochs, histograms every epoch."""
    from kerasmyelin.cli.main import main

    run = tmp_path_factory.mktemp("tb") / "run"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(run),
                 "--fold", "0", "--quiet", "--set", "train.histogram_every_epochs=1"]) == 0
    return _runs(run / "fold-0" / "simple" / "tensorboard")


def test_scalars_loss_validation_mae_and_learning_rate(trained):
    import tensorflow as tf

    train, validation = trained["train"], trained["validation"]
    for tag in ("epoch_loss", "epoch_mae", "epoch_learning_rate", "epoch_epoch_seconds"):
        assert _steps(train, tag) == [0, 1], tag
    for tag in ("epoch_loss", "epoch_mae"):
        assert _steps(validation, tag) == [0, 1], tag
    lr = [float(tf.make_ndarray(e.tensor_proto)) for e in train.Tensors("epoch_learning_rate")]
    assert lr == pytest.approx([1e-3, 1e-3])


def test_images_inputs_once_and_the_scatter_every_curve_interval(trained):
    import tensorflow as tf

    images = _plugin_tags(trained["."], "images")
    inputs = sorted(t for t in images if t.startswith("validation_inputs/"))
    assert len(inputs) == 1 and inputs[0].startswith("validation_inputs/sub-"), images  # 1 validation infant
    assert _steps(trained["."], inputs[0]) == [0]
    width, height = (int(x) for x in tf.make_ndarray(trained["."].Tensors(inputs[0])[0].tensor_proto)[:2])
    assert (height, width) == (2 * 32 + 1, 5 * 32 + 4)  # T1w over T2w, levels a-e, 1-pixel gaps
    assert _steps(trained["."], "validation_scatter") == [0, 1]  # smoke: curve_every_epochs 1


def test_weight_histograms_of_every_weight(trained):
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn
    from kerasmyelin.training.config import load_experiment

    histograms = _plugin_tags(trained["."], "histograms")
    assert {"weights/t1w_a_conv1/kernel", "weights/t2w_e_conv2/bias", "weights/joint_dense1/kernel",
            "weights/age/kernel"} <= histograms
    model = build_myelin_cnn(load_experiment(SMOKE_YAML).model)
    assert histograms == {f"weights/{w.path}" for w in model.weights}
    assert _steps(trained["."], "weights/age/kernel") == [0, 1]


def test_graph_and_hparams_session(trained):
    from tensorboard.plugins.hparams import metadata

    assert trained["."].Tags()["graph"], "no op graph"
    assert "keras" in _plugin_tags(trained["train"], "graph_keras_model")  # Keras' conceptual graph
    (tag,) = _plugin_tags(trained["."], "hparams")
    assert tag == metadata.SESSION_START_INFO_TAG
    start = metadata.parse_session_start_info_plugin_data(trained["."].SummaryMetadata(tag).plugin_data.content)
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert values["experiment"] == "smoke" and values["fold"] == "0" and values["network"] == "simple"
    assert values["ages"] == "all" and values["ensemble.rule"] == "none"
    assert values["train.epochs"] == 2 and values["model.image_size"] == 32
    assert values["infants.train"] == 7 and values["infants.validation"] == 1
    assert "train.curve_every_epochs" not in values  # write intervals are not hyperparameters
    for key in ("loss", "mae", "val_loss", "val_mae"):
        assert _steps(trained["."], f"final/{key}") == [1], key


def test_slice_montage_puts_t1w_on_top_and_levels_left_to_right():
    images = {name: np.full((4, 4), (i + 1) / 10, np.float32) for i, name in enumerate(INPUT_NAMES)}
    images["t2w_e"][:] = 7.0  # out of range: clipped
    picture = slice_montage(images)
    assert picture.shape == (9, 24)
    assert picture[0, 0] == pytest.approx(0.1) and picture[0, 5] == pytest.approx(0.2)  # t1w_a, t1w_b
    assert picture[5, 0] == pytest.approx(0.6) and picture[8, 23] == 1.0  # t2w_a; t2w_e clipped
    assert picture[4, 0] == 1.0 and picture[0, 4] == 1.0  # white gaps


def test_weight_histogram_counts_finite_values_and_handles_constants():
    table = weight_histogram(np.r_[np.arange(10.0), np.nan, np.inf], buckets=5)
    assert table.shape == (5, 3) and table[:, 2].sum() == 10
    assert table[0, 0] == 0 and table[-1, 1] == 9
    constant = weight_histogram(np.zeros(7), buckets=3)
    assert constant[:, 2].sum() == 7 and constant[0, 0] == -0.5 and constant[-1, 1] == 0.5
    assert weight_histogram(np.array([np.nan])) is None


def test_monitor_set_shows_youngest_middle_oldest_and_caps_the_scatter(tiny_tenslice):
    from kerasmyelin.data.cache import read_cache

    data = read_cache(tiny_tenslice)
    monitor = MonitorSet.from_data(data, np.arange(16)[::-1], "validation", limit=5)
    assert monitor.age_months.size == 5 and monitor.images["t1w_a"].shape == (5, 32, 32)
    shown = monitor.age_months[monitor.shown()]
    assert shown[0] == data.age_months.min() and shown[-1] == data.age_months.max() and len(shown) == 3


def test_hparams_are_plain_values_without_write_intervals():
    from kerasmyelin.models.myelin_cnn import ModelConfig
    from kerasmyelin.training.config import TrainConfig

    values = network_hparams(ModelConfig(), TrainConfig(), {"fold": "full", "member": None})
    assert values["train.learning_rate"] == 1e-3 and values["train.select"] == "final"
    assert values["member"] == "none" and values["fold"] == "full"
    assert all(isinstance(v, (bool, int, float, str)) for v in values.values())
    assert not {"train.backup_every_epochs", "train.histogram_every_epochs"} & set(values)


def test_histogram_interval_is_checked():
    from kerasmyelin.errors import ConfigError
    from kerasmyelin.training.config import load_experiment

    assert load_experiment(SMOKE_YAML, ["train.histogram_every_epochs=0"]).train.histogram_every_epochs == 0
    with pytest.raises((ConfigError, ValueError), match="histogram_every_epochs"):
        load_experiment(SMOKE_YAML, ["train.histogram_every_epochs=-1"])


class _StopAfter(keras.callbacks.Callback):
    """Interrupts training after epoch ``at`` (0-based), as a kill would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_resumed_network_writes_its_once_only_summaries_once(tiny_tenslice, tmp_path, monkeypatch):
    from kerasmyelin.data.cache import read_cache
    from kerasmyelin.training import fit
    from kerasmyelin.training.config import load_experiment

    config = load_experiment(SMOKE_YAML, ["train.epochs=3", "train.histogram_every_epochs=2"])
    data = read_cache(tiny_tenslice)
    folder = tmp_path / "net"
    real = fit.make_callbacks
    monkeypatch.setattr(fit, "make_callbacks", lambda *a, **k: real(*a, **k) + [_StopAfter(1)])
    with pytest.raises(KeyboardInterrupt):
        fit.train_network(config.model, config.train, data, np.arange(12), np.arange(12, 16), folder, progress=False)
    monkeypatch.setattr(fit, "make_callbacks", real)
    fit.train_network(config.model, config.train, data, np.arange(12), np.arange(12, 16), folder, progress=False)
    root = _runs(folder / "tensorboard")["."]
    inputs = [t for t in _plugin_tags(root, "images") if t.startswith("validation_inputs/")]
    assert len(inputs) == 3  # youngest, middle, oldest of the 4 validation infants
    assert all(_steps(root, t) == [0] for t in inputs)
    assert len(root.Tensors("_hparams_/session_start_info")) == 1
    assert _steps(root, "validation_scatter") == [0, 1, 2]
    assert _steps(root, "weights/age/kernel") == [0, 2]
