"""Is this an infant's head? Checks of a T1w/T2w pair before any estimate is made.

Each check answers one way an input got an age it should not have (issue 19). The thresholds and
the numbers behind them are measured by ``experiments/calibrate_input_checks.py`` on the five
infant templates and on synthetic infants of every protocol and anatomy (docs/inputs.md):

* :func:`check_head_geometry`: voxels and a field of view no infant head scan has. The reader
  (``io.nifti``) already refuses what no MR scan has; this is the stricter rule for the model's
  input, an infant head seen in 128 x 128 slices.
* :func:`check_not_the_same_image`: the same voxels given as both contrasts.
* :func:`check_not_noise`: random noise fills the outline finder's "head" and passes the level
  finder (a 160 mm cube of noise fits the head reference with overlap 0.95), so the voxels
  themselves are tested: neighbouring voxels of an MR image are alike, those of noise are not.
* :func:`brain_volume_ml` and :func:`brain_size_warning`: a brain far larger (an adult's) or
  smaller than an infant's of 0-24 months. Flagged, not refused: the grade is withheld
  ("not graded: check the input", reason ``brain_size_outside_infants``), since size alone
  cannot prove a scan is not an infant's.

Which image is the T1w is checked by :mod:`.contrast_order`.
"""

from __future__ import annotations

import os

import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.synth import growth

# An infant head scan has at least two axes this fine: at 3 mm a newborn's 100 mm head spans 33
# voxels, a quarter of the model's 128 pixels (scans the model was trained on: 0.35-1.2 mm).
MAX_IN_PLANE_MM = 3.0
# ... and spans at least this on its two widest axes: the smallest head predict takes, a preterm's
# at -3 months corrected (27 weeks' gestation), holds a ~100 mL brain (synth.growth), a 58 mm ball,
# ~65 mm across with its scalp.
MIN_HEAD_SPAN_MM = 50.0

# Neighbouring voxels inside the head (this deep, mm) correlate at least this much. Measured: 0.79
# and up on the templates, 0.61 and up on 100 synthetic infants (the lowest a noisy 1.5 T newborn),
# -0.003 to +0.007 for uniform noise.
MIN_NEIGHBOUR_R = 0.3
NOISE_DEPTH_MM = 15.0  # inside the brain: neighbours across the scalp's edges differ in any image

# Brain volume (mL) from the level finder's scales: the reference's brain over the fitted volume
# ratio, det(scales). Calibrated on 100 synthetic infants of known brain volume: the median of
# volume x det(scales) is 1792 mL for whole heads (head reference, 81 infants) and 1813 mL when
# skull-stripped (cerebrum reference, 19); 90% of estimates lie within -6% and +5% of the truth,
# all but one (a failed fit, overlap 0.84: +118%) within -8% and +22%.
REFERENCE_BRAIN_ML = {"head": 1790.0, "cerebrum": 1810.0}
# Flag a brain outside this range (mL): 128 to 1767. Upper: the largest brain of the Baby Connectome
# Project's 0- to 24-month visits (1413.9 mL, at 24.5 months) plus 25% for the estimate's error.
# Lower: 60% of the median brain at -2 months corrected, the youngest trained age (213 mL).
BRAIN_ML_FLAG_RANGE = (0.6 * float(growth.brain_volume_ml(-2.0)), 1.25 * growth.LARGEST_INFANT_BRAIN_ML)


def check_head_geometry(shape, affine: np.ndarray, source: str | os.PathLike | None = None) -> None:
    """Refuse voxel sizes and a field of view no infant head scan has (see the constants)."""
    sizes = np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(axis=0))
    extent = sizes * np.asarray(shape[:3], dtype=np.float64)
    shown = "x".join(f"{v:.3g}" for v in sizes)
    spans = "x".join(f"{v:.0f}" for v in extent)
    if np.sort(sizes)[1] > MAX_IN_PLANE_MM:
        raise InputError(f"voxels of {shown} mm are too coarse for an infant head scan: at least two axes must be "
                         f"{MAX_IN_PLANE_MM:g} mm or finer (an infant's head, 100-180 mm across, would span "
                         f"{100 / np.sort(sizes)[1]:.0f}-{180 / np.sort(sizes)[1]:.0f} voxels; the model reads "
                         "128 x 128 slices)", source)
    if np.sort(extent)[1] < MIN_HEAD_SPAN_MM:
        raise InputError(f"the volume spans {spans} mm, too small for an infant head: its two widest axes must span "
                         f"at least {MIN_HEAD_SPAN_MM:g} mm (the smallest infant head is ~65 mm across)", source)


def check_not_the_same_image(t1: np.ndarray, t2: np.ndarray, sources: dict) -> None:
    """Refuse a T2w with exactly the T1w's voxels (one image given twice, or a copy of it)."""
    t1, t2 = np.asarray(t1), np.asarray(t2)
    if t1.shape != t2.shape:
        return
    # A strided sample first: different images differ there, and no full-size mask is made.
    sample = (slice(None, None, 7),) * 3
    if not np.array_equal(t1[sample], t2[sample]):
        return
    if all(np.array_equal(t1[..., k], t2[..., k]) for k in range(t1.shape[2])):
        raise InputError(f"has exactly the same voxels as the T1w {sources.get('T1w', '')}: the same image was given "
                         "as both contrasts; give the infant's T2w", sources.get("T2w"))


def check_not_the_same_file(t1_path: str | os.PathLike, t2_path: str | os.PathLike) -> None:
    """Refuse one file (or two links to it) given as both contrasts, before anything is read."""
    try:
        same = os.path.samefile(t1_path, t2_path)
    except OSError:  # a missing or unreadable file: the reader names it
        return
    if same:
        other = "" if os.fspath(t1_path) == os.fspath(t2_path) else f" {os.fspath(t1_path)}"
        raise InputError(f"the T2w is the same file as the T1w{other}: one file given as both contrasts; give the "
                         "infant's T2w", t2_path)


def neighbour_correlation(volume: np.ndarray, outline) -> float:
    """Correlation of each voxel with its neighbour along the finest axis, over the outline's
    sample points at least :data:`NOISE_DEPTH_MM` inside (all of them when few are).

    Args:
        volume: (X, Y, Z) the outline was made from.
        outline: its ``level_finder.Outline``.
    """
    depth = outline.distance()
    deep = outline.inside & (depth >= NOISE_DEPTH_MM)
    if deep.sum() < 100:
        deep = outline.inside
    ijk = np.stack(np.nonzero(deep.reshape(outline.shape)), axis=1) * np.asarray(outline.step)
    axis = int(np.argmin(outline.spacing / np.asarray(outline.step)))
    ijk = ijk[ijk[:, axis] + 1 < volume.shape[axis]]
    nxt = ijk.copy()
    nxt[:, axis] += 1
    a = np.asarray(volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]], np.float64)
    b = np.asarray(volume[nxt[:, 0], nxt[:, 1], nxt[:, 2]], np.float64)
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return 1.0 if a.size >= 3 and np.array_equal(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def check_not_noise(pair, outlines) -> dict[str, float]:
    """Refuse an image whose neighbouring voxels are unrelated: noise, not an MR image of a head.

    Returns:
        {"T1w": r, "T2w": r} of :func:`neighbour_correlation`.
    """
    found = {}
    for contrast, volume, outline in (("T1w", pair.t1, outlines[0]), ("T2w", pair.t2, outlines[1])):
        r = neighbour_correlation(volume, outline)
        if not r >= MIN_NEIGHBOUR_R:
            raise InputError(f"looks like random noise, not an MR image of a head: inside it, neighbouring voxels are "
                             f"nearly unrelated (correlation {r:.2f}; MR images of a head give more than "
                             f"{MIN_NEIGHBOUR_R:g}, measured 0.61 and up)", pair.sources.get(contrast))
        found[contrast] = round(r, 4)
    return found


def brain_volume_ml(fit) -> float:
    """The brain's volume (mL) from the level finder's fit (``LevelFit``): see the constants."""
    return float(REFERENCE_BRAIN_ML[fit.reference] / np.prod(fit.scale))


def brain_size_warning(volume_ml: float) -> str | None:
    """Why the grade is withheld for a brain of this size, or None inside :data:`BRAIN_ML_FLAG_RANGE`."""
    lo, hi = BRAIN_ML_FLAG_RANGE
    if lo <= volume_ml <= hi:
        return None
    larger = volume_ml > hi
    return (f"the brain (about {volume_ml:,.0f} mL, from the level finder's alignment) is far "
            f"{'larger' if larger else 'smaller'} than an infant's of 0-24 months ({lo:,.0f} to {hi:,.0f} mL "
            f"allowed): {'an older child or an adult' if larger else 'too small for a brain this model knows'}, "
            "or wrong voxel sizes in the header")
