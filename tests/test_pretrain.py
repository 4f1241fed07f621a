"""``kerasmyelin pretrain``: the model for real scans, built end to end (tiny shapes)."""

import json

import pytest

from kerasmyelin.cli.main import main

TINY = """name: {name}
model:
  branch_units: 4
  side_units: [4, 4]
  joint_units: [4, 4, 2]
train:
  epochs: 1
  batch_size: 4
  backup_every_epochs: 1
  curve_every_epochs: 1
cv:
  folds: 2
"""
ENSEMBLE = """ensemble:
  members:
    - {name: young, min_age_months: null, max_age_months: 16.0}
    - {name: old, min_age_months: 8.0, max_age_months: null}
  rule: gate
"""


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--set", "train.epochs=5"], "set the epochs with --epochs"),
    (["--tissue-curves", "mystery"], "unknown tissue curves 'mystery'"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--acquisition-variety", "1.5"], "acquisition_variety must be a share between 0 and 1"),
    (["--template-months", "0,6"], "--template-months needs --templates DIR"),
    (["--templates", "/nowhere/templates"], "infant template not found"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, argv, message):
    assert main(["pretrain", "--out", str(tmp_path / "p")] + argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_pretrain_builds_cohort_cache_and_cross_validated_runs_then_resumes(tmp_path, capsys):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "paper_simple.yaml").write_text(TINY.format(name="paper_simple"))
    (experiments / "paper_ensemble.yaml").write_text(TINY.format(name="paper_ensemble") + ENSEMBLE)
    out = tmp_path / "real"
    argv = ["pretrain", "--out", str(out), "--subjects", "16", "--epochs", "1", "--experiments", str(experiments),
            "--jobs", "2", "--quiet"]
    assert main(argv) == 0
    truth = json.loads((out / "cohort" / "derivatives" / "synth_truth" / "sub-001_truth.json").read_text())
    assert truth["subject"]["tissue_curves"] == "calibrated"
    manifest = json.loads((out / "cache" / "manifest.json").read_text())
    assert "brain_core" in json.dumps(manifest)
    for run in ("simple", "ensemble", "t1w_only", "t2w_only"):
        assert (out / run / "metrics.json").is_file()
        config = (out / run / "config.yaml").read_text()
        assert "intensity_curves: true" in config and "augment: true" in config
    assert "contrasts:\n  - T2w\n" in (out / "t2w_only" / "config.yaml").read_text()
    assert json.loads((out / "t1w_only" / "run.json").read_text())["contrasts"] == ["T1w"]
    note = (out / "MODEL.md").read_text()
    assert "t1w alone: MAE" in note
    assert f"--model {out / 'ensemble'}" in note and "synthetic infants only" in note
    # The run MODEL.md names serves a scan given as files.
    anat = out / "cohort" / "sub-001" / "anat"
    assert main(["predict", "--model", str(out / "ensemble"), "--t1", str(anat / "sub-001_T1w.nii.gz"),
                 "--t2", str(anat / "sub-001_T2w.nii.gz"), "--out", str(tmp_path / "result")]) == 0
    assert "estimate_months" in (tmp_path / "result" / "result.json").read_text()
    stamp = (out / "cohort" / "participants.tsv").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # a rerun reuses the cohort and every finished fold
    assert (out / "cohort" / "participants.tsv").stat().st_mtime_ns == stamp
    assert main(argv[:-1] + ["--seed", "3", "--quiet"]) == 2
    assert "was built with other settings (seed)" in capsys.readouterr().err
