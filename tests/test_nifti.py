"""The NIfTI reader refuses malformed volumes with an error naming the file and the problem;
the writer is deterministic and leaves no identifying header text."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from kerasmyelin.errors import InputError
from kerasmyelin.io.nifti import load_volume, nifti_bytes, write_nifti

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
}


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
