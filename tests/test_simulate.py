"""Properties of one simulated scan: noise statistics, motion ghosts, scanners, maturation."""

from dataclasses import replace

import numpy as np
import pytest

from kerasmyelin.synth.head_warp import Warp
from kerasmyelin.synth.simulate import simulate_subject
from kerasmyelin.validation.synthetic_ratios import typical_infant, wm_gm_ratios


@pytest.fixture(scope="module")
def infant():
    return typical_infant(6.0, field_strength=1.5)  # 256 matrix: quick


def _background(volume):
    # Corners of the middle slice are air outside the head.
    k = volume.shape[2] // 2
    n = volume.shape[0] // 8
    return np.concatenate([volume[:n, :n, k].ravel(), volume[-n:, :n, k].ravel()]).astype(np.float64)


def test_background_noise_is_rician(infant):
    bg = _background(simulate_subject(infant).t2w)
    assert bg.min() >= 0 and bg.mean() > 0
    # Pure-noise magnitude is Rayleigh: mean / std = sqrt(pi / 2) / sqrt(2 - pi / 2) = 1.91.
    assert 1.7 < bg.mean() / bg.std() < 2.15


def test_motion_adds_ghosts_along_phase_encoding(infant):
    still = simulate_subject(infant).t1w.astype(np.float64)
    moving = simulate_subject(replace(infant, motion=True)).t1w.astype(np.float64)
    k = still.shape[2] // 2
    n = still.shape[0]
    # A ghost is a copy shifted half a field of view along axis 1 (antero-posterior).
    band = (slice(n // 3, 2 * n // 3), slice(0, n // 10), k)
    # Noise alone differs between the two by a few per cent; a ghost adds tens of per cent.
    assert moving[band].mean() > 1.2 * still[band].mean()


def test_same_seed_same_scan_other_seed_other_noise(infant):
    a, b = simulate_subject(infant), simulate_subject(infant)
    c = simulate_subject(replace(infant, seed=infant.seed + 1))
    np.testing.assert_array_equal(a.t1w, b.t1w)
    assert not np.array_equal(a.t1w, c.t1w)


def test_warp_round_trip(infant):
    warp = Warp(replace(infant, rotation_deg=(10.0, -4.0, 6.0), translation_mm=(3.0, -5.0, 8.0)),
                 np.array([0.0, -18.0, 5.0]), np.random.default_rng(0))
    mni = np.array([[0.0, -28.0, -30.0], [20.0, 10.0, 52.0]]).T
    np.testing.assert_allclose(warp.to_mni(warp.to_world(mni).astype(np.float32)), mni, atol=1e-3)


@pytest.mark.parametrize("field_strength", [1.5, 3.0])
def test_white_matter_contrast_develops_with_age(field_strength):
    young = wm_gm_ratios(typical_infant(0.0, field_strength))
    older = wm_gm_ratios(typical_infant(18.0, field_strength))
    for level in ("c", "d"):
        assert older[("T1w", level)] > young[("T1w", level)] + 0.1
        assert older[("T2w", level)] < young[("T2w", level)] - 0.05
    # Newborn white matter is T1-dark relative to cortex at the internal capsule level (at 3 T
    # the inversion recovery already shows the deep white matter crossing at birth).
    assert young[("T1w", "c")] < 1 < older[("T1w", "c")]
    if field_strength == 1.5:
        # Barkovich's 1.5 T picture: newborn T1-dark and T2-bright, the reverse at 18 months.
        for level in ("c", "d"):
            assert young[("T1w", level)] < 1 < older[("T1w", level)]
            assert young[("T2w", level)] > 1 > older[("T2w", level)]


def test_scanners_show_different_contrast():
    low = wm_gm_ratios(typical_infant(12.0, 1.5))
    high = wm_gm_ratios(typical_infant(12.0, 3.0))
    # Inversion recovery at 3 T separates myelinated white matter from cortex far more than
    # the 1.5 T spin echo does.
    assert high[("T1w", "d")] > low[("T1w", "d")] + 0.1


def test_tissue_model_cache_round_trip(tmp_path, monkeypatch):
    import os

    from kerasmyelin.synth import tissue_model as tm

    monkeypatch.setenv("KERASMYELIN_CACHE_DIR", str(tmp_path))
    assert tm.cache_dir() == tmp_path
    built = tm._build(1.5)
    path = tmp_path / "model.npz"
    tm._save(built, path)
    loaded = tm._load(path)
    for name in built.fractions:
        np.testing.assert_array_equal(built.fractions[name], loaded.fractions[name])
    np.testing.assert_array_equal(built.t1_mid, loaded.t1_mid)
    np.testing.assert_array_equal(built.t2_mid, loaded.t2_mid)
    np.testing.assert_array_equal(built.speeds()[0], loaded.speeds()[0])
    np.testing.assert_array_equal(built.wm_coords, loaded.wm_coords)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_separable_zero_filled_inverse_equals_the_full_one():
    import scipy.fft

    from kerasmyelin.synth.acquisition import _zero_fill, _zero_filled_ifft2

    rng = np.random.default_rng(0)
    k = (rng.standard_normal((16, 16, 3)) + 1j * rng.standard_normal((16, 16, 3))).astype(np.complex64)
    full = scipy.fft.ifft2(_zero_fill(k, 32), axes=(0, 1), norm="ortho")
    np.testing.assert_allclose(_zero_filled_ifft2(k, 32), full, atol=1e-5)


def test_level_truth_matches_the_scaled_landmarks_and_anatomy():
    from kerasmyelin.levels import LEVELS

    spec = typical_infant(12.0, field_strength=1.5)
    scan = simulate_subject(spec, with_truth=True)
    spacing = scan.affine[2, 2]
    scale = scan.nuisance["scale"][2]
    centre_z = {lv.key: scan.affine[2, 3] + spacing * scan.level_slices[lv.key] for lv in LEVELS}
    # No pose: level heights follow the landmarks scaled to the infant's brain, up to the smooth
    # individual deformation (<= 3 x 2.5 mm) and half a slice.
    for lo, hi in zip(LEVELS, LEVELS[1:]):
        expected = scale * (hi.mni_landmark[2] - lo.mni_landmark[2])
        assert abs((centre_z[hi.key] - centre_z[lo.key]) - expected) < 7.5 + spacing
    # The brain's cross-section shrinks from the internal capsule to the vertex.
    area = {k: (scan.truth["wm"][..., i] + scan.truth["gm"][..., i] > 0.5).sum() for k, i in scan.level_slices.items()}
    assert area["c"] > area["d"] > area["e"] > 0


def test_skull_stripped_scan_keeps_the_brain_and_zeroes_the_rest(infant):
    whole = simulate_subject(infant)
    stripped = simulate_subject(replace(infant, skull_stripped=True))
    k = whole.level_slices["c"]
    for a, b in ((whole.t1w, stripped.t1w), (whole.t2w, stripped.t2w)):
        # Air, skull and scalp are exactly 0; so are the corners (no noise floor left).
        assert (b[:, :, k] == 0).mean() > (a[:, :, k] == 0).mean() + 0.2
        assert not _background(b).any()
        # Inside the brain the voxels are the whole-head scan's, up to the intensity gain.
        inside = b[:, :, k] > 0
        ratio = a[:, :, k][inside].astype(float) / b[:, :, k][inside]
        assert np.median(ratio) > 0 and np.percentile(ratio, 90) / np.percentile(ratio, 10) < 1.5
    # The ventricles are kept: the centre of level c is brain, not a hole.
    n = stripped.t2w.shape[0]
    assert (stripped.t2w[n // 2 - 8:n // 2 + 8, n // 2 - 8:n // 2 + 8, k] > 0).all()


def test_smoothed_scan_loses_fine_detail_but_not_its_level(infant):
    level = simulate_subject(infant).level_slices["c"]
    sharp = simulate_subject(infant).t1w[:, :, level]
    smooth = simulate_subject(replace(infant, smoothing_fwhm_mm=3.0)).t1w[:, :, level]

    def detail(img):  # energy of the pixel-to-pixel differences relative to the image's
        img = img.astype(np.float64)
        return np.abs(np.diff(img, axis=0)).mean() / img.mean()

    assert detail(smooth) < 0.7 * detail(sharp)
    assert abs(smooth.astype(float).mean() / smooth.max() - sharp.astype(float).mean() / sharp.max()) < 0.05


def test_research_protocol_is_a_contiguous_3d_reformat(infant):
    research = simulate_subject(replace(infant, protocol="research3d"))
    clinical = simulate_subject(infant)
    assert research.affine[2, 2] == 5.0 and clinical.affine[2, 2] == 5.5 + 1.1
    assert research.t1w.shape[0] == 256 and research.t1w.shape[2] > clinical.t1w.shape[2]
