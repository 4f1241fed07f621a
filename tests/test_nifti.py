"""The NIfTI reader refuses malformed volumes with an error naming the file and the problem;
the writer is deterministic and leaves no identifying header text."""

import builtins
import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from kerasmyelin.errors import InputError
from kerasmyelin.io import nifti
from kerasmyelin.io.nifti import MAX_VOXELS, load_volume, nifti_bytes, write_nifti

AFFINE = np.diag([1.2, 1.2, 5.0, 1.0])
AFFINE[:3, 3] = [-40, -50, -30]


def _volume(shape=(12, 10, 6)):
    return np.random.default_rng(0).random(shape).astype(np.float32) + 0.1


def _save(path, data, affine=AFFINE, edit=None):
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    if edit:
        edit(img)
    nib.save(img, str(path))
    return path


def _truncated(p):
    full = gzip.compress(nifti_bytes(_volume((40, 40, 20)), AFFINE))
    p.write_bytes(full[: len(full) // 2])
    return p


def _not_gzip(p):
    p.write_bytes(b"this is not gzip at all" * 20)
    return p


def _raw(p, shape=(12, 10, 6), sform=AFFINE, pixdim=(1.2, 1.2, 5.0), data=None):
    """A gzipped single-file NIfTI written byte by byte (nibabel refuses to save these)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(shape)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = sform[0], sform[1], sform[2]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["pixdim"][1:4] = pixdim
    hdr["vox_offset"] = 352
    body = hdr.binaryblock + b"\0" * 4 + (b"" if data is None else np.asarray(data, "<f4").tobytes())
    p.write_bytes(gzip.compress(body))
    return p


def _shifted_sform(p):
    moved = AFFINE.copy()
    moved[:3, 3] += [0, 0, 20]
    img = nib.Nifti1Image(_volume(), moved)  # sform (the image's affine) 20 mm above the qform
    img.header.set_qform(AFFINE, code=1)
    img.header.set_sform(moved, code=1)
    nib.save(img, str(p))
    return p


def _gzip_named_nii(p):
    p = p.with_name(p.name[: -len(".gz")])
    p.write_bytes(gzip.compress(nifti_bytes(_volume(), AFFINE)))
    return p


def _plain_named_gz(p):
    p.write_bytes(nifti_bytes(_volume(), AFFINE))
    return p


def _folder(p):
    p.mkdir()
    return p


def _scaled_voxels(factor, unit="mm", shape=(12, 10, 6)):
    """A valid volume whose affine (and voxel sizes) are AFFINE's times ``factor``, in ``unit``."""
    def make(p):
        affine = AFFINE @ np.diag([factor, factor, factor, 1.0])
        p.write_bytes(gzip.compress(nifti_bytes(_volume(shape), affine, zooms_unit=unit)))
        return p
    return make


def _with(value_at):
    def make(p):
        data = _volume()
        data[value_at[0]] = value_at[1]
        return _save(p, data)
    return make


CASES = {
    "missing": (lambda p: p, "not found"),
    "not gzip": (_not_gzip, "not a readable NIfTI"),
    "truncated gzip": (_truncated, "truncated or corrupt"),
    "size bomb header": (lambda p: _raw(p, shape=(4096, 4096, 4096)), "more than this reader accepts"),
    "4-D": (lambda p: _save(p, np.stack([_volume()] * 3, axis=-1)), "expected a 3-D volume"),
    "2-D": (lambda p: _save(p, _volume((12, 10))), "expected a 3-D volume"),
    "NaN voxels": (_with(((1, 2, 3), np.nan)), "NaN or infinite"),
    "infinite voxels": (_with(((0, 0, 0), np.inf)), "NaN or infinite"),
    "all zero": (lambda p: _save(p, np.zeros((12, 10, 6), np.float32)), "constant"),
    "zero voxel size": (lambda p: _raw(p, pixdim=(1.2, 0.0, 5.0), data=_volume().ravel(order="F")),
                        "voxel sizes must be positive"),
    "negative voxel size": (lambda p: _raw(p, pixdim=(1.2, -1.2, 5.0), data=_volume().ravel(order="F")),
                            "voxel sizes must be positive"),
    "qform and sform disagree": (_shifted_sform, "qform and sform disagree"),
    "singular affine": (lambda p: _raw(p, sform=np.diag([1.0, 1.0, 0.0, 1.0]), data=_volume().ravel(order="F")),
                        "affine is singular"),
    # Misleading before: nibabel's "Cannot work out file type", "not a gzip file", "Could not read file".
    "gzip file named .nii": (_gzip_named_nii, "the file is gzip-compressed but named .nii; rename it to .nii.gz"),
    "plain NIfTI named .nii.gz": (_plain_named_gz, "uncompressed NIfTI file but named .nii.gz; rename it to .nii"),
    "folder": (_folder, "is a folder, not a NIfTI file"),
    # Loaded before, then "no head found" (0.01 mm) or a head the size of a room (metres, 20 mm).
    "voxel size 0.01 mm": (_scaled_voxels(0.01 / 1.2), "voxel sizes 0.01x0.01x0.04167 mm are outside the 0.1 to 10 mm"),
    "voxel sizes in metres": (_scaled_voxels(0.001, "meter"),
                              "gives its sizes in metres (xyzt_units), that is 1.2x1.2x5 mm"),
    "voxel sizes in micrometres": (_scaled_voxels(1000.0, "micron"), "gives its sizes in micrometres"),
    "slice spacing 20 mm": (_scaled_voxels(4.0), "voxel sizes 4.8x4.8x20 mm are outside"),
    "field of view wider than a head": (_scaled_voxels(1.0, shape=(12, 10, 120)),
                                        "the volume spans 14x12x600 mm (12x10x120 voxels of 1.2x1.2x5 mm)"),
    "header just over the voxel limit": (lambda p: _raw(p, shape=(512, 512, 513)),
                                         "more than this reader accepts (134,217,728 = 512^3"),
}

# Refused from the header alone: their voxels are never read.
HEADER_CASES = ["size bomb header", "header just over the voxel limit", "gzip file named .nii",
                "plain NIfTI named .nii.gz", "folder", "voxel size 0.01 mm", "voxel sizes in metres",
                "slice spacing 20 mm", "field of view wider than a head"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_volume_is_refused_naming_the_file(tmp_path, case):
    make, expected = CASES[case]
    path = make(tmp_path / "sub-01_T1w.nii.gz")
    with pytest.raises(InputError) as err:
        load_volume(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    if expected:
        assert expected in err.value.problem


def test_good_volume_round_trips_and_its_header_is_clean(tmp_path):
    data = _volume()
    path, digest = write_nifti(tmp_path / "a.nii.gz", data, AFFINE)
    again, digest2 = write_nifti(tmp_path / "b.nii.gz", data, AFFINE)
    assert digest == digest2 and path.read_bytes() == again.read_bytes()
    loaded, affine = load_volume(path)
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_allclose(affine, AFFINE)
    hdr = nib.load(str(path)).header
    assert all(bytes(hdr[f].tobytes()).strip(b"\0") == b"" for f in ("descrip", "aux_file", "db_name"))
    assert len(hdr.extensions) == 0


def test_small_qform_sform_round_off_is_accepted(tmp_path):
    def nudge(img):
        a = AFFINE.copy()
        a[:3, 3] += 0.01
        img.header.set_sform(a, code=1)
    path = _save(tmp_path / "ok.nii.gz", _volume(), edit=nudge)
    assert load_volume(path)[0].shape == (12, 10, 6)


def test_fast_gzip_reader_applies_scaling_like_nibabel(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 500, (7, 6, 5)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 5.0, 1.0]))
    img.header.set_slope_inter(2.5, -7.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    got, _ = load_volume(path)
    np.testing.assert_allclose(got, np.asarray(nib.load(path).dataobj, np.float32), rtol=1e-6)
    assert got.min() == pytest.approx(data.min() * 2.5 - 7.0)


@pytest.mark.parametrize("case", HEADER_CASES)
def test_header_refusals_happen_before_any_voxel_is_read(tmp_path, monkeypatch, case):
    def never(*args, **kwargs):
        raise AssertionError("the data were read")

    monkeypatch.setattr(nifti, "_read_data", never)
    make, expected = CASES[case]
    with pytest.raises(InputError) as err:
        load_volume(make(tmp_path / "sub-01_T1w.nii.gz"))
    assert expected in err.value.problem


def test_the_voxel_limit_is_a_0_5_mm_head_scan_and_is_accepted(tmp_path):
    """512^3 is accepted (its header; the data of this 0.2 MB file are then found missing)."""
    assert MAX_VOXELS == 512 ** 3
    path = _raw(tmp_path / "big.nii.gz", shape=(512, 512, 512), sform=np.diag([0.5, 0.5, 0.5, 1.0]),
                pixdim=(0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="claims a size it does not have"):
        load_volume(path)


@pytest.mark.parametrize("size_mm", [0.1, 10.0])
def test_voxel_sizes_at_the_ends_of_the_range_are_accepted(tmp_path, size_mm):
    affine = np.diag([size_mm, size_mm, size_mm, 1.0])
    path, _ = write_nifti(tmp_path / "edge.nii.gz", _volume(), affine)
    np.testing.assert_allclose(load_volume(path)[1], affine)


def test_unreadable_file_is_refused_as_permission_denied(tmp_path, monkeypatch):
    """Tests run as root, which reads any file: opening it is made to fail as it would for a user."""
    path, _ = write_nifti(tmp_path / "sub-01_T1w.nii.gz", _volume(), AFFINE)
    path.chmod(0)
    real_open, real_os_open = builtins.open, os.open

    def denied(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    def os_denied(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    monkeypatch.setattr(os, "open", os_denied)
    with pytest.raises(InputError) as err:
        load_volume(path)
    assert err.value.path == str(path) and err.value.problem == "cannot be read (permission denied)"


def test_unreadable_folder_above_the_file_is_refused_as_permission_denied(tmp_path, monkeypatch):
    from pathlib import Path

    path = tmp_path / "locked" / "sub-01_T1w.nii.gz"
    real_stat = Path.stat

    def denied(self, *args, **kwargs):
        if str(self) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", denied)
    with pytest.raises(InputError, match="cannot be read \\(permission denied\\)"):
        load_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("stored", ["<i2", ">i2", "<f8", "<u1"])
def test_reading_in_pieces_gives_nibabels_voxels(tmp_path, monkeypatch, suffix, stored):
    """The reader converts the data a piece at a time; pieces of 7 bytes (not a whole number of
    voxels) and a scale factor give exactly nibabel's values."""
    monkeypatch.setattr(nifti, "READ_CHUNK_BYTES", 7)
    data = np.random.default_rng(1).integers(0, 200, (7, 6, 5)).astype(stored)
    img = nib.Nifti1Image(data, np.diag([0.9, 0.9, 4.0, 1.0]))
    img.header.set_slope_inter(1.5, -2.0)
    path = tmp_path / f"pieces{suffix}"
    nib.save(img, path)
    got, _ = load_volume(path)
    np.testing.assert_array_equal(got, np.asarray(nib.load(path).dataobj, np.float32))
    plain = tmp_path / f"plain{suffix}"
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 4.0, 1.0])), plain)
    kept, _ = load_volume(plain, keep_integers=True)
    assert kept.dtype == (np.float32 if stored == "<f8" else np.dtype(stored).newbyteorder("="))
    np.testing.assert_array_equal(kept, data)


def test_gzipped_hdr_img_pair_is_read_from_its_image_file(tmp_path):
    """Found while bounding memory: the fast gzip reader read the .hdr.gz as the voxels, and
    refused the pair as truncated."""
    data = _volume()
    nib.save(nib.Nifti1Pair(data, AFFINE), tmp_path / "pair.img.gz")
    got, _ = load_volume(tmp_path / "pair.hdr.gz")
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("suffix", [".img", ".img.gz"])
def test_a_hdr_img_pair_is_read_in_pieces_like_a_single_file(tmp_path, monkeypatch, suffix):
    """Pairs go through the same piecewise reader as single files: nibabel's values, in pieces of 7 bytes."""
    data = np.random.default_rng(2).random((9, 8, 7))
    nib.save(nib.Nifti1Pair(data, AFFINE), tmp_path / f"pair{suffix}")
    header = tmp_path / ("pair.hdr.gz" if suffix.endswith(".gz") else "pair.hdr")
    monkeypatch.setattr(nifti, "READ_CHUNK_BYTES", 7)
    got, _ = load_volume(header)
    np.testing.assert_array_equal(got, np.asarray(nib.load(header).dataobj, np.float32))


def test_a_gzipped_pair_costs_its_output_not_a_copy_of_its_bytes(tmp_path, monkeypatch):
    """Issue 19: a gzipped .hdr/.img pair went through nibabel, which peaked at 4x the output (2.2 MB
    for this 0.5 MB volume, 16.9 MB for a 4.2 MB one); now it is the output, one piece and the
    gzip reader's ~0.8 MB of buffers, as for a single .nii.gz."""
    import tracemalloc

    nib.save(nib.Nifti1Pair(np.random.default_rng(2).random((64, 64, 32)), AFFINE), tmp_path / "pair.img.gz")
    monkeypatch.setattr(nifti, "READ_CHUNK_BYTES", 64 * 1024)
    load_volume(tmp_path / "pair.hdr.gz")  # imports and caches, outside the count
    tracemalloc.start()
    try:
        out, _ = load_volume(tmp_path / "pair.hdr.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes + 1024 * 1024, (peak, out.nbytes)
