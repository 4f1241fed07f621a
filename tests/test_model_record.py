"""A model carries its own settings (issue 19): the run folder's record, the record inside every
model.keras and every export, norms written once by evaluate and read at load, and the refusal of
models that carry none."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.cli.main import main  # noqa: E402
from kerasmyelin.data.cache import write_cache  # noqa: E402
from kerasmyelin.data.prepare import PrepConfig  # noqa: E402
from kerasmyelin.errors import InputError  # noqa: E402
from kerasmyelin.io.model_files import read_embedded_record, record as record_checksum  # noqa: E402
from kerasmyelin.model_record import ModelRecord, prep_from_argument  # noqa: E402
from kerasmyelin.runs import NoRecordError, RunFolder, resolve_model  # noqa: E402
from kerasmyelin.wholebrain.estimator import TrainedEstimator  # noqa: E402
from tests.conftest import SMOKE_YAML, learnable_tenslice  # noqa: E402

BRAIN_CORE = PrepConfig(image_size=32, intensity_reference="brain_core", core_depth_mm=8.0).as_dict()


def _cache(folder, source, prep):
    data = np.load(source / "tenslice.npz")
    manifest = {"created_by": "kerasmyelin tests"} if prep is None else {"created_by": "kerasmyelin tests",
                                                                          "prep_config": prep}
    return write_cache(folder, {k: data[k] for k in data.files if k not in ("participant_id", "age_months")},
                       data["participant_id"], data["age_months"], manifest)


@pytest.fixture(scope="module")
def brain_core_run(tmp_path_factory):
    """A two-fold smoke run (24 infants, no full/) on a cache prepared with brain-core scaling,
    evaluated (so it has its norms)."""
    root = tmp_path_factory.mktemp("record")
    cache = _cache(root / "cache", learnable_tenslice(root / "learnable", n=44), BRAIN_CORE)
    run = root / "run"
    assert main(["evaluate", "--config", str(SMOKE_YAML), "--data", str(cache), "--out", str(run), "--quiet"]) == 0
    return run, cache


def _result(out):
    return json.loads((out / "result.json").read_text())


def _predict(model, cohort, out, *extra):
    anat = cohort / "sub-001" / "anat"
    return main(["predict", "--model", str(model), "--t1", str(anat / "sub-001_T1w.nii.gz"),
                 "--t2", str(anat / "sub-001_T2w.nii.gz"), "--age-months", "6", "--no-saliency",
                 "--out", str(out), *extra])


def test_a_run_copied_anywhere_gives_the_estimate_it_gives_in_place(brain_core_run, tiny_cohort, tmp_path,
                                                                  capsys):
    run, cache = brain_core_run
    info = json.loads((run / "run.json").read_text())
    assert info["prep_config"] == BRAIN_CORE and info["image_size"] == 32 and len(info["inputs"]) == 10
    assert (run / "normative.json").is_file()
    assert _predict(run, tiny_cohort, tmp_path / "here") == 0
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, copy)
    moved = tmp_path / "cache-moved"
    shutil.move(str(cache), moved)  # the cache is gone from where run.json says it is
    try:
        capsys.readouterr()
        assert _predict(copy, tiny_cohort, tmp_path / "there") == 0
        printed = capsys.readouterr().out
    finally:
        shutil.move(str(moved), cache)
    here, there = _result(tmp_path / "here"), _result(tmp_path / "there")
    assert there["estimate_months"] == here["estimate_months"]
    assert there["interval_months"] == here["interval_months"] and there["grade"] == here["grade"]
    assert there["qc"]["warnings"] == here["qc"]["warnings"]
    assert "preparation" not in printed and "no normative model" not in printed
    # The same slices, prepared with brain-core scaling: what the network was trained on.
    assert TrainedEstimator.from_path(copy).prep_config == PrepConfig(**BRAIN_CORE)


def test_every_model_file_carries_the_record_and_serves_alone(brain_core_run, tmp_path):
    run, _ = brain_core_run
    inside = ModelRecord.loads(read_embedded_record(run / "fold-0" / "model.keras"))
    assert inside.prep_config == BRAIN_CORE and inside.normative is None
    assert inside == RunFolder(run).record().without_norms()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "fold-0" / "model.keras", alone / "m.keras")
    record_checksum(alone / "m.keras")
    source = resolve_model(alone / "m.keras")
    assert source.record.prep() == PrepConfig(**BRAIN_CORE) and source.run is None
    # A fold folder still in its run: the model's own record; the norms describe the whole run.
    fold = TrainedEstimator.from_path(run / "fold-1")
    assert fold.normative is None and fold.prep_config == PrepConfig(**BRAIN_CORE)


def test_norms_are_read_from_normative_json_not_refit(brain_core_run, monkeypatch):
    import kerasmyelin.norms.fit as fit
    import kerasmyelin.norms.store as store

    run, _ = brain_core_run
    stored = store.read_normative(run / "normative.json")

    def refit(*args, **kwargs):
        raise AssertionError("the norms were refit at load")

    for module, name in ((fit, "fit_normative"), (store, "fit_normative"), (store, "normative_from_run"),
                         (fit, "cross_validate_normative"), (store, "cross_validate_normative")):
        monkeypatch.setattr(module, name, refit)
    estimator = TrainedEstimator.from_path(run)
    assert estimator.normative == stored
    assert estimator.normative_report["coverage"] == json.loads((run / "normative.json").read_text())[
        "cross_validation"]["coverage"]


def test_a_run_without_norms_says_how_to_write_them(brain_core_run, tmp_path):
    run, _ = brain_core_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "normative.json").unlink()
    estimator = TrainedEstimator.from_path(copy)
    assert estimator.normative is None
    assert "kerasmyelin evaluate --out" in estimator.normative_report["unavailable"]
    assert main(["evaluate", "--out", str(copy), "--no-train"]) == 0
    assert TrainedEstimator.from_path(copy).normative == TrainedEstimator.from_path(run).normative


def test_a_model_from_before_records_is_refused_unless_prep_is_given(brain_core_run, tiny_cohort, tmp_path,
                                                                     capsys):
    from kerasmyelin.io.model_files import check_archive
    import zipfile

    run, _ = brain_core_run
    old = tmp_path / "old"
    old.mkdir()
    with zipfile.ZipFile(run / "fold-0" / "model.keras") as z, zipfile.ZipFile(old / "model.keras", "w") as out:
        for info in z.infolist():
            if info.filename != "kerasmyelin.json":
                out.writestr(info, z.read(info.filename))
    record_checksum(old / "model.keras")
    check_archive(old / "model.keras")  # the three members Keras writes: still a model kerasmyelin reads
    with pytest.raises(NoRecordError, match="--prep"):
        resolve_model(old)
    capsys.readouterr()
    assert _predict(old, tiny_cohort, tmp_path / "refused") == 2
    err = capsys.readouterr().err
    assert "carries no preparation settings" in err and "--prep paper" in err and str(old) in err
    assert not (tmp_path / "refused").exists()
    assert _predict(old, tiny_cohort, tmp_path / "given", "--prep", "paper") == 0
    assert "serving it with --prep paper" in capsys.readouterr().out
    # The cache it was trained on names the exact settings.
    source = resolve_model(old, prep_from_argument(str(run.parent / "cache")))
    assert source.record.prep() == PrepConfig(**BRAIN_CORE) and source.record_from == "--prep"


def test_prep_that_contradicts_the_record_is_refused(brain_core_run):
    run, _ = brain_core_run
    with pytest.raises(InputError, match="differs from the settings this model was trained with"):
        resolve_model(run, prep_from_argument("paper"))
    assert resolve_model(run, dict(BRAIN_CORE)).record.prep_config == BRAIN_CORE


def test_prep_argument_is_strict(tmp_path):
    from kerasmyelin.errors import ConfigError

    assert prep_from_argument("paper") == PrepConfig().as_dict()
    good = tmp_path / "prep.yaml"
    good.write_text("intensity_reference: brain_core\n")
    assert prep_from_argument(str(good))["intensity_reference"] == "brain_core"
    bad = tmp_path / "bad.yaml"
    bad.write_text("intensity_referense: brain_core\n")
    with pytest.raises(ConfigError, match="intensity_referense"):
        prep_from_argument(str(bad))
    with pytest.raises(ConfigError, match="expected 'paper'"):
        prep_from_argument(str(tmp_path / "missing.yaml"))
    old_cache = _cache(tmp_path / "oldcache", learnable_tenslice(tmp_path / "l"), None)
    with pytest.raises(InputError, match="records no prep_config"):
        prep_from_argument(str(old_cache))


def test_a_damaged_record_names_the_file(tmp_path):
    with pytest.raises(InputError, match="unknown key"):
        ModelRecord.from_json({"format": "kerasmyelin-model-record", "version": 1, "prep_config": {},
                               "image_size": 32, "colour": 1}, tmp_path / "x")
    with pytest.raises(InputError, match="version 9"):
        ModelRecord.from_json({"format": "kerasmyelin-model-record", "version": 9}, tmp_path / "x")
    with pytest.raises(InputError, match="not a kerasmyelin model record"):
        ModelRecord.loads("[1, 2]", tmp_path / "x")


def test_predict_data_averages_the_folds_and_checks_the_cache_preparation(brain_core_run, tmp_path, capsys):
    run, cache = brain_core_run
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(run), "--data", str(cache), "--out", str(out)]) == 0  # no full/: folds
    from kerasmyelin.io.predictions import read_predictions

    got = read_predictions(out)["predicted_months"]
    each = []
    for k in (0, 1):
        assert main(["predict", "--model", str(run / f"fold-{k}"), "--data", str(cache),
                     "--out", str(tmp_path / f"f{k}.csv")]) == 0
        each.append(read_predictions(tmp_path / f"f{k}.csv")["predicted_months"])
    np.testing.assert_allclose(got, np.mean(each, axis=0), atol=2e-4)  # 4-decimal CSV
    other = _cache(tmp_path / "headcache", cache, PrepConfig(image_size=32).as_dict())
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "prepared with other settings than the model was trained with" in err and "intensity_reference" in err


@pytest.mark.parametrize("fmt, name", [("keras", "m.keras"), ("saved_model", "sm")])
def test_exports_carry_the_record_with_the_norms(brain_core_run, tmp_path, fmt, name):
    from kerasmyelin.export.formats import read_export_record

    run, _ = brain_core_run
    assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / name)]) == 0
    got = read_export_record(tmp_path / name)
    assert got == RunFolder(run).record()
    assert got.prep_config == BRAIN_CORE and got.normative is not None
    if fmt == "keras":  # and the file still loads with Keras alone
        import keras

        keras.models.load_model(str(tmp_path / name), safe_mode=True, compile=False)


# -- site calibration (issue 18, part 2): stored with the model, applied by predict and exports ----

def _calibration_csv(cohort, path, rows=None, ages=None):
    """subject,t1w,t2w,age_months for the tiny cohort's infants (sub-001 twice: five scans)."""
    import csv as _csv

    with open(cohort / "participants.tsv") as fh:
        known = {r["participant_id"]: r["age_months"] for r in _csv.DictReader(fh, delimiter="\t")}
    listed = rows or [("sub-001", "sub-001"), ("sub-002", "sub-002"), ("sub-003", "sub-003"),
                      ("sub-004", "sub-004"), ("sub-001b", "sub-001")]
    lines = ["subject,t1w,t2w,age_months"]
    for i, (label, pid) in enumerate(listed):
        anat = cohort / pid / "anat"
        age = known[pid] if ages is None else ages[i]
        lines.append(f"{label},{anat / f'{pid}_T1w.nii.gz'},{anat / f'{pid}_T2w.nii.gz'},{age}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrate_stores_the_correction_with_the_model_and_predict_and_export_apply_it(
        brain_core_run, tiny_cohort, tmp_path, capsys):
    from kerasmyelin.export.formats import read_export_record

    run, _ = brain_core_run
    listing = _calibration_csv(tiny_cohort, tmp_path / "local.csv")
    out = tmp_path / "site"
    capsys.readouterr()
    assert main(["calibrate", "--model", str(run), "--csv", str(listing), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "site calibration (offset) on 5 scans" in printed and "leave-one-out" in printed and "no norms" in printed
    fitted = json.loads((out / "calibration.json").read_text())
    assert fitted["fit"]["kind"] == "offset" and fitted["fit"]["n"] == 5 and (out / "calibration.png").is_file()
    raw = {s["subject"]: s["estimate_months"] for s in fitted["scans"]}
    assert "/" not in json.dumps(fitted["scans"])  # no paths (they may name a patient)
    # predict applies it: the calibrated model's estimate is the run's plus the offset
    assert _predict(out, tiny_cohort, tmp_path / "one") == 0
    got = _result(tmp_path / "one")
    assert got["estimate_months"] == pytest.approx(raw["sub-001"] + fitted["fit"]["intercept"], abs=2e-3)
    assert got["calibration"]["n"] == 5 and got["grade"] is None and got["interval_months"] is None
    # ... and so does an export, whose record says so
    assert main(["export", str(out), "--format", "keras", "--out", str(tmp_path / "site.keras")]) == 0
    record = read_export_record(tmp_path / "site.keras")
    assert record.calibration["intercept"] == pytest.approx(fitted["fit"]["intercept"])
    assert record.prep_config == BRAIN_CORE
    capsys.readouterr()
    assert main(["calibrate", "--model", str(out), "--csv", str(listing), "--out", str(tmp_path / "again")]) == 2
    assert "already site-calibrated" in capsys.readouterr().err


@pytest.mark.parametrize("case, needle", [
    ("four scans", "needs at least 5"),
    ("age in weeks", "line 3: age 300 is outside"),
    ("no age", "no corrected age for sub-002"),
])
def test_calibrate_refuses_lists_it_cannot_use(brain_core_run, tiny_cohort, tmp_path, capsys, case, needle):
    run, _ = brain_core_run
    rows = [("sub-001", "sub-001"), ("sub-002", "sub-002"), ("sub-003", "sub-003"), ("sub-004", "sub-004")]
    if case == "four scans":
        listing = _calibration_csv(tiny_cohort, tmp_path / "l.csv", rows)
    else:
        ages = ["9.5", "300" if case == "age in weeks" else "", "14.9", "23.5", "9.5"]
        listing = _calibration_csv(tiny_cohort, tmp_path / "l.csv", rows + [("sub-001b", "sub-001")], ages)
    capsys.readouterr()
    assert main(["calibrate", "--model", str(run), "--csv", str(listing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(listing) in err
    assert not (tmp_path / "o").exists()


def test_site_calibration_recovers_a_known_shift_and_reports_it_held_out():
    from kerasmyelin.norms.calibration import fit_site_calibration

    rng = np.random.default_rng(0)
    age = np.linspace(0, 24, 30)
    est = 0.5 * age + 3 + rng.normal(0, 0.3, age.size)  # compressed and shifted, as on real scans
    fit = fit_site_calibration(age, est)
    assert fit.kind == "linear" and fit.slope == pytest.approx(2.0, rel=0.1)
    assert fit.raw_mae > 3 and fit.loo_mae < 1.0
    assert np.allclose(fit.apply(est), fit.intercept + fit.slope * est)
    few = fit_site_calibration(age[:6], est[:6])
    assert few.kind == "offset" and few.slope == 1.0
    flat = fit_site_calibration(age[:12], np.full(12, 5.0) + rng.normal(0, 0.01, 12), "linear")
    assert flat.slope == 4.0  # kept monotone and bounded, never a wild slope from a flat model
    with pytest.raises(InputError, match="at least 5"):
        fit_site_calibration(age[:4], est[:4])
