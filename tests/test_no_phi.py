"""No patient data in outputs (issue 6 section 4).

A fake patient's name, id and birth date are planted where scanners and converters put them:
the NIfTI header's ``descrip``, ``aux_file`` and ``db_name``, a header extension, and the file
and folder names. Every file the commands write, and everything they print or log, is then
searched for them, raw and decompressed.
"""

import csv
import gzip
import logging
import shutil
import zipfile
import zlib

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.cli.main import main

PHI = ("Doe^Jane", "DoeJane", "Jane", "MRN4711", "20240101", "2024-01-01")


def _planted(src, dst):
    """``src`` rewritten to ``dst`` with the fake patient in every free-text header field."""
    img = nib.load(str(src))
    out = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    out.header["descrip"] = b"Doe^Jane MRN4711 DOB 20240101"
    out.header["aux_file"] = b"Jane"
    out.header["db_name"] = b"MRN4711"
    out.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientName=Doe^Jane;BirthDate=2024-01-01"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(dst))
    return dst


def _texts(path):
    """The file's bytes, and every zlib / gzip / zip member stream inside it, decompressed."""
    raw = path.read_bytes()
    yield raw
    if raw[:2] == b"\x1f\x8b":
        yield gzip.decompress(raw)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                yield z.read(name)
    if raw[:5] == b"%PDF-":  # page content streams are Flate-compressed
        for start in range(len(raw)):
            start = raw.find(b"stream", start)
            if start < 0:
                break
            try:
                yield zlib.decompressobj().decompress(raw[start + 6:].lstrip(b"\r\n"))
            except zlib.error:
                pass


def _leaks(root, printed):
    found = []
    for path in [p for p in root.rglob("*") if p.is_file()]:
        for p in PHI:
            if p in str(path.relative_to(root)):
                found.append(f"{path.name}: file name")
        for blob in _texts(path):
            for p in PHI:
                if p.encode() in blob or p.encode("utf-16-le") in blob:
                    found.append(f"{path.relative_to(root)}: {p}")
    for p in PHI:
        if p in printed:
            found.append(f"printed output: {p}")
    return sorted(set(found))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.conftest import tiny_model_file

    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.keras")


def test_fake_patient_appears_in_no_output_or_log(model, tiny_cohort, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    # A clinician's export folder: the patient's name and birth date in file and folder names.
    incoming = tmp_path / "Doe^Jane_MRN4711"
    files = {c: _planted(tiny_cohort / "sub-001" / "anat" / f"sub-001_{c}.nii.gz",
                         incoming / f"DoeJane_20240101_{c}.nii.gz") for c in ("T1w", "T2w")}
    assert b"Doe^Jane" in gzip.decompress(files["T1w"].read_bytes())  # planted, and findable
    # A BIDS copy with the same headers (BIDS names carry only the chosen label).
    bids = tmp_path / "bids"
    shutil.copytree(tiny_cohort, bids, ignore=shutil.ignore_patterns("derivatives"))
    for c in ("T1w", "T2w"):
        _planted(files[c], bids / "sub-001" / "anat" / f"sub-001_{c}.nii.gz")
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as fh:
        csv.writer(fh).writerows([("subject", "t1w", "t2w", "age_months"),
                                  ("infant-B", files["T1w"], files["T2w"], "4.5")])
    outputs = tmp_path / "outputs"
    truth = tiny_cohort / "derivatives" / "synth_truth" / "truth.tsv"
    runs = [
        ["predict", "--model", str(model), "--t1", str(files["T1w"]), "--t2", str(files["T2w"]),
         "--subject", "infant-A", "--age-months", "4.5", "--out", str(outputs / "one")],
        ["predict", "--model", str(model), "--csv", str(listing), "--out", str(outputs / "batch"), "--reports"],
        ["predict", "--model", str(model), "--bids", str(bids), "--out", str(outputs / "bids")],
        ["prepare", "--bids", str(bids), "--levels", str(truth), "--out", str(outputs / "cache"), "--quiet"],
    ]
    for argv in runs:
        assert main(argv) == 0, argv
    printed = capsys.readouterr()
    log = printed.out + printed.err + caplog.text
    written = sorted(p.relative_to(outputs) for p in outputs.rglob("*") if p.is_file())
    assert len(written) >= 12  # result, slices, reports, tables, cache: the search had material
    assert _leaks(outputs, log) == []


def test_a_failed_rows_error_names_the_input_by_role_not_by_its_path(model, tiny_cohort, tmp_path, capsys):
    """Issue 20: the error cell of predictions.csv once carried the full input path (file and folder
    names often hold a patient's name and birth date). The terminal may show it; the table may not."""
    incoming = tmp_path / "Doe^Jane_MRN4711"
    incoming.mkdir()
    good = tiny_cohort / "sub-001" / "anat"
    t1 = incoming / "DoeJane_20240101_T1w.nii.gz"
    t1.write_bytes((good / "sub-001_T1w.nii.gz").read_bytes()[:4000])  # truncated
    t2 = incoming / "DoeJane_20240101_T2w.nii.gz"
    shutil.copy(good / "sub-001_T2w.nii.gz", t2)
    missing = incoming / "DoeJane_20240101_T2w_repeat.nii.gz"
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as fh:
        csv.writer(fh).writerows([("subject", "t1w", "t2w"), ("infant-A", t1, t2), ("infant-B", t1, missing),
                                  ("infant-C", t1, t2, "extra cell")])
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(model), "--csv", str(listing), "--out", str(out)]) == 1
    with open(out / "predictions.csv", newline="") as fh:
        rows = {r["subject"]: r for r in csv.DictReader(fh)}
    assert rows["infant-A"]["error"].startswith("<t1w>: ") and "truncated" in rows["infant-A"]["error"]
    assert "file not found" in rows["infant-B"]["error"]
    assert all(r["status"] == "failed" for r in rows.values()) and len(rows) == 3
    assert _leaks(out, "") == []
    assert "Doe^Jane" in capsys.readouterr().out  # the terminal names the file, for the person at it
