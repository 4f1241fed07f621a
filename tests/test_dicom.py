"""DICOM series -> NIfTI with dcm2niix: geometry, contrast choice and de-identification.

The tests write their own DICOM series with pydicom (a fictitious patient "Doe^Jane", born
2024-01-01, MRN123) and run the real converter.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from kerasmyelin.errors import InputError, KerasMyelinError
from kerasmyelin.io import dicom

try:
    dicom.dcm2niix_binary()
except KerasMyelinError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no dcm2niix: {exc}", allow_module_level=True)

IDENTIFIERS = ("Doe", "Jane", "MRN123", "20240101", "2024-01-01", "Hospital St Jane")


def write_series(folder, number, description, tr, te, ti=None, *, slices=8, rows=32, cols=32,
                 pixel_spacing=(0.8, 0.7), thickness=5.0, origin_z=-20.0):
    """One axial series of ``slices`` files, written in scrambled order with opaque names.

    Slice k (0 = lowest) is filled with 100 * (k + 1); row 0 is 7 and column 0 is 9 so the
    in-plane axes can be told apart. PixelSpacing is (between rows, between columns) in mm.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid, frame_uid = generate_uid(), generate_uid()
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "MRN123", "20240101", "F"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240615"
        ds.StudyTime, ds.AcquisitionTime = "101500", "101600"
        ds.InstitutionName, ds.ReferringPhysicianName = "Hospital St Jane", "Doe^John"
        ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", "Philips", 3
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.4", series_uid, frame_uid
        ds.SeriesNumber, ds.InstanceNumber = number, k + 1
        ds.SeriesDescription = ds.ProtocolName = description
        ds.RepetitionTime, ds.EchoTime = tr, te
        if ti is not None:
            ds.InversionTime = ti
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "NONE", "2D"
        ds.PatientPosition = "HFS"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-cols * pixel_spacing[1] / 2, -rows * pixel_spacing[0] / 2,
                                   origin_z + k * thickness]
        ds.SliceLocation = origin_z + k * thickness
        ds.PixelSpacing, ds.SliceThickness = list(pixel_spacing), thickness
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = np.full((rows, cols), 100 * (k + 1), np.uint16)
        pixels[0, :], pixels[:, 0] = 7, 9
        ds.PixelData = pixels.tobytes()
        scrambled = (k * 5) % slices  # file order is not slice order
        pydicom.dcmwrite(folder / f"IM{number}_{scrambled:04d}", ds, enforce_file_format=True)


@pytest.fixture
def study(tmp_path):
    """The paper's 3 T protocol: turbo IR T1w (series 3), TSE T2w (4), plus a FLAIR (5)."""
    folder = tmp_path / "DICOM"
    write_series(folder / "s3", 3, "T1W_TIR", 2155, 10, 1000)
    write_series(folder / "s4", 4, "T2W_TSE", 4000, 80)
    write_series(folder / "s5", 5, "T2W_FLAIR", 9000, 120, 2500)
    return folder


def _all_output_bytes(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            yield path, path.name.encode() + b"\n" + (gzip.decompress(data) if path.name.endswith(".gz") else data)


def test_converts_with_geometry_and_slice_order(study, tmp_path):
    import nibabel as nib

    paths = dicom.dicom_series_to_nifti(study, tmp_path / "nifti")
    assert set(paths) == {"T1w", "T2w"}
    for path in paths.values():
        img = nib.load(path)
        assert img.shape == (32, 32, 8)
        # PixelSpacing (0.8 between rows, 0.7 between columns): NIfTI i runs along columns.
        np.testing.assert_allclose(img.header.get_zooms(), (0.7, 0.8, 5.0), atol=1e-5)
        assert nib.aff2axcodes(img.affine)[2] == "S"
        data = np.asarray(img.dataobj)
        centre = data[16, 16, :]
        np.testing.assert_array_equal(centre, 100 * np.arange(1, 9))  # inferior to superior
        z = [(img.affine @ [16, 16, k, 1])[2] for k in range(8)]
        np.testing.assert_allclose(z, -20.0 + 5.0 * np.arange(8), atol=1e-3)


def test_no_identifier_in_any_output(study, tmp_path):
    out = tmp_path / "nifti"
    dicom.dicom_series_to_nifti(study, out)
    names = sorted(p.name for p in out.iterdir())
    assert names == [".kerasmyelin-output.json", "T1w.json", "T1w.nii.gz", "T2w.json", "T2w.nii.gz", "manifest.json"]
    for path, data in _all_output_bytes(out):
        for needle in IDENTIFIERS:
            assert needle.encode().lower() not in data.lower(), f"{needle!r} found in {path.name}"
    sidecar = json.loads((out / "T1w.json").read_text())
    assert not any(k.startswith("Patient") and "Position" not in k for k in sidecar)
    assert "InstitutionName" not in sidecar and "AcquisitionTime" not in sidecar
    assert sidecar["EchoTime"] == pytest.approx(0.010) and sidecar["SeriesNumber"] == 3
    import nibabel as nib

    header = nib.load(out / "T1w.nii.gz").header
    assert header["descrip"].item() == b"" and header["aux_file"].item() == b"" and header["db_name"].item() == b""


def test_manifest_lists_every_series_and_why(study, tmp_path):
    out = tmp_path / "nifti"
    dicom.dicom_series_to_nifti(study, out)
    manifest = json.loads((out / "manifest.json").read_text())
    by_number = {s["number"]: s for s in manifest["series"]}
    assert by_number[3]["contrast"] == "T1w" and by_number[4]["contrast"] == "T2w"
    assert by_number[5]["contrast"] is None and "FLAIR" in by_number[5]["reason"]
    assert "kerasmyelin" in manifest["created_by"] and str(study) not in json.dumps(manifest)


@pytest.mark.parametrize("sidecar, expected", [
    ({"SeriesDescription": "t1_se_tra"}, "T1w"),
    ({"SeriesDescription": "t2_tse_tra_p2"}, "T2w"),
    ({"SeriesDescription": "t1_mprage_sag"}, "T1w"),
    ({"SeriesDescription": "t2_tirm_tra_dark-fluid"}, None),
    ({"SeriesDescription": "T2*_FFE"}, None),
    ({"SeriesDescription": "ep2d_diff_tra"}, None),
    ({"SeriesDescription": "localizer"}, None),
    ({"SeriesDescription": "axial 1", "RepetitionTime": 0.53, "EchoTime": 0.011}, "T1w"),
    ({"SeriesDescription": "axial 2", "RepetitionTime": 4.1, "EchoTime": 0.094}, "T2w"),
    ({"SeriesDescription": "axial 3", "RepetitionTime": 2.155, "EchoTime": 0.010, "InversionTime": 1.0}, "T1w"),
    ({"SeriesDescription": "axial 4", "RepetitionTime": 3.0, "EchoTime": 0.015}, None),  # proton density
    ({"SeriesDescription": "T1W", "ImageType": ["DERIVED", "SECONDARY"]}, None),
])
def test_classify(sidecar, expected):
    assert dicom.classify(sidecar)[0] == expected


def test_contrast_from_timing_when_names_say_nothing(tmp_path):
    folder = tmp_path / "DICOM"
    write_series(folder, 7, "AX SE", 530, 11)
    write_series(folder, 8, "AX FSE", 4100, 94)
    paths = dicom.dicom_series_to_nifti(folder, tmp_path / "nifti")
    manifest = json.loads((tmp_path / "nifti" / "manifest.json").read_text())
    assert set(paths) == {"T1w", "T2w"}
    assert all("timing" in s["reason"] for s in manifest["series"])


def test_two_t1w_series_need_a_choice(study, tmp_path):
    write_series(study / "s6", 6, "T1W_TIR_repeat", 2155, 10, 1000)
    with pytest.raises(InputError, match=r"2 series look T1w: 3 'T1W_TIR'.*6 'T1W_TIR_repeat'.*--t1-series"):
        dicom.dicom_series_to_nifti(study, tmp_path / "nifti")
    assert not (tmp_path / "nifti").exists()
    paths = dicom.dicom_series_to_nifti(study, tmp_path / "nifti", series={"T1w": 6})
    manifest = json.loads((tmp_path / "nifti" / "manifest.json").read_text())
    assert paths["T1w"].name == "T1w.nii.gz"
    assert [s["reason"] for s in manifest["series"] if s["number"] == 6] == ["chosen by the caller"]


def test_refusals_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="no DICOM series") as exc:
        dicom.dicom_series_to_nifti(empty, tmp_path / "out")
    assert str(empty) in str(exc.value)
    only_t1 = tmp_path / "only_t1"
    write_series(only_t1, 3, "T1W_TIR", 2155, 10, 1000)
    with pytest.raises(InputError, match=r"no T2w series found among 3 'T1W_TIR' \(T1w\)"):
        dicom.dicom_series_to_nifti(only_t1, tmp_path / "out")
    with pytest.raises(InputError, match="no series number 9"):
        dicom.dicom_series_to_nifti(only_t1, tmp_path / "out", series={"T2w": 9})
    with pytest.raises(InputError, match="DICOM folder not found"):
        dicom.dicom_series_to_nifti(tmp_path / "missing", tmp_path / "out")
    assert dicom.dicom_series_to_nifti(only_t1, tmp_path / "out", require=("T1w",)).keys() == {"T1w"}


def test_an_identifier_that_survives_stops_the_conversion(study, tmp_path, monkeypatch):
    """Defence in depth: were a sidecar key to slip through, nothing is written."""
    monkeypatch.setattr(dicom, "IDENTIFYING_KEYS", __import__("re").compile(r"^$never"))
    with pytest.raises(KerasMyelinError, match="identifier survived"):
        dicom.dicom_series_to_nifti(study, tmp_path / "nifti")
    assert not (tmp_path / "nifti").exists()


def test_command_line(study, tmp_path, capsys):
    from kerasmyelin.cli.main import main

    out = tmp_path / "nifti"
    assert main(["convert-dicom", str(study), "--out", str(out)]) == 0
    assert (out / "T1w.nii.gz").is_file() and "T2w:" in capsys.readouterr().out
    assert main(["convert-dicom", str(study), "--out", str(out)]) == 2  # occupied, no --overwrite
    assert "not empty" in capsys.readouterr().err
    assert main(["convert-dicom", str(study), "--out", str(out), "--overwrite", "--t2-series", "4"]) == 0
