"""prepare --bids without --levels: levels found automatically, written back in --levels format,
QC sheets, doubtful scans; and the levels tables --levels refuses, by file and line."""

from __future__ import annotations

import csv
import re
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kerasmyelin.cli.main import main
from kerasmyelin.levels import LEVEL_KEYS

PIDS = ("sub-001", "sub-002", "sub-003", "sub-004")


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def small_bids(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort's four infants at a quarter of their in-plane matrix (~128 x 128 x 25):
    the same anatomy and axial slices (the truth's levels still hold), far less to read."""
    from kerasmyelin.io.nifti import load_volume, write_nifti

    root = tmp_path_factory.mktemp("small") / "bids"
    root.mkdir()
    shutil.copy(tiny_cohort / "participants.tsv", root)
    for pid in PIDS:
        (root / pid / "anat").mkdir(parents=True)
        for contrast in ("T1w", "T2w"):
            data, affine = load_volume(tiny_cohort / pid / "anat" / f"{pid}_{contrast}.nii.gz")
            k = max(1, data.shape[0] // 128)
            affine = affine.copy()
            affine[:3, :2] *= k
            write_nifti(root / pid / "anat" / f"{pid}_{contrast}.nii.gz", np.ascontiguousarray(data[::k, ::k]), affine)
    shutil.copy(tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv", root.parent / "truth.tsv")
    return root


@pytest.fixture(scope="module")
def auto_cache(small_bids, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("auto") / "prep"
    assert main(["prepare", "--bids", str(small_bids), "--out", str(out), "--quiet"]) == 0
    return out


def test_automatic_levels_are_near_the_truth_and_come_back_through_levels(auto_cache, small_bids, tmp_path):
    from kerasmyelin.data.cache import read_cache

    found = {r["participant_id"]: r for r in _tsv(auto_cache / "levels.tsv")}
    truth = {r["participant_id"]: r for r in _tsv(small_bids.parent / "truth.tsv")}
    assert sorted(found) == list(PIDS)
    errors = np.array([int(found[p][f"slice_{k}"]) - int(truth[p][f"slice_{k}"]) for p in PIDS for k in LEVEL_KEYS])
    assert np.mean(np.abs(errors) <= 1) >= 0.9, errors
    manifest = json.loads((auto_cache / "manifest.json").read_text())
    assert manifest["level_source"] == "automatic" and manifest["automatic_levels"]["doubtful_excluded"] == []
    # Fed back with --levels, the table gives the same cache.
    again = tmp_path / "again"
    assert main(["prepare", "--bids", str(small_bids), "--levels", str(auto_cache / "levels.tsv"),
                 "--out", str(again), "--quiet"]) == 0
    a, b = read_cache(auto_cache), read_cache(again)
    assert list(a.participant_id) == list(b.participant_id) == list(PIDS)
    for name in a.images:
        np.testing.assert_array_equal(a.images[name], b.images[name])


def test_qc_sheets_are_written_per_infant_and_for_all(auto_cache):
    from PIL import Image

    qc = auto_cache / "qc"
    assert sorted(p.name for p in qc.iterdir()) == sorted([f"{p}.png" for p in PIDS] + ["overview.png"])
    for png in qc.iterdir():
        with Image.open(png) as img:
            assert img.width > 300 and img.height > 50
            assert np.asarray(img.convert("L")).std() > 10  # images drawn, not a blank page
    assert _tsv(auto_cache / "doubtful.tsv") == []


@pytest.fixture(scope="module")
def noisy_bids(small_bids, tmp_path_factory) -> Path:
    """The small cohort with sub-004's two images replaced by noise of the same grid."""
    from kerasmyelin.io.nifti import load_volume, write_nifti

    root = tmp_path_factory.mktemp("noisy") / "bids"
    shutil.copytree(small_bids, root)
    rng = np.random.default_rng(0)
    for contrast in ("T1w", "T2w"):
        path = root / "sub-004" / "anat" / f"sub-004_{contrast}.nii.gz"
        data, affine = load_volume(path)
        write_nifti(path, (100 * rng.random(data.shape)).astype(np.float32), affine)
    return root


def test_a_doubtful_infant_is_left_out_and_listed_and_kept_on_request(noisy_bids, tmp_path, capsys):
    from kerasmyelin.data.cache import read_cache

    out = tmp_path / "prep"
    assert main(["prepare", "--bids", str(noisy_bids), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "doubtful: sub-004" in printed and "left out 1 of 4" in printed and str(out / "doubtful.tsv") in printed
    assert list(read_cache(out).participant_id) == list(PIDS[:3])
    (row,) = _tsv(out / "doubtful.tsv")
    assert row["participant_id"] == "sub-004" and "noise" in row["reasons"].split(",") and row["in_cache"] == "no"
    levels = {r["participant_id"]: r for r in _tsv(out / "levels.tsv")}
    assert [levels["sub-004"][f"slice_{k}"] for k in LEVEL_KEYS] == ["n/a"] * 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["participant_id"] for s in manifest["automatic_levels"]["doubtful_excluded"]] == ["sub-004"]
    assert manifest["left_out"] == [{"participant_id": "sub-004"}]
    # The n/a row leaves it out again when the table is given back.
    again = tmp_path / "again"
    assert main(["prepare", "--bids", str(noisy_bids), "--levels", str(out / "levels.tsv"), "--out", str(again),
                 "--quiet"]) == 0
    assert "left out 1 scan(s) whose slices are n/a" in capsys.readouterr().out
    assert list(read_cache(again).participant_id) == list(PIDS[:3])
    kept = tmp_path / "kept"
    assert main(["prepare", "--bids", str(noisy_bids), "--out", str(kept), "--quiet", "--keep-doubtful"]) == 0
    assert list(read_cache(kept).participant_id) == list(PIDS)
    assert _tsv(kept / "doubtful.tsv")[0]["in_cache"] == "yes"


def _levels_text(rows) -> str:
    return "participant_id\tslice_a\tslice_b\tslice_c\tslice_d\tslice_e\n" + "".join(
        "\t".join(map(str, r)) + "\n" for r in rows)


GOOD = [("sub-001", 7, 9, 12, 15, 18), ("sub-002", 4, 5, 7, 9, 10), ("sub-003", 7, 10, 13, 16, 19),
        ("sub-004", 8, 10, 13, 16, 19)]
BAD_TABLES = {
    "index outside the volume": (GOOD[:2] + [("sub-003", 7, 10, 13, 16, 99)] + GOOD[3:],
                                 r"line 4 \(sub-003\): slice index \{'e': 99\} is outside the volume.*0 to 24"),
    "duplicate row": (GOOD + [GOOD[1]], r"line 6: sub-002 has slice levels twice \(also line 3\)"),
    "infant missing from the table": (GOOD[:2] + GOOD[3:], r"no row for sub-003 \(.*participants.tsv line 4\)"),
    "infant not in the BIDS folder": (GOOD + [("sub-999", 1, 2, 3, 4, 5)],
                                      r"line 6 \(sub-999\): sub-999 is not in .*participants.tsv"),
    "negative index": ([("sub-001", -1, 9, 12, 15, 18)] + GOOD[1:], r"line 2: sub-001: negative slice index"),
    "some slices n/a": ([("sub-001", "n/a", 9, 12, 15, 18)] + GOOD[1:],
                        r"line 2: sub-001: slice_a 'n/a' is not a whole number; write n/a in all five"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_a_bad_levels_table_is_refused_by_file_and_line_and_nothing_is_written(case, small_bids, tmp_path, capsys):
    rows, message = BAD_TABLES[case]
    levels = tmp_path / "levels.tsv"
    levels.write_text(_levels_text(rows))
    out = tmp_path / "prep"
    assert main(["prepare", "--bids", str(small_bids), "--levels", str(levels), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{levels}: " in err, err
    assert re.search(message, err), err
    assert not out.exists() and list(tmp_path.iterdir()) == [levels]
