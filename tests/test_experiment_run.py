"""Run folders, cross-validation, the report and the train / evaluate / predict commands, on a
tiny learnable cache with the smoke configuration (32x32 images, two epochs, two folds)."""

import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.cli.main import main  # noqa: E402
from kerasmyelin.errors import ConfigError, InputError  # noqa: E402
from kerasmyelin.training.config import load_experiment  # noqa: E402
from kerasmyelin.io.predictions import read_predictions  # noqa: E402
from kerasmyelin.runs import RunFolder  # noqa: E402
from kerasmyelin.training.experiment import open_run, run_fold  # noqa: E402
from kerasmyelin.training.fit import load_trained  # noqa: E402
from tests.conftest import REPO, SMOKE_YAML, learnable_tenslice  # noqa: E402

ENSEMBLE_SMOKE = ["ensemble.members=[{name: young, max_age_months: 16}, {name: old, min_age_months: 8}]"]


@pytest.fixture(scope="module")
def ensemble_run(tiny_tenslice, tmp_path_factory):
    """A two-fold smoke ensemble run, trained once for this module."""
    out = tmp_path_factory.mktemp("runs") / "ens"
    code = main(["evaluate", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out),
                 "--quiet", *[a for o in ENSEMBLE_SMOKE for a in ("--set", o)]])
    assert code == 0
    return out


def test_run_folder_holds_config_splits_and_per_fold_outputs(ensemble_run, tiny_tenslice):
    splits = json.loads((ensemble_run / "splits.json").read_text())["folds"]
    assert len(splits) == 2
    tested = [pid for fold in splits for pid in fold["test"]]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 16  # each infant tested once
    for fold in splits:
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["validation"]))
    stored = load_experiment(ensemble_run / "config.yaml")
    assert stored.is_ensemble and stored.train.epochs == 2
    for k in range(2):
        fold = ensemble_run / f"fold-{k}"
        for member in ("young", "old"):
            assert (fold / member / "final.keras").exists()
            assert (fold / member / "learning_curve.png").exists()
        preds = read_predictions(fold / "predictions.csv")
        assert set(preds) >= {"participant_id", "age_months", "predicted_months", "young_months",
                              "old_months", "average_months", "gate_months"}
        # the exported graph is the configured rule applied to the members
        np.testing.assert_allclose(preds["predicted_months"], preds["gate_months"], atol=2e-3)


def test_members_train_only_on_their_age_range(tiny_tenslice, tmp_path, monkeypatch):
    import kerasmyelin.training.fit as fit
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn

    seen = {}

    def spy(model_config, train, data, train_idx, val_idx, folder, *, name, title="", progress=True, **_):
        seen[(folder.parent.name, name)] = (np.asarray(train_idx), np.asarray(val_idx))
        return build_myelin_cnn(model_config, name=name)  # untrained: only the selection is under test

    monkeypatch.setattr(fit, "train_network", spy)
    config = load_experiment(SMOKE_YAML, ENSEMBLE_SMOKE)
    run, config, data, splits = open_run(tmp_path / "r", config, tiny_tenslice)
    for k in range(len(splits)):
        run_fold(run, config, data, splits, k, progress=False)
    assert len(seen) == 4
    ranges = {"young": (-np.inf, 16.0), "old": (8.0, np.inf)}
    for (fold, member), (train_idx, val_idx) in seen.items():
        k = int(fold.split("-")[1])
        ages = data.age_months[np.r_[train_idx, val_idx].astype(int)]
        lo, hi = ranges[member]
        assert ages.size and ages.min() >= lo and ages.max() <= hi, (fold, member)
        used = set(data.participant_id[np.r_[train_idx, val_idx].astype(int)].tolist())
        assert not used & set(splits[k]["test"])
        assert set(data.participant_id[train_idx].tolist()) <= set(splits[k]["train"])


def test_report_scores_both_rules_beside_the_members(ensemble_run):
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"ensemble (gate, exported)", "ensemble (average)",
                                      "young member alone", "old member alone"}
    for m in metrics["models"].values():
        assert {"spearman_r", "spearman_p", "pearson_r", "rmse", "mae", "bias", "loa_low", "loa_high", "bins"} <= set(m)
    assert metrics["n"] == 16
    assert metrics["oracle_floor"] is None  # no synthetic ground truth beside this cache
    assert (ensemble_run / "figure4.png").stat().st_size > 0


def test_saved_fold_model_reproduces_the_fold_predictions(ensemble_run, tiny_tenslice, tmp_path, capsys):
    out = tmp_path / "p.csv"
    preds = read_predictions(ensemble_run / "fold-1" / "predictions.csv")
    ids = ",".join(preds["participant_id"].tolist())
    assert main(["predict", "--model", str(ensemble_run / "fold-1"), "--data", str(tiny_tenslice),
                 "--subjects", ids, "--out", str(out)]) == 0
    again = read_predictions(out)
    np.testing.assert_allclose(again["predicted_months"], preds["predicted_months"], atol=2e-3)
    # The summary line is the metrics of the rows written.
    err = again["predicted_months"] - again["age_months"]
    assert f"{len(err)} infants: MAE {np.abs(err).mean():.2f} months" in capsys.readouterr().out


def test_reopening_with_another_config_or_other_data_is_refused(ensemble_run, tiny_tenslice, tmp_path):
    other = load_experiment(SMOKE_YAML, ["train.epochs=3"])
    with pytest.raises(ConfigError, match="different configuration"):
        open_run(ensemble_run, other, tiny_tenslice)
    changed = learnable_tenslice(tmp_path / "other", seed=5)
    with pytest.raises(InputError, match="differs"):
        open_run(ensemble_run, None, changed)


def test_evaluate_gathers_independently_trained_folds(tiny_tenslice, tmp_path):
    out = tmp_path / "simple"
    args = ["--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out), "--quiet",
            "--set", "train.epochs=1"]
    assert main(["train", *args, "--fold", "1"]) == 0
    assert main(["evaluate", "--out", str(out), "--no-train"]) == 2  # fold 0 still missing
    assert main(["train", *args, "--fold", "0"]) == 0
    assert main(["evaluate", "--out", str(out), "--no-train"]) == 0
    run, config, data, splits = open_run(out, None, None)
    merged = RunFolder(run).gather_predictions(len(splits))
    assert sorted(merged["participant_id"].tolist()) == sorted(data.participant_id.tolist())


def test_simple_fold_model_is_a_safe_keras_file(tiny_tenslice, tmp_path):
    config = load_experiment(SMOKE_YAML, ["train.epochs=1"])
    run, config, data, splits = open_run(tmp_path / "r", config, tiny_tenslice)
    folder = run_fold(run, config, data, splits, 0, progress=False)
    model = load_trained(folder / "model.keras")
    final = load_trained(folder / "simple" / "final.keras")
    for a, b in zip(model.get_weights(), final.get_weights()):
        np.testing.assert_array_equal(a, b)
    with open(folder / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(splits[0]["test"])


def test_image_size_mismatch_is_a_clear_error(tiny_tenslice, tmp_path):
    config = load_experiment(REPO / "experiments" / "paper_simple.yaml")
    with pytest.raises(InputError, match="image_size"):
        open_run(tmp_path / "r", config, tiny_tenslice)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "reproduce", "doctor"])
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_predict_names_a_missing_model(tiny_tenslice, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["predict", "--model", str(empty), "--data", str(tiny_tenslice)]) == 2
    assert str(empty) in capsys.readouterr().err


def test_unknown_setting_on_the_command_line_is_refused(tiny_tenslice, tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out",
                 str(tmp_path / "x"), "--set", "train.epochz=3"])
    assert code == 2
    assert "epochz" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_copied_run_folder_still_opens(ensemble_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ensemble_run, copy)
    run, config, data, splits = open_run(copy, None, None)
    assert config.is_ensemble and len(splits) == 2


def test_damaged_run_description_is_named(ensemble_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ensemble_run, copy)
    (copy / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="run.json"):
        open_run(copy, None, None)


def test_full_model_keeps_every_infant_when_final_weights_are_used(tiny_tenslice, tmp_path):
    out = tmp_path / "deploy"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out),
                 "--quiet", "--set", "train.epochs=1"]) == 0
    split = json.loads((out / "full" / "splits.json").read_text())["folds"][0]
    assert len(split["train"]) == 16 and split["validation"] == [] and split["test"] == []
    assert (out / "full" / "model.keras").exists()
    # the stored experiment is reused: no --config / --data needed to go on with a fold
    assert main(["train", "--out", str(out), "--fold", "0", "--quiet"]) == 0


@pytest.mark.slow
def test_ensemble_members_as_separate_jobs_equal_one_job(ensemble_run, tiny_tenslice, tmp_path, capsys):
    out = tmp_path / "ens"
    sets = [a for o in ENSEMBLE_SMOKE for a in ("--set", o)]
    args = ["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(out), "--quiet",
            *sets, "--fold", "0"]
    assert main([*args, "--member", "young"]) == 0
    assert "waits for old (--member old)" in capsys.readouterr().out
    assert not (out / "fold-0" / "predictions.csv").exists()
    assert main(["evaluate", "--out", str(out), "--no-train"]) == 2
    assert "fold-0 (old)" in capsys.readouterr().err
    assert main([*args, "--member", "old"]) == 0  # the last member assembles the fold
    assert (out / "fold-0" / "predictions.csv").read_text() == (ensemble_run / "fold-0" / "predictions.csv").read_text()
    assert not list(out.rglob(".kerasmyelin.lock"))  # every job let go of its lock


def test_unknown_member_is_refused_with_the_names(tiny_tenslice, tmp_path, capsys):
    code = main(["train", "--config", str(SMOKE_YAML), "--data", str(tiny_tenslice), "--out", str(tmp_path / "x"),
                 "--quiet", "--fold", "0", "--member", "middle"])
    assert code == 2
    assert "no network 'middle'; its networks are simple" in capsys.readouterr().err


def test_a_run_from_before_records_gains_its_record_when_reopened_with_its_cache(tmp_path):
    from kerasmyelin.training.config import load_experiment as load

    cache = learnable_tenslice(tmp_path / "learnable")
    run = tmp_path / "run"
    open_run(run, load(SMOKE_YAML), cache)
    info = json.loads((run / "run.json").read_text())
    ages = np.load(cache / "tenslice.npz")["age_months"]
    assert info["trained_age_range_months"] == [round(float(ages.min()), 3), round(float(ages.max()), 3)]
    old = {k: info[k] for k in ("data", "sha256", "written_by")}
    (run / "run.json").write_text(json.dumps(old))
    # Served exactly from the very cache it was trained on (same sha256) while that is there ...
    assert RunFolder(run).record().prep_config == info["prep_config"]
    open_run(run, None, None)
    assert json.loads((run / "run.json").read_text()) == info  # ... and recorded for good when reopened
