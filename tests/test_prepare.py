"""The ten-slice preparation as pure array transforms, on synthetic arrays with known answers."""

import numpy as np
import pytest
from scipy import ndimage

from kerasmyelin.data.prepare import (
    PrepConfig,
    crop_square,
    fill_holes_per_slice,
    prepare_volume,
    radiological,
    resize,
    to_canonical,
)
from kerasmyelin.errors import InputError


def test_fill_holes_matches_scipy_slice_by_slice():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((40, 30, 4)) > 0.35, np.ones((2, 2, 1), bool))
    expected = np.stack([ndimage.binary_fill_holes(mask[..., k]) for k in range(4)], axis=-1)
    np.testing.assert_array_equal(fill_holes_per_slice(mask), expected)


def test_radiological_orientation():
    # RAS voxel (x=right-most, y=anterior-most) must land at the top-left of the image.
    s = np.zeros((4, 5))
    s[-1, -1] = 1
    img = radiological(s)
    assert img.shape == (5, 4) and img[0, 0] == 1


def test_to_canonical_reorders_lps_to_ras():
    data = np.arange(24).reshape(2, 3, 4)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    out, aff = to_canonical(data, lps)
    assert out[0, 0, 0] == data[-1, -1, 0]
    np.testing.assert_allclose(aff @ [0, 0, 0, 1], lps @ [1, 2, 0, 1])


def test_crop_square_pads_outside_with_zero():
    img = np.ones((10, 10), np.float32)
    out = crop_square(img, (0.0, 0.0), 6)
    assert out.shape == (6, 6) and out[:3, :3].sum() == 0 and out[3:, 3:].sum() == 9


def test_resize_keeps_mean_and_shape():
    img = np.random.default_rng(1).random((300, 300)).astype(np.float32)
    out = resize(img, 128)
    assert out.shape == (128, 128) and abs(out.mean() - img.mean()) < 0.01


def _disc_volume(n=64, z=6):
    yy, xx = np.mgrid[:n, :n]
    disc = ((xx - 30) ** 2 + (yy - 34) ** 2 < 20 ** 2).astype(np.float32)
    return np.repeat(disc[:, :, None], z, axis=2) * 100


def test_prepare_volume_centres_and_normalises():
    vol = _disc_volume()
    out = prepare_volume(vol, np.eye(4), {k: 2 for k in "abcde"}, PrepConfig(image_size=32))
    img = out["c"]
    assert img.shape == (32, 32) and img.max() == pytest.approx(1.0, abs=0.05)
    rows, cols = np.nonzero(img > 0.5)
    assert abs(rows.mean() - 15.5) < 1.5 and abs(cols.mean() - 15.5) < 1.5


def test_prepare_volume_errors_name_the_file():
    vol = _disc_volume()
    with pytest.raises(InputError, match="scan.nii.gz.*level.*e"):
        prepare_volume(vol, np.eye(4), {k: 2 for k in "abcd"}, source="scan.nii.gz")
    with pytest.raises(InputError, match="outside"):
        prepare_volume(vol, np.eye(4), {**{k: 2 for k in "abcd"}, "e": 9}, source="scan.nii.gz")


def test_head_mask_opening_matches_scipy_binary_opening():
    from kerasmyelin.data.prepare import head_mask

    rng = np.random.default_rng(3)
    vol = ndimage.gaussian_filter(rng.random((50, 40, 3)), (2, 2, 0)) + (rng.random((50, 40, 3)) > 0.995)
    level = 0.08 * np.percentile(vol, 99.0)
    opened = ndimage.binary_opening(vol > level, structure=np.ones((3, 3, 1), bool))
    np.testing.assert_array_equal(head_mask(vol, 0.08), fill_holes_per_slice(opened))
