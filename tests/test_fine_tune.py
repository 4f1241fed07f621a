"""``train --init-from``: a run starts from a trained model's weights (simple model and ensemble
members), optionally with its slice branches frozen; a source that does not fit is refused by name."""

import shutil

import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.cli.main import main  # noqa: E402
from kerasmyelin.training.fit import load_trained  # noqa: E402
from tests.conftest import SMOKE_YAML, learnable_tenslice  # noqa: E402

ENSEMBLE = ["--set", "ensemble.members=[{name: young, max_age_months: 16}, {name: old, min_age_months: 8}]"]
# Adam moves every weight by about the learning rate per step, whatever the gradient: at 1e-9 a
# fine-tuned network must still equal its source to ~1e-8, while a fresh one differs by ~0.1.
STILL = ["--set", "train.learning_rate=1e-9"]


@pytest.fixture(scope="module")
def source_run(tiny_tenslice, tmp_path_factory):
    out = tmp_path_factory.mktemp("source") / "pretrained"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out),
                 "--quiet", "--set", "train.epochs=1"]) == 0
    return out


def _weights(path) -> dict[str, list[np.ndarray]]:
    model = load_trained(path)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.get_weights()}


def _max_diff(a: dict, b: dict, layers=None) -> float:
    names = layers if layers is not None else a.keys()
    return max(float(np.max(np.abs(x - y))) for n in names for x, y in zip(a[n], b[n]))


@pytest.mark.slow
def test_fine_tuned_simple_model_starts_from_the_source_weights(source_run, tiny_tenslice, tmp_path):
    out = tmp_path / "tuned"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.seed=5", "--init-from", str(source_run), *STILL]) == 0
    source = _weights(source_run / "full" / "simple" / "final.keras")
    tuned = _weights(out / "full" / "simple" / "final.keras")
    assert _max_diff(source, tuned) < 1e-6
    # the control: the same run without --init-from starts elsewhere
    fresh = tmp_path / "fresh"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(fresh), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.seed=5", *STILL]) == 0
    assert _max_diff(source, _weights(fresh / "full" / "simple" / "final.keras")) > 1e-2
    # the source is part of the experiment: config.yaml names it (absolute), so the run resumes anywhere
    assert f"init_from: {source_run}" in (out / "config.yaml").read_text()


def test_each_ensemble_member_starts_from_the_simple_model_with_its_branches_frozen(source_run, tiny_tenslice,
                                                                                  tmp_path):
    from kerasmyelin.levels import INPUT_NAMES

    out = tmp_path / "frozen"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out), "--quiet",
                 "--set", "train.epochs=2", "--set", "train.learning_rate=1e-2", *ENSEMBLE,
                 "--init-from", str(source_run), "--set", "train.freeze_branches=true"]) == 0
    source = _weights(source_run / "full" / "simple" / "final.keras")
    branches = [n for n in source if n.startswith(tuple(f"{i}_" for i in INPUT_NAMES))]
    combining = [n for n in source if n not in branches]
    assert len(branches) == 30 and "age" in combining  # two convolutions and a dense layer per slice
    for member in ("young", "old"):
        tuned = _weights(out / "full" / member / "final.keras")
        assert _max_diff(source, tuned, branches) == 0.0
        assert _max_diff(source, tuned, combining) > 1e-3


@pytest.mark.slow
def test_each_ensemble_member_starts_from_the_simple_model(source_run, tiny_tenslice, tmp_path):
    out = tmp_path / "ens"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out), "--quiet",
                 "--set", "train.epochs=1", *ENSEMBLE, "--init-from", str(source_run), *STILL]) == 0
    source = _weights(source_run / "full" / "simple" / "final.keras")
    for member in ("young", "old"):
        assert _max_diff(source, _weights(out / "full" / member / "final.keras")) < 1e-6
    # and an ensemble starts from an ensemble member by member (only the old member: one is enough)
    again = tmp_path / "ens2"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(again), "--quiet",
                 "--set", "train.epochs=1", *ENSEMBLE, "--init-from", str(out), "--member", "old", *STILL]) == 0
    assert _max_diff(_weights(out / "full" / "old" / "final.keras"),
                     _weights(again / "full" / "old" / "final.keras")) < 1e-6


@pytest.mark.slow
def test_a_simple_model_cannot_start_from_a_whole_ensemble(source_run, tiny_tenslice, tmp_path, capsys):
    ens = tmp_path / "ens"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(ens), "--quiet",
                 "--set", "train.epochs=1", *ENSEMBLE]) == 0
    code = main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(tmp_path / "x"),
                 "--quiet", "--init-from", str(ens)])
    assert code == 2
    assert "holds the networks old, young and none named 'simple'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("case, message", [
    ("not a run", "not a kerasmyelin run (no config.yaml), fold folder or .keras file"),
    ("missing", "model not found"),
    ("other architecture", "the architectures differ at layer 't1w_a_dense'"),
    ("other image size", "trained on 32x32 images and this run's are 40x40"),
    ("other preparation", "intensity_reference: 'head' there, 'brain_core' here"),
    ("only folds", "no model trained on every infant (full/model.keras), only fold models"),
    ("freeze alone", "train.freeze_branches keeps trained branches as they are: it needs init_from"),
    ("freeze alone by --set", "train.freeze_branches keeps trained branches as they are: it needs init_from"),
])
def test_a_source_that_does_not_fit_is_refused_by_name(case, message, source_run, tiny_tenslice, tmp_path, capsys):
    from kerasmyelin.data.cache import write_cache
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.data.shards import open_tenslice

    data, source, extra = tiny_tenslice, str(source_run), []
    if case == "not a run":
        (tmp_path / "elsewhere").mkdir()
        source = str(tmp_path / "elsewhere")
    elif case == "missing":
        source = str(tmp_path / "nowhere")
    elif case == "other architecture":
        extra = ["--set", "model.branch_units=8"]
    elif case == "other image size":
        data = learnable_tenslice(tmp_path / "big", size=40)
        extra = ["--set", "model.image_size=40"]
    elif case == "other preparation":
        cache = open_tenslice(tiny_tenslice)
        prep = PrepConfig(image_size=32, intensity_reference="brain_core").as_dict()
        data = write_cache(tmp_path / "core", cache.images_at(np.arange(len(cache.participant_id))),
                           cache.participant_id.tolist(), cache.age_months, {"prep_config": prep})
    elif case == "only folds":
        folds = tmp_path / "folds"
        shutil.copytree(source_run, folds)
        (folds / "full").rename(folds / "fold-0")  # a cross-validated run without its full model
        shutil.copytree(folds / "fold-0", folds / "fold-1")
        source = str(folds)
    args = ["train", "--config", str(SMOKE_YAML), "--data", str(data), "--out", str(tmp_path / "run"), "--quiet",
            "--set", "train.epochs=1", *extra]
    if case == "freeze alone":
        args += ["--freeze-branches"]
    elif case == "freeze alone by --set":
        args += ["--set", "train.freeze_branches=true"]
    else:
        args += ["--init-from", source]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    if case in ("not a run", "missing"):
        assert source in err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
