"""The written cohort: BIDS layout, loadable NIfTI with sane geometry, truth, cache, determinism."""

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kerasmyelin.cli.main import main
from kerasmyelin.data.cache import read_cache
from kerasmyelin.levels import INPUT_NAMES, LEVEL_KEYS
from kerasmyelin.synth.cohort import CohortConfig
from kerasmyelin.synth.dataset import PARTICIPANT_COLUMNS, build_cohort


def _tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_bids_layout_and_participants(tiny_cohort):
    assert json.loads((tiny_cohort / "dataset_description.json").read_text())["BIDSVersion"]
    rows = _tsv(tiny_cohort / "participants.tsv")
    assert list(rows[0]) == list(PARTICIPANT_COLUMNS) and len(rows) == 4
    assert {r["field_strength"] for r in rows} == {"3", "1.5"}
    for r in rows:
        for contrast in ("T1w", "T2w"):
            assert (tiny_cohort / r["participant_id"] / "anat" / f"{r['participant_id']}_{contrast}.nii.gz").is_file()


def test_every_volume_loads_with_a_sane_affine(tiny_cohort):
    for r in _tsv(tiny_cohort / "participants.tsv"):
        for contrast in ("T1w", "T2w"):
            stem = tiny_cohort / r["participant_id"] / "anat" / f"{r['participant_id']}_{contrast}"
            img = nib.load(f"{stem}.nii.gz")
            side = json.loads(Path(f"{stem}.json").read_text())
            data = np.asarray(img.dataobj)
            assert data.ndim == 3 and data.dtype == np.int16 and data.max() > 100
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
            np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
            zooms = img.header.get_zooms()
            assert zooms[2] == pytest.approx(side["SpacingBetweenSlices"])
            assert zooms[0] * data.shape[0] == pytest.approx(side["FieldOfView"], rel=1e-4)
            assert data.shape[0] == side["ReconMatrixPE"]
            assert side["MagneticFieldStrength"] == float(r["field_strength"])
            # The head is inside the field of view and the stack covers it (top and bottom slices dim).
            profile = data.reshape(-1, data.shape[2]).mean(axis=0)
            assert profile.argmax() not in (0, data.shape[2] - 1)
            # RAS world coordinates of the volume centre lie near the scanner isocentre.
            centre = img.affine @ np.r_[(np.array(data.shape) - 1) / 2, 1]
            assert np.all(np.abs(centre[:3]) < 60)
            assert img.header["descrip"].tobytes().strip(b"\x00") == b""


def test_truth_levels_are_ordered_and_inside_the_stack(tiny_cohort):
    truth = _tsv(tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv")
    for row in truth:
        idx = [int(row[f"slice_{k}"]) for k in LEVEL_KEYS]
        assert idx == sorted(idx) and len(set(idx)) == 5, row
        assert 0 <= idx[0] and idx[-1] < int(row["slices"])
        assert abs(float(row["myelination_age_months"]) - float(row["age_months"])) < 5


def test_tenslice_cache(tiny_cohort):
    cache = read_cache(tiny_cohort / "derivatives" / "tenslice")
    assert len(cache) == 4 and set(cache.images) == set(INPUT_NAMES)
    for name in INPUT_NAMES:
        x = cache.images[name]
        assert x.shape == (4, 128, 128) and np.isfinite(x).all()
        assert 0 <= x.min() and 0.3 < np.percentile(x, 99.5) <= 1.5
        # The head is centred: the middle of the image is brighter than the corners.
        assert x[:, 48:80, 48:80].mean() > 3 * x[:, :10, :10].mean()
    participants = {r["participant_id"]: float(r["age_months"]) for r in _tsv(tiny_cohort / "participants.tsv")}
    assert dict(zip(cache.participant_id, cache.age_months.tolist())) == pytest.approx(participants)


def test_prepare_from_files_reproduces_the_cache(tiny_cohort, tmp_path):
    """The preparation real scans get (from NIfTI files) gives the cache synth wrote (with 2 worker processes)."""
    out = tmp_path / "prep"
    levels = tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv"
    assert main(["prepare", "--bids", str(tiny_cohort), "--levels", str(levels), "--out", str(out), "--quiet",
                 "--jobs", "2"]) == 0
    a, b = read_cache(tiny_cohort / "derivatives" / "tenslice"), read_cache(out)
    np.testing.assert_array_equal(a.participant_id, b.participant_id)
    assert [s["files"] for s in a.manifest["subjects"]] == [s["files"] for s in b.manifest["subjects"]]
    for name in INPUT_NAMES:
        np.testing.assert_array_equal(a.images[name], b.images[name])


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_different(tmp_path):
    a = build_cohort(tmp_path / "a", CohortConfig(subjects=2, seed=5), jobs=2, progress=False)
    b = build_cohort(tmp_path / "b", CohortConfig(subjects=2, seed=5), jobs=1, progress=False)
    c = build_cohort(tmp_path / "c", CohortConfig(subjects=2, seed=6), jobs=1, progress=False)
    ta, tb, tc = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert ta.keys() == tb.keys() and all(ta[k] == tb[k] for k in ta)
    assert ta["sub-001/anat/sub-001_T2w.nii.gz"] != tc["sub-001/anat/sub-001_T2w.nii.gz"]


@pytest.mark.parametrize("args,message", [
    (["--subjects", "0"], "positive"),
    (["--subjects", "-4"], "positive"),
    (["--field-strengths", "7"], "unknown field strength"),
    (["--field-strengths", "3,1.5,0.55"], "unknown field strength"),
    (["--field-strengths", ","], "field_strengths is empty"),
    (["--seed", "-1"], "seed must be"),
])
def test_cli_refuses_bad_arguments(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["synth", "--out", str(out), "--quiet"] + args) != 0
    assert message in capsys.readouterr().err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_cli_refuses_non_empty_output_and_leaves_it_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["synth", "--out", str(out), "--subjects", "1", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "not empty" in err and "remove it yourself or choose another --out" in err and str(out) in err
    assert os.listdir(out) == ["precious.txt"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_cli_refuses_output_inside_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["synth", "--out", str(blocker / "cohort"), "--subjects", "1", "--quiet"]) != 0
    assert "is a file" in capsys.readouterr().err


def test_failure_midway_leaves_nothing_half_written(tmp_path, monkeypatch):
    import kerasmyelin.synth.dataset as ds

    real = ds._make_subject
    calls = []

    def flaky(spec, *a, **k):
        calls.append(spec.participant_id)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(spec, *a, **k)

    monkeypatch.setattr(ds, "_make_subject", flaky)
    out = tmp_path / "cohort"
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_cohort(out, CohortConfig(subjects=3, seed=1), jobs=1, progress=False)
    assert os.listdir(tmp_path) == []


def test_overwrite_refuses_a_folder_kerasmyelin_did_not_write(tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert main(["synth", "--out", str(out), "--subjects", "1", "--overwrite", "--quiet"]) != 0
    assert "did not write" in capsys.readouterr().err
    assert os.listdir(out) == ["thesis.tex"]


def test_prepare_refuses_t1_and_t2_on_different_grids(tiny_cohort, tmp_path, capsys):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(tiny_cohort, bids, ignore=shutil.ignore_patterns("derivatives"))
    t2 = bids / "sub-001" / "anat" / "sub-001_T2w.nii.gz"
    img = nib.load(t2)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, 1:], img.affine), t2)
    levels = tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv"
    out = tmp_path / "prep"
    assert main(["prepare", "--bids", str(bids), "--levels", str(levels), "--out", str(out), "--quiet",
                 "--jobs", "2"]) != 0  # the error comes from a worker process, the file still named
    err = capsys.readouterr().err
    assert "different grids" in err and "sub-001_T1w.nii.gz" in err and not out.exists()


def test_overwrite_replaces_an_existing_cohort(tmp_path):
    out = build_cohort(tmp_path / "cohort", CohortConfig(subjects=1, seed=2), jobs=1, progress=False)
    (out / "old.txt").write_text("old")
    build_cohort(out, CohortConfig(subjects=1, seed=3), jobs=1, progress=False, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "participants.tsv").exists()
    assert sorted(os.listdir(tmp_path)) == ["cohort"]


def test_prepare_takes_bids_sessions_with_their_own_ages(tiny_cohort, tmp_path, capsys):
    """Two sessions of one infant: two cache rows under one id (so folds keep them together), each
    with its session's age from sub-*_sessions.tsv; a levels table without session_id is refused
    with a hint."""
    import shutil

    from kerasmyelin.training.splits import make_folds

    bids = tmp_path / "bids"
    shutil.copytree(tiny_cohort, bids, ignore=shutil.ignore_patterns("derivatives"))
    sub = bids / "sub-001"
    for ses in ("ses-01", "ses-02"):
        (sub / ses / "anat").mkdir(parents=True)
        for c in ("T1w", "T2w"):
            shutil.copy(sub / "anat" / f"sub-001_{c}.nii.gz", sub / ses / "anat" / f"sub-001_{ses}_{c}.nii.gz")
    shutil.rmtree(sub / "anat")
    (sub / "sub-001_sessions.tsv").write_text("session_id\tchronological_age_months\tage_months\n"
                                             "ses-01\tn/a\t3.5\nses-02\tn/a\t\n")
    truth = {r["participant_id"]: r for r in _tsv(tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv")}
    cols = [f"slice_{k}" for k in LEVEL_KEYS]
    lines = ["participant_id\tsession_id\t" + "\t".join(cols)]
    for pid, row in truth.items():
        for ses in (("ses-01", "ses-02") if pid == "sub-001" else ("",)):
            lines.append("\t".join([pid, ses] + [row[c] for c in cols]))
    levels = tmp_path / "levels.tsv"
    levels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prep"
    assert main(["prepare", "--bids", str(bids), "--levels", str(levels), "--out", str(out), "--quiet"]) == 0
    data = read_cache(out)
    rows = [i for i, p in enumerate(data.participant_id) if p == "sub-001"]
    assert len(rows) == 2 and len(data) == len(truth) + 1
    participant_age = float(truth["sub-001"]["age_months"])
    assert sorted(data.age_months[rows].tolist()) == pytest.approx(sorted([3.5, participant_age]), abs=1e-4)
    assert [s.get("session_id") for s in data.manifest["subjects"] if s["participant_id"] == "sub-001"] == \
        ["ses-01", "ses-02"]
    np.testing.assert_array_equal(data.images["t1w_c"][rows[0]], data.images["t1w_c"][rows[1]])
    for fold in make_folds(data.participant_id, data.age_months, folds=2):
        assert ("sub-001" in fold["test"]) != ("sub-001" in fold["train"])
    # Without session_id the levels table cannot say which session: refused, with a hint.
    flat = tmp_path / "flat.tsv"
    shutil.copy(tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv", flat)
    assert main(["prepare", "--bids", str(bids), "--levels", str(flat), "--out", str(tmp_path / "p2"), "--quiet"]) == 2
    assert "add a session_id column" in capsys.readouterr().err
