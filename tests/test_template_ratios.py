"""WM/GM ratios measured without segmentation (kerasmyelin.validation.template_ratios), and the
MNI priors (atlas.priors) and alignment to MNI (atlas.alignment) it rests on.

The phantom tests need nothing but nilearn's bundled MNI152 priors. The template tests need the
real infant templates next to the repository (../shared/data/infant_templates) and skip,
saying so, where that folder is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kerasmyelin.errors import InputError
from kerasmyelin.levels import LEVEL_KEYS, LEVELS
from kerasmyelin.atlas import alignment as ma
from kerasmyelin.atlas import priors as mp
from kerasmyelin.validation import template_ratios as tr

TEMPLATES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "infant_templates"


def _templates() -> Path:
    if not TEMPLATES.is_dir():
        pytest.skip(f"real infant templates not found at {TEMPLATES} (the ../shared folder is "
                    "absent); these checks run where it is present")
    return TEMPLATES


def _mni_point_in(mask: np.ndarray, point: tuple[float, float, float]) -> bool:
    mni = mp.load_mni_priors()
    ijk = np.rint(np.linalg.inv(mni.affine) @ [*point, 1.0]).astype(int)[:3]
    return bool(mask[tuple(ijk)])


# --------------------------------------------------------------------------------------------
# find_templates
# --------------------------------------------------------------------------------------------


def test_find_templates_names_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError) as info:
        tr.find_templates(missing)
    assert str(missing) in str(info.value)


def test_find_templates_names_folder_and_missing_files(tmp_path):
    (tmp_path / "Template-Month0-T1w.nii.gz").touch()
    with pytest.raises(InputError) as info:
        tr.find_templates(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "Template-Month24-T2w.nii.gz" in message
    assert "Template-Month0-T1w.nii.gz" not in message


def test_find_templates_complete(tmp_path):
    for month in tr.TEMPLATE_MONTHS:
        for contrast in ("T1w", "T2w"):
            (tmp_path / f"Template-Month{month}-{contrast}.nii.gz").touch()
    found = tr.find_templates(tmp_path)
    assert set(found) == {(m, c) for m in tr.TEMPLATE_MONTHS for c in ("T1w", "T2w")}
    assert found[(9, "T2w")] == tmp_path / "Template-Month9-T2w.nii.gz"


# --------------------------------------------------------------------------------------------
# MNI priors and the cerebrum reference
# --------------------------------------------------------------------------------------------


def test_mni_priors_are_cached_and_read_only():
    a, b = mp.load_mni_priors(), mp.load_mni_priors()
    assert a is b
    assert a.gm.shape == a.wm.shape == a.brain.shape == (197, 233, 189)
    assert 0.0 <= float(a.wm.min()) and float(a.wm.max()) <= 1.0
    with pytest.raises(ValueError):
        a.wm[0, 0, 0] = 1.0


def test_mni_cerebrum_drops_cerebellum_and_pons_only():
    mni = mp.load_mni_priors()
    for point in [(20, -65, -40), (-20, -65, -40), (0, -60, -25), (0, -28, -35)]:
        assert _mni_point_in(mni.brain, point) and not _mni_point_in(mni.cerebrum, point), point
    for point in [(0, 50, 10), (45, -10, -30), (-45, -10, -30), (0, -30, 60), (0, -20, -8),
                  (30, -80, -5)]:
        assert _mni_point_in(mni.cerebrum, point), point
    assert 1500e3 < mni.cerebrum.sum() < 1800e3  # mL at 1 mm: cerebrum of an adult
    assert not (mni.cerebrum & ~mni.brain).any()


# --------------------------------------------------------------------------------------------
# A phantom built from the MNI priors themselves: known WM/GM ratio 2, known affine
# --------------------------------------------------------------------------------------------

PHANTOM_ZOOMS = (0.8, 0.85, 0.9)  # an "infant" 0.8-0.9x the size of MNI, anisotropically
PHANTOM_SHIFT = (7.0, -12.0, 15.0)  # mm


def _phantom(mask_name: str) -> nib.Nifti1Image:
    """WM 2, GM 1, other brain (CSF) 0.3, background 0, on the MNI grid with a new affine."""
    mni = mp.load_mni_priors()
    brain = getattr(mni, mask_name)
    data = np.zeros(brain.shape, np.float32)
    data[brain] = 0.3
    data[brain & (mni.gm > 0.5)] = 1.0
    data[brain & (mni.wm > 0.5)] = 2.0
    affine = np.diag([*PHANTOM_ZOOMS, 1.0])
    affine[:3, 3] = np.array(PHANTOM_ZOOMS) * mni.affine[:3, 3] + PHANTOM_SHIFT
    return nib.Nifti1Image(data, affine)


@pytest.fixture(scope="module", params=["brain", "cerebrum"])
def phantom(request) -> nib.Nifti1Image:
    return _phantom(request.param)


def test_alignment_recovers_phantom_affine(phantom):
    mni = mp.load_mni_priors()
    mask = ma.brain_mask_from_image(np.asarray(phantom.dataobj))
    subject_to_mni = ma.align_to_mni(mask, phantom.affine)
    # Exact answer: subject world -> voxel -> MNI world.
    truth = mni.affine @ np.linalg.inv(phantom.affine)
    np.testing.assert_allclose(np.diag(subject_to_mni)[:3], np.diag(truth)[:3], rtol=0.03)
    for level in LEVELS:
        z = level.mni_landmark[2]
        k = ma.mni_z_to_axial_index(z, subject_to_mni, phantom.affine, level.mni_landmark[:2])
        expected = z - mni.affine[2, 3]  # MNI voxels are 1 mm
        assert abs(k - expected) <= 2, (level.key, k, expected)


def test_moment_alignment_alone_matches_same_shape():
    """Moments are exact when both masks have the same shape (cerebrum phantom)."""
    mni = mp.load_mni_priors()
    img = _phantom("cerebrum")
    mask = ma.brain_mask_from_image(np.asarray(img.dataobj))
    got = ma.moment_alignment(mask, img.affine, mni.cerebrum, mni.affine)
    truth = mni.affine @ np.linalg.inv(img.affine)
    np.testing.assert_allclose(got[:3, :3], truth[:3, :3], atol=0.01)
    np.testing.assert_allclose(got[:3, 3], truth[:3, 3], atol=1.0)


def test_phantom_ratio_is_two(phantom):
    ratios = tr.wm_gm_ratios(phantom)
    assert list(ratios) == list(LEVEL_KEYS)
    for key in ("b", "c", "d", "e"):
        assert ratios[key] == pytest.approx(2.0, abs=0.1), (key, ratios)
    assert math.isnan(ratios["a"]) or ratios["a"] == pytest.approx(2.0, abs=0.2)


def test_phantom_masks_sit_on_their_tissue():
    img = _phantom("brain")
    for key, m in tr.level_masks(img).items():
        if key == "a":
            continue
        assert len(m.slices) == 5  # 5 mm at 0.9 mm voxels
        assert m.wm.sum() >= tr.MIN_MASK_VOXELS and m.gm.sum() >= tr.MIN_MASK_VOXELS
        assert np.mean(m.intensity[m.wm] == 2.0) > 0.95, key
        assert np.mean(m.intensity[m.gm] == 1.0) > 0.6, key
        assert not (m.wm & m.gm).any()


def test_ratio_independent_of_voxel_order():
    """An LPS-stored copy (x and y flipped, affine to match) gives the same ratios."""
    img = _phantom("cerebrum")
    data = np.asarray(img.dataobj)[::-1, ::-1, :].copy()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flip[1, 3] = data.shape[1] - 1
    flipped = nib.Nifti1Image(data, img.affine @ flip)
    a, b = tr.wm_gm_ratios(img), tr.wm_gm_ratios(flipped)
    for key in LEVEL_KEYS:
        assert a[key] == pytest.approx(b[key], rel=1e-6, nan_ok=True)


def test_explicit_brain_mask_is_used_and_checked():
    img = _phantom("cerebrum")
    data = np.asarray(img.dataobj)
    ratios = tr.wm_gm_ratios(img, brain_mask=data > 0)
    assert ratios["d"] == pytest.approx(2.0, abs=0.1)
    with pytest.raises(InputError, match="shape"):
        tr.wm_gm_ratios(img, brain_mask=np.ones((3, 3, 3), bool))
    with pytest.raises(InputError, match="empty"):
        tr.wm_gm_ratios(img, brain_mask=np.zeros(data.shape, bool))


def test_empty_volume_is_bad_input(tmp_path):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), path)
    with pytest.raises(InputError) as info:
        tr.wm_gm_ratios(nib.load(path))
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------
# Real infant templates
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_images() -> dict[tuple[int, str], nib.Nifti1Image]:
    found = tr.find_templates(_templates())
    return {key: tr.corrected_image(found[key]) for key in [(0, "T1w"), (0, "T2w"), (24, "T1w"),
                                                            (24, "T2w")]}


@pytest.fixture(scope="module")
def newborn_and_toddler(template_images) -> dict[tuple[int, str], dict[str, float]]:
    return {key: tr.wm_gm_ratios(img) for key, img in template_images.items()}


def test_t1w_white_matter_brightens_with_age(newborn_and_toddler):
    r = newborn_and_toddler
    for key in ("c", "d", "e"):
        assert r[(24, "T1w")][key] > r[(0, "T1w")][key], (key, r)
    assert r[(24, "T1w")]["d"] > 1.1  # myelinated WM clearly brighter than cortex on T1w
    assert r[(0, "T1w")]["d"] < 1.0  # unmyelinated WM darker than cortex at birth


def test_t2w_white_matter_darkens_with_age(newborn_and_toddler):
    r = newborn_and_toddler
    for key in ("c", "d", "e"):
        assert r[(24, "T2w")][key] < r[(0, "T2w")][key], (key, r)
    assert r[(24, "T2w")]["d"] < 0.8  # myelinated WM clearly darker than cortex on T2w


def test_template_ratios_finite_and_plausible(newborn_and_toddler):
    for key, ratios in newborn_and_toddler.items():
        for level in ("b", "c", "d", "e"):
            assert 0.4 < ratios[level] < 2.0, (key, level, ratios)


def test_template_alignment_maps_centroid_to_mni(template_images):
    mni = mp.load_mni_priors()
    mni_centroid = ma._world_coords(mni.cerebrum, mni.affine).mean(axis=0)
    for key, img in template_images.items():
        mask = ma.brain_mask_from_image(np.asarray(img.dataobj))
        subject_to_mni = ma.align_to_mni(mask, img.affine)
        centroid = ma._world_coords(mask, img.affine, stride=2).mean(axis=0)
        mapped = subject_to_mni[:3, :3] @ centroid + subject_to_mni[:3, 3]
        assert np.linalg.norm(mapped - mni_centroid) < 6.0, (key, mapped, mni_centroid)
        # Infants are smaller than the adult MNI brain: every scale > 1, newborns most.
        assert np.all(np.diag(subject_to_mni)[:3] > 1.0), key
        levels = [ma.mni_z_to_axial_index(lv.mni_landmark[2], subject_to_mni, img.affine)
                  for lv in LEVELS]
        assert levels == sorted(levels) and len(set(levels)) == 5, (key, levels)
        assert 0 <= levels[0] and levels[-1] < img.shape[2]


@pytest.mark.slow
def test_full_template_table():
    table = tr.template_ratio_table(_templates())
    assert set(table) == {(m, c) for m in tr.TEMPLATE_MONTHS for c in ("T1w", "T2w")}
    for key, ratios in table.items():
        assert list(ratios) == list(LEVEL_KEYS), key
        for level in ("b", "c", "d", "e"):
            assert math.isfinite(ratios[level]), (key, level)
    # Centrum semiovale (d): T2w WM/GM falls month by month; T1w is above birth at every age.
    t2_d = [table[(m, "T2w")]["d"] for m in tr.TEMPLATE_MONTHS]
    assert t2_d == sorted(t2_d, reverse=True), t2_d
    t1_d = [table[(m, "T1w")]["d"] for m in tr.TEMPLATE_MONTHS]
    assert all(v > t1_d[0] for v in t1_d[1:]), t1_d
