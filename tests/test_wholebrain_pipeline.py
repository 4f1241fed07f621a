"""``kerasmyelin predict`` on whole-brain NIfTI: one infant with its report, BIDS and CSV batches,
failures reported per infant, bad inputs named. A smoke run (32x32 images) stands in for a model."""

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.cli.main import main
from kerasmyelin.data.prepare import PrepConfig
from kerasmyelin.errors import InputError
from kerasmyelin.evaluation.subject_report import GRADE_COLOURS
from kerasmyelin.norms.fit import fit_normative
from kerasmyelin.norms.model import (
    AGE_OUTSIDE,
    BEYOND_BOUND,
    BRAIN_SIZE,
    ESTIMATE_OUTSIDE,
    GRADES,
    NOT_GRADED,
    WITHIN,
)
from kerasmyelin.io.output_dir import output_kind
from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.wholebrain.batch import NO_GRADE, _row, grade_counts, grade_summary
from kerasmyelin.wholebrain.manifest import Job
from kerasmyelin.wholebrain.estimator import TrainedEstimator
from kerasmyelin.wholebrain.pipeline import (
    PreparedScan,
    estimate_subject,
    prepare_scan,
    write_subject_files,
)
from tests.conftest import SMOKE_YAML, learnable_tenslice
from tests.test_normative import simulated
from tests.test_subject_report import pdf_text, pixels


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A two-fold smoke run on 44 fake infants: enough out-of-fold estimates for a normative model
    (its cross-validation fits on one fold of 22, above the minimum of 20)."""
    root = tmp_path_factory.mktemp("wb")
    data = learnable_tenslice(root / "tenslice", n=44)
    out = root / "run"
    assert main(["evaluate", "--config", str(SMOKE_YAML), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    return out


def _anat(cohort, pid, contrast):
    return cohort / pid / "anat" / f"{pid}_{contrast}.nii.gz"


def test_one_infant_gets_estimate_interval_grade_and_report(smoke_run, tiny_cohort, tmp_path, capsys):
    pid = "sub-001"
    out = tmp_path / "one"
    code = main(["predict", "--model", str(smoke_run), "--t1", str(_anat(tiny_cohort, pid, "T1w")),
                 "--t2", str(_anat(tiny_cohort, pid, "T2w")), "--age-months", "6", "--subject", "infant-A",
                 "--out", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    lo, hi = result["interval_months"]
    assert lo < result["estimate_months"] < hi and result["interval_level"] == 0.9
    assert 0.0 < result["norms"]["coverage"] <= 1.0 and result["norms"]["n"] == 44  # measured, not assumed
    assert result["grade"] in GRADES
    assert (result["grade"] == NOT_GRADED) == bool(result["grade_reason"]) == bool(result["grade_reason_text"])
    assert result["gap_months"] == pytest.approx(result["estimate_months"] - 6, abs=2e-3)
    assert set(result["levels"]) == set("abcde") and set(result["months_by_input"]) == set(INPUT_NAMES)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    # The estimate is the model's output on the slices written beside it.
    slices = np.load(out / "slices.npz")
    estimator = TrainedEstimator.from_path(smoke_run)
    assert estimator.predict({n: slices[n] for n in INPUT_NAMES}) == pytest.approx(result["estimate_months"], abs=2e-3)
    printed = capsys.readouterr().out
    assert "infant-A: estimated myelination age" in printed
    assert (f"NOT GRADED: check the input ({result['grade_reason_text']})" in printed
            if result["grade"] == NOT_GRADED else f"months: {result['grade']}" in printed)


def test_earlier_results_are_kept_and_a_failed_report_leaves_no_half_folder(smoke_run, tiny_cohort, tmp_path,
                                                                               monkeypatch, capsys):
    pid = "sub-001"
    args = ["predict", "--model", str(smoke_run), "--t1", str(_anat(tiny_cohort, pid, "T1w")),
            "--t2", str(_anat(tiny_cohort, pid, "T2w")), "--no-saliency"]
    out = tmp_path / "one"
    assert main(args + ["--out", str(out)]) == 0
    before = (out / "result.json").read_bytes()
    # A second run into the same folder is refused without --overwrite; the first results stay.
    assert main(args + ["--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "result.json").read_bytes() == before
    # A report that fails half-way writes nothing: no slices.npz without its result.json.
    import kerasmyelin.evaluation.subject_report as subject_report

    def broken(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(subject_report, "render_subject_report", broken)
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="disk full"):
        main(args + ["--out", str(fresh)])
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*"))
    with pytest.raises(OSError, match="disk full"):
        main(args + ["--out", str(out), "--overwrite"])
    assert (out / "result.json").read_bytes() == before
    monkeypatch.undo()
    assert main(args + ["--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["created_by"].startswith("kerasmyelin")


def test_bids_batch_reports_a_broken_infant_and_finishes_the_others(smoke_run, tiny_cohort, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(tiny_cohort, bids, ignore=shutil.ignore_patterns("derivatives"))
    broken = _anat(bids, "sub-002", "T2w")
    broken.write_bytes(broken.read_bytes()[:4000])  # truncated
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(smoke_run), "--bids", str(bids), "--out", str(out)]) == 1
    with open(out / "predictions.csv", newline="") as fh:
        rows = {r["subject"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["sub-001", "sub-002", "sub-003", "sub-004"]
    # The error names the file by its role: paths and file names can carry a patient's name.
    assert rows["sub-002"]["status"] == "failed" and rows["sub-002"]["error"].startswith("<t2w>: ")
    assert "sub-002_T2w" not in rows["sub-002"]["error"] and str(tmp_path) not in rows["sub-002"]["error"]
    assert "truncated" in rows["sub-002"]["error"]
    for pid in ("sub-001", "sub-003", "sub-004"):
        assert rows[pid]["status"] == "ok" and float(rows[pid]["estimate_months"]) == pytest.approx(
            json.loads((out / pid / "result.json").read_text())["estimate_months"], abs=1e-3)
        assert rows[pid]["grade"] in GRADES  # ages come from participants.tsv
        assert bool(rows[pid]["grade_reason"]) == (rows[pid]["grade"] == NOT_GRADED)
    printed = capsys.readouterr().out
    assert "sub-002: skipped" in printed
    assert "grades: " + ", ".join(f"{n} {g}" for g, n in grade_counts(list(rows.values())).items() if n) in printed
    # The batch folder is marked as ours; a second batch into it needs --overwrite, and then
    # holds only the new batch's infants.
    assert output_kind(out) == "predict"
    assert main(["predict", "--model", str(smoke_run), "--bids", str(bids), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    shutil.rmtree(bids / "sub-002")
    (out / "sub-001" / "stale.txt").write_text("from the first batch")
    assert main(["predict", "--model", str(smoke_run), "--bids", str(bids), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "sub-001" / "stale.txt").exists() and not list(tmp_path.glob(".preds*"))
    assert not list(tmp_path.glob("preds.kerasmyelin-*"))
    with open(out / "predictions.csv", newline="") as fh:
        assert sorted(r["subject"] for r in csv.DictReader(fh)) == ["sub-001", "sub-003", "sub-004"]


def test_csv_batch_names_bad_rows(smoke_run, tiny_cohort, tmp_path):
    rows = [("ok", "sub-001", "sub-001", "3.5"), ("weeks", "sub-001", "sub-001", "40 weeks"),
            ("missing", "sub-001", "sub-404", ""), ("other-head", "sub-001", "sub-003", ""),
            ("../escape", "sub-001", "sub-001", "")]
    listing = tmp_path / "scans.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject", "t1w", "t2w", "age_months"])
        for label, a, b, age in rows:
            w.writerow([label, _anat(tiny_cohort, a, "T1w"), tiny_cohort / b / "anat" / f"{b}_T2w.nii.gz", age])
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(smoke_run), "--csv", str(listing), "--out", str(out)]) == 1
    with open(out / "predictions.csv", newline="") as fh:
        got = {r["subject"]: r for r in csv.DictReader(fh)}
    assert got["ok"]["status"] == "ok"
    assert "not a number of months" in got["weeks"]["error"]
    assert "file not found (line 4, column t2w)" in got["missing"]["error"]  # by row and role, not by path
    assert "sub-404_T2w" not in got["missing"]["error"]
    assert "same head" in got["other-head"]["error"]
    assert "names the output folder" in got["line-6"]["error"] and not (tmp_path / "escape").exists()


def _fake_estimator_and_scan():
    """Norms from 400 simulated typical infants (-1.7 to 24 months), blank 32x32 slices: what
    estimate_subject and write_subject_files read, without a network (the estimate is given)."""
    from types import SimpleNamespace

    age, est, folds = simulated()
    estimator = SimpleNamespace(image_size=32, normative=fit_normative(age, est, folds), normative_report={},
                                training_prep={}, version="fake (sha256 000000000000)")
    blank = np.zeros((32, 32), np.float32)
    scan = PreparedScan(images=dict.fromkeys(INPUT_NAMES, blank), levels={}, fit=None,
                        qc={"warnings": [], "level_finder": {"dice": 0.9}})
    return estimator, scan


# (corrected age, estimate as a function of the norms, expected reason); None: graded
WITHHELD = {
    "issue 19's infant: 1 month, estimated at 30.0": (1.0, lambda norm: 30.0, ESTIMATE_OUTSIDE),
    "a typical 1-month-old": (1.0, lambda norm: float(norm.expected(1.0)), None),
    "older than every trained infant": (25.0, lambda norm: 23.0, AGE_OUTSIDE),
    "6 SD ahead, inside the trained ages": (6.0, lambda norm: float(norm.expected(6.0) + 6 * norm.gap_sd(6.0)),
                                            BEYOND_BOUND),
}


@pytest.mark.parametrize("case", WITHHELD)
def test_issue_19_result_and_report_withhold_the_grade_for_inputs_unlike_the_training_infants(tmp_path, case):
    """A 1-month-old estimated at 30.0 months was "within norms" in a green box, beside warnings."""
    age, estimate, reason = WITHHELD[case]
    estimator, scan = _fake_estimator_and_scan()
    result, _ = estimate_subject(estimator, scan, subject="infant-1", age_months=age, saliency=None,
                                 estimate=estimate(estimator.normative))
    write_subject_files(tmp_path, result, scan, None, estimator, report=True)
    saved = json.loads((tmp_path / "result.json").read_text())
    text = "\n".join(pdf_text((tmp_path / "report.pdf").read_bytes()))
    green = pixels(tmp_path / "report.png", GRADE_COLOURS[WITHIN])
    row = _row(Job("infant-1", None, None, age), saved, None)  # its predictions.csv row
    if reason is None:
        assert saved["grade"] == row["grade"] == WITHIN and saved["grade_reason"] is None and green > 500
        assert not saved["qc"]["warnings"] and "NOT GRADED" not in text and row["grade_reason"] == ""
        return
    assert saved["grade"] == row["grade"] == NOT_GRADED and saved["grade_reason"] == row["grade_reason"] == reason
    assert saved["grade_reason_text"] and "NOT GRADED: check the input" in text and green == 0
    assert any("not graded" in w or "outside the ages" in w for w in saved["qc"]["warnings"])


def test_an_adult_sized_brain_is_not_graded_even_with_a_typical_estimate(tmp_path):
    """Issue 19: an adult's brain got an estimate of 14 months and a grade. The pipeline's size flag
    (``qc["grade_withheld"]``) withholds it before the norms would grade it "within norms"."""
    from kerasmyelin.wholebrain.plausibility import brain_size_warning

    estimator, scan = _fake_estimator_and_scan()
    why = brain_size_warning(1894.0)
    scan.qc.update(grade_withheld={"reason": BRAIN_SIZE, "text": why}, warnings=[f"{why}: not graded"])
    typical = float(estimator.normative.expected(14.0))
    result, _ = estimate_subject(estimator, scan, subject="adult", age_months=14.0, saliency=None, estimate=typical)
    assert abs(result["z"]) < 0.1  # the norms alone would say "within norms"
    assert result["grade"] == NOT_GRADED and result["grade_reason"] == BRAIN_SIZE and result["grade_reason_text"] == why
    write_subject_files(tmp_path, result, scan, None, estimator, report=True)
    text = "\n".join(pdf_text((tmp_path / "report.pdf").read_bytes()))
    assert "NOT GRADED: check the input" in text and "far larger than an infant" in text.replace("\n", " ")
    assert pixels(tmp_path / "report.png", GRADE_COLOURS[WITHIN]) == 0


def test_batch_summary_counts_every_grade():
    rows = [{"status": "ok", "grade": WITHIN}, {"status": "ok", "grade": NOT_GRADED},
            {"status": "ok", "grade": NOT_GRADED}, {"status": "ok", "grade": "ahead of norms"},
            {"status": "ok", "grade": ""}, {"status": "failed", "grade": ""}]
    counts = grade_counts(rows)
    assert list(counts)[:5] == list(GRADES) and counts[NOT_GRADED] == 2 and counts["ahead of norms"] == 1
    assert counts["marked delay"] == 0 and counts[NO_GRADE] == 1 and sum(counts.values()) == 5
    assert grade_summary(rows) == ("grades: 1 within norms, 1 ahead of norms, 2 not graded: check the input (why: "
                                   "the grade_reason column), 1 no grade (no corrected age or no norms)")


def test_a_level_outside_the_field_of_view_is_named(tiny_cohort, tmp_path):
    img = nib.load(_anat(tiny_cohort, "sub-001", "T1w"))
    data = np.asarray(img.dataobj)
    top = nib.Nifti1Image(data[:, :, data.shape[2] // 2:], img.affine @ np.diag([1, 1, 1, 1]))
    top.affine[:3, 3] = (img.affine @ [0, 0, data.shape[2] // 2, 1])[:3]
    cut = nib.Nifti1Image(data[:, :, data.shape[2] // 2:],
                          np.vstack([np.c_[img.affine[:3, :3], top.affine[:3, 3]], [0, 0, 0, 1]]))
    for c in ("T1w", "T2w"):
        src = nib.load(_anat(tiny_cohort, "sub-001", c))
        nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[:, :, data.shape[2] // 2:], cut.affine), tmp_path / f"{c}.nii.gz")
    with pytest.raises(InputError, match=r"level a .* below the imaged slices"):
        prepare_scan(tmp_path / "T1w.nii.gz", tmp_path / "T2w.nii.gz", prep=PrepConfig(image_size=32))


@pytest.mark.parametrize("problem", ["4d", "2d", "nan", "constant", "missing"])
def test_bad_volumes_exit_with_the_file_named(smoke_run, tiny_cohort, tmp_path, problem, capsys):
    bad = tmp_path / "bad_T1w.nii.gz"
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    arrays = {"4d": np.ones((8, 8, 4, 3), np.float32), "2d": np.ones((8, 8), np.float32),
              "nan": np.full((8, 8, 4), np.nan, np.float32), "constant": np.zeros((8, 8, 4), np.float32)}
    if problem in arrays:
        nib.save(nib.Nifti1Image(arrays[problem], affine), bad)
    code = main(["predict", "--model", str(smoke_run), "--t1", str(bad),
                 "--t2", str(_anat(tiny_cohort, "sub-001", "T2w")), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad_T1w.nii.gz" in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_age_in_the_wrong_unit_is_refused(smoke_run, tiny_cohort, tmp_path, capsys):
    code = main(["predict", "--model", str(smoke_run), "--t1", str(_anat(tiny_cohort, "sub-001", "T1w")),
                 "--t2", str(_anat(tiny_cohort, "sub-001", "T2w")), "--age-months", "160", "--out", str(tmp_path)])
    assert code == 2 and "months (not weeks or days)" in capsys.readouterr().err


def test_integer_voxels_kept_as_stored_prepare_the_same_images(tiny_cohort, monkeypatch):
    """``prepare_scan`` keeps int16 voxels as stored (no whole-volume float32 copy); the prepared
    slices, levels and pair checks are bitwise those of the float32 path."""
    from kerasmyelin.io import nifti

    pid = "sub-002"
    t1, t2 = _anat(tiny_cohort, pid, "T1w"), _anat(tiny_cohort, pid, "T2w")
    assert nifti.load_volume(t1, keep_integers=True)[0].dtype == np.int16
    kept = prepare_scan(t1, t2)
    real = nifti.load_volume
    monkeypatch.setattr(nifti, "load_volume", lambda path, **_: real(path))  # float32 everywhere
    converted = prepare_scan(t1, t2)
    for name in INPUT_NAMES:
        np.testing.assert_array_equal(kept.images[name], converted.images[name])
    assert kept.levels == converted.levels and kept.qc["same_head"] == converted.qc["same_head"]


def test_a_started_preparing_pool_gives_the_one_process_rows_and_stays_open(smoke_run, tiny_cohort, tmp_path):
    import os

    from kerasmyelin.wholebrain.batch import PreparingPool, run_batch
    from kerasmyelin.wholebrain.manifest import jobs_from_bids

    jobs = jobs_from_bids(tiny_cohort)
    estimator = TrainedEstimator.from_path(smoke_run)
    alone = run_batch(jobs, estimator, tmp_path / "alone", progress=False, workers=1)
    with PreparingPool(2) as pool:
        pooled = run_batch(jobs, estimator, tmp_path / "pooled", progress=False, workers=pool)
        assert pool.executor.submit(os.getpid).result() != os.getpid()  # run_batch left it open
    assert pooled == alone and all(r["status"] == "ok" for r in alone)
    with pytest.raises(ValueError, match="at least 2"):
        PreparingPool(1)
