"""Issue 19's input checks of the whole-brain pipeline: which image is the T1w
(``wholebrain.contrast_order``), and whether the pair is an infant's head at all
(``wholebrain.plausibility``). Numbers on the real templates and on synthetic infants;
rules on tiny arrays whose answer is known by construction. The CLI cases are in
tests/test_malformed_inputs.py."""

import csv
import os

import numpy as np
import pytest

from kerasmyelin.errors import InputError
from kerasmyelin.io.nifti import load_volume
from kerasmyelin.wholebrain import contrast_order, plausibility
from kerasmyelin.wholebrain.contrast_order import (
    MIN_SCORE,
    brighter,
    check_contrast_order,
    csf_cue,
    fat_cue,
)
from kerasmyelin.wholebrain.level_finder import find_levels, subject_outline
from kerasmyelin.wholebrain.plausibility import (
    BRAIN_ML_FLAG_RANGE,
    MIN_NEIGHBOUR_R,
    brain_size_warning,
    brain_volume_ml,
    check_head_geometry,
    check_not_the_same_file,
    check_not_the_same_image,
    neighbour_correlation,
)
from kerasmyelin.wholebrain.volumes import make_pair
from tests.conftest import TEMPLATES, require_shared


def test_brighter_is_the_chance_that_one_voxel_outshines_the_other():
    # Pairs (a, b): 3>1, 3>2, 3=3 (half), 4>1, 4>2, 4>3: 5.5 of 6.
    assert brighter(np.array([3.0, 4.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(5.5 / 6)
    assert brighter(np.array([0.0]), np.array([1.0, 2.0])) == 0.0


def _mni_volumes(ventricles: float, white: float, elsewhere: float = 0.0):
    """A volume on a 2 mm MNI grid holding ``ventricles`` at MNI's lateral ventricles and ``white``
    at its deep white matter; its affine is also its world, so the alignment is the identity."""
    from kerasmyelin.atlas.priors import ventricle_and_white_matter_points

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    volume = np.full((91, 109, 91), elsewhere, np.float32)
    inv = np.linalg.inv(affine)
    ventricle_points, white_points = ventricle_and_white_matter_points()
    for points, value in ((white_points, white), (ventricle_points, ventricles)):
        ijk = np.rint(points @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = value
    return volume, affine


def test_csf_cue_is_plus_one_for_dark_csf_on_t1w_and_bright_on_t2w_and_swapping_negates_it():
    t1, affine = _mni_volumes(ventricles=100.0, white=500.0)
    t2, _ = _mni_volumes(ventricles=900.0, white=500.0)
    identity = np.eye(4)
    assert csf_cue(t1, t2, affine, identity) == pytest.approx(1.0, abs=0.01)
    assert csf_cue(t2, t1, affine, identity) == pytest.approx(-csf_cue(t1, t2, affine, identity))
    assert csf_cue(t1, t1.copy(), affine, identity) == 0.0  # one contrast twice: no answer
    # Outside the field of view (the ventricles mapped 1 m away) it is not measured.
    far = np.eye(4)
    far[2, 3] = 1000.0
    assert csf_cue(t1, t2, affine, far) is None


def _ball_head(fat_t1: float, fat_t2: float, brain_t1: float = 300.0, brain_t2: float = 700.0):
    """A 150 mm ball at 2 mm: 6 mm of scalp around a uniform brain, background 0 plus noise."""
    rng = np.random.default_rng(0)
    n = 90
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -(n - 1)
    r = np.sqrt(((np.indices((n, n, n)) - (n - 1) / 2) ** 2).sum(0)) * 2.0
    vols = []
    for fat, brain in ((fat_t1, brain_t1), (fat_t2, brain_t2)):
        v = np.select([r < 69, r < 75], [brain, fat], 0.0) + rng.normal(0, 5, r.shape)
        vols.append(np.abs(v).astype(np.float32))
    return vols, affine


def test_fat_cue_reads_a_bright_t1w_scalp_and_only_for_whole_heads():
    (t1, t2), affine = _ball_head(fat_t1=900.0, fat_t2=200.0)
    outline = subject_outline(t1, affine, skull_stripped=False)
    assert fat_cue(t1, t2, outline) == pytest.approx(1.0, abs=0.02)
    assert fat_cue(t2, t1, outline) == pytest.approx(-fat_cue(t1, t2, outline))
    assert fat_cue(t1, t2, subject_outline(t1, affine, skull_stripped=True)) is None


def _truth(cohort):
    with open(cohort / "derivatives" / "synth_truth" / "truth.tsv", newline="") as fh:
        return {r["participant_id"]: r for r in csv.DictReader(fh, delimiter="\t")}


def test_synthetic_infants_pass_every_check_and_their_swapped_pairs_are_refused(tiny_cohort):
    """Four synthetic infants (both scanners, ages spread): accepted with margin, brain volume
    within 10% of the truth; each given the other way round is refused as swapped."""
    truth = _truth(tiny_cohort)
    for pid, row in truth.items():
        files = {c: tiny_cohort / pid / "anat" / f"{pid}_{c}.nii.gz" for c in ("T1w", "T2w")}
        volumes = {c: load_volume(f) for c, f in files.items()}
        pair = make_pair(volumes["T1w"], volumes["T2w"], {c: str(f) for c, f in files.items()})
        assert min(pair.noise.values()) > 2 * MIN_NEIGHBOUR_R, (pid, pair.noise)
        fit = find_levels(pair.t1, pair.affine, skull_stripped=pair.skull_stripped, outline=pair.t1_outline)
        order = check_contrast_order(pair, fit)
        assert order.score > 2 * MIN_SCORE and order.csf > 0 and order.fat > 0, (pid, order)
        assert brain_volume_ml(fit) == pytest.approx(float(row["brain_volume_ml"]), rel=0.10), pid
        swapped = make_pair(volumes["T2w"], volumes["T1w"], {"T1w": str(files["T2w"]), "T2w": str(files["T1w"])})
        fit = find_levels(swapped.t1, swapped.affine, skull_stripped=swapped.skull_stripped,
                          outline=swapped.t1_outline)
        with pytest.raises(InputError, match="look swapped") as err:
            check_contrast_order(swapped, fit)
        assert files["T2w"].name in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("as_stored", [False, True], ids=["headers corrected", "as stored (reversed)"])
def test_the_real_templates_pass_at_every_age_and_their_swapped_pairs_are_refused(as_stored):
    """The five real infant templates (skull-stripped: the CSF cue alone), read with their headers
    corrected and as stored (front and back reversed: the turned alignment finds the ventricles)."""
    from kerasmyelin.io.infant_templates import (
        TEMPLATE_MONTHS,
        corrected_image,
        template_file,
    )

    folder = require_shared(TEMPLATES)
    for months in TEMPLATE_MONTHS:
        volumes = []
        for contrast in ("T1w", "T2w"):
            path = template_file(folder, months, contrast)
            img = None if as_stored else corrected_image(path)
            volumes.append(load_volume(path) if as_stored else (np.asarray(img.dataobj), img.affine))
        for t1, t2, sign in ((volumes[0], volumes[1], 1), (volumes[1], volumes[0], -1)):
            pair = make_pair(t1, t2, {"T1w": f"{months}-a", "T2w": f"{months}-b"})
            fit = find_levels(pair.t1, pair.affine, skull_stripped=pair.skull_stripped, outline=pair.t1_outline)
            order = contrast_order.contrast_order(pair.t1, pair.t2, pair.affine, fit.mni_alignment, pair.t1_outline)
            assert sign * order.score > MIN_SCORE, (months, sign, order)  # +0.32 and up, -0.22 and down
            if sign > 0:
                assert fit.looks_reversed == as_stored
                assert check_contrast_order(pair, fit) == order
                assert BRAIN_ML_FLAG_RANGE[0] < brain_volume_ml(fit) < BRAIN_ML_FLAG_RANGE[1]
            else:
                with pytest.raises(InputError, match="look swapped"):
                    check_contrast_order(pair, fit)


@pytest.mark.parametrize("sizes, shape, problem", [
    ((3.0, 3.0, 6.0), (40, 40, 20), None),  # the coarsest accepted: 120 x 120 x 120 mm
    ((3.1, 3.1, 6.0), (40, 40, 20), "too coarse for an infant head scan"),
    ((0.5, 4.0, 4.0), (256, 30, 30), "too coarse"),  # one fine axis is not enough
    ((1.0, 1.0, 5.0), (50, 60, 8), None),  # 50 x 60 x 40 mm: the smallest accepted span
    ((1.0, 1.0, 5.0), (49, 60, 8), "too small for an infant head"),
    ((0.8, 0.8, 0.8), (320, 320, 20), None),  # a thin slab: the level finder names missing levels
])
def test_geometry_no_infant_head_scan_has_is_refused_at_the_edges(sizes, shape, problem):
    affine = np.diag([*sizes, 1.0])
    if problem is None:
        check_head_geometry(shape, affine, "scan.nii.gz")
    else:
        with pytest.raises(InputError, match=problem) as err:
            check_head_geometry(shape, affine, "scan.nii.gz")
        assert str(err.value).startswith("scan.nii.gz: ")


def test_one_image_given_twice_is_refused_and_one_changed_voxel_is_enough_to_differ():
    a = np.random.default_rng(0).random((20, 21, 22)).astype(np.float32)
    sources = {"T1w": "t1.nii.gz", "T2w": "t2.nii.gz"}
    with pytest.raises(InputError, match="^t2.nii.gz: has exactly the same voxels as the T1w t1.nii.gz"):
        check_not_the_same_image(a, a.copy(), sources)
    b = a.copy()
    b[3, 4, 5] += 1.0  # off the strided sample (every 7th voxel): the full comparison finds it
    check_not_the_same_image(a, b, sources)
    check_not_the_same_image(a, a[:, :, :-1], sources)  # other shapes: nothing to compare


def test_one_file_given_twice_is_refused_through_links_too(tmp_path):
    first = tmp_path / "T1w.nii.gz"
    first.write_bytes(b"x")
    link = tmp_path / "T2w.nii.gz"
    os.symlink(first, link)
    with pytest.raises(InputError, match="is the same file as the T1w"):
        check_not_the_same_file(first, first)
    with pytest.raises(InputError, match="^" + str(link)):
        check_not_the_same_file(first, link)
    other = tmp_path / "other.nii.gz"
    other.write_bytes(b"x")  # equal bytes, another file: the voxel check's business
    check_not_the_same_file(first, other)
    check_not_the_same_file(first, tmp_path / "missing.nii.gz")  # the reader names a missing file


def test_noise_has_unrelated_neighbours_and_a_head_has_alike_ones():
    (t1, _), affine = _ball_head(fat_t1=900.0, fat_t2=200.0)
    # Texture a head has: smooth variation (a 20 mm wave) over the uniform brain.
    x = np.indices(t1.shape)[0] * 2.0
    textured = (t1 + 100 * np.sin(2 * np.pi * x / 20.0) * ((t1 > 200) & (t1 < 600))).astype(np.float32)
    outline = subject_outline(textured, affine, skull_stripped=False)
    # Neighbours 2 mm apart on a 20 mm wave are 36 degrees apart in phase: r = cos(36 deg).
    assert neighbour_correlation(textured, outline) == pytest.approx(np.cos(np.deg2rad(36.0)), abs=0.03)
    noise = np.random.default_rng(1).random(t1.shape).astype(np.float32) * 1000
    noise_outline = subject_outline(noise, affine, skull_stripped=False)
    assert abs(neighbour_correlation(noise, noise_outline)) < 0.05
    pair = make_pair((textured, affine), (noise, affine), {"T1w": "t1.nii.gz", "T2w": "t2.nii.gz"}, check=False)
    with pytest.raises(InputError, match="^t2.nii.gz: looks like random noise"):
        plausibility.check_not_noise(pair, (outline, noise_outline))


def test_brain_size_is_flagged_far_outside_infants_only():
    lo, hi = BRAIN_ML_FLAG_RANGE
    assert (round(lo), round(hi)) == (128, 1767)  # 60% of 213 mL; 125% of 1413.9 mL (docs/inputs.md)
    assert brain_size_warning(450.0) is None and brain_size_warning(hi) is None and brain_size_warning(lo) is None
    assert "far larger than an infant's" in brain_size_warning(1894.0)  # the adult-sized synthetic head
    assert "far smaller" in brain_size_warning(100.0)
