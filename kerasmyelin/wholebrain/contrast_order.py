"""Which image is the T1w? Infant CSF is dark on a T1w and bright on a T2w at every age.

Given the wrong way round, a pair is read as another age altogether (a 9.4-month-old read as
4.2 months, issue 19). Grey and white matter swap their contrast in the first two years
(unmyelinated white matter is dark on a T1w and bright on a T2w at birth, the other way round
by two years), so no rule about them holds at every age. Two that do:

* **CSF** has the longest T1 and T2 of the brain at every age: the ventricles are darker than
  white matter on a T1w and brighter on a T2w. The level finder's alignment carries MNI's
  lateral ventricles and deep white matter (:func:`kerasmyelin.atlas.priors.ventricle_and_white_matter_points`)
  into the scan, and the cue is

      P(a ventricle voxel is brighter than a white-matter voxel) on the T2w, minus the same on the T1w.

* **Fat** (the scalp) has the shortest T1 of the head: on a T1w the scalp is brighter than the
  brain deep inside it, on a T2w the brain's water is at least as bright. For whole-head scans
  (not skull-stripped) the second cue is

      P(a scalp voxel is brighter than a deep brain voxel) on the T1w, minus the same on the T2w,

  the scalp being the head outline's outer :data:`SCALP_MM` (its outermost layer of points), the
  brain what lies deeper than :data:`DEEP_MM`.

The score is their sum (each lies in -1 to +1). Swapping the images negates each cue exactly,
and ranks make them blind to intensity scale, offset and smooth bias. Each cue covers the
other's weak case: a newborn's inversion-recovery T1w taken near the null point of its
unmyelinated white matter shows CSF a little brighter than that white matter (CSF cue -0.08),
while its scalp fat stands out (+0.75); skull-stripped images have no scalp, and there the
ventricles alone score +0.32 and more on the templates. Where the header reverses front and back
(``LevelFit.looks_reversed``), the turned alignment places the ventricles. ``experiments/calibrate_input_checks.py`` measures the
score on the five infant templates and on synthetic infants of every protocol and anatomy;
docs/inputs.md gives the numbers behind :data:`MIN_SCORE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasmyelin.errors import InputError

# A pair is accepted from this score on and called swapped from its negative on. Measured
# (docs/inputs.md): the right way round, +0.32 and up on the five templates (headers corrected or
# as stored) and +0.34 and up on 100 synthetic infants; swapped, -0.22 and below, and -0.36 and
# below; two images of one contrast score 0.00.
MIN_SCORE = 0.15
# Fewer ventricle or white-matter points than this inside the field of view: the CSF cue is not measured.
MIN_POINTS = 20
SCALP_MM = 4.5  # the outline's outer layer (its points lie every ~4 mm)
DEEP_MM = 15.0  # beyond the skull and the CSF around the brain, even at 24 months


@dataclass(frozen=True)
class ContrastOrder:
    """How CSF and fat compare with the brain on each image.

    Attributes:
        score: the sum of the cues; positive for a pair the right way round.
        csf: the ventricle cue (module docstring), or None when too little of the ventricles
            was imaged (fewer than :data:`MIN_POINTS`).
        fat: the scalp cue, or None for skull-stripped images.
    """

    score: float
    csf: float | None
    fat: float | None

    @property
    def measured(self) -> bool:
        return self.csf is not None or self.fat is not None

    def as_dict(self) -> dict:
        return {k: None if v is None else round(float(v), 4)
                for k, v in (("score", self.score), ("csf", self.csf), ("fat", self.fat))}


def brighter(a: np.ndarray, b: np.ndarray) -> float:
    """P(a voxel of ``a`` is brighter than one of ``b``), ties counting half (the AUC)."""
    b = np.sort(b)
    below = np.searchsorted(b, a, side="left").astype(np.float64)
    ties = np.searchsorted(b, a, side="right") - below
    return float((below + 0.5 * ties).sum() / (a.size * b.size))


def _voxels_at(mni_points: np.ndarray, shape, affine: np.ndarray, subject_to_mni: np.ndarray) -> tuple:
    """Index arrays of the voxels (nearest) at MNI points mapped into the scan, those outside dropped."""
    to_voxel = np.linalg.inv(np.asarray(affine, np.float64)) @ np.linalg.inv(np.asarray(subject_to_mni, np.float64))
    ijk = np.rint(mni_points @ to_voxel[:3, :3].T.astype(np.float32) + to_voxel[:3, 3].astype(np.float32)).astype(np.int64)
    ijk = ijk[np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)]
    return ijk[:, 0], ijk[:, 1], ijk[:, 2]


def csf_cue(t1: np.ndarray, t2: np.ndarray, affine: np.ndarray, subject_to_mni: np.ndarray) -> float | None:
    """The ventricle cue of a pair on one grid (module docstring); None when not measurable.

    Args:
        t1, t2: (X, Y, Z) volumes on one grid (any numeric type).
        affine: 4x4 voxel -> world mm of both.
        subject_to_mni: 4x4 world mm -> MNI mm (``LevelFit.mni_alignment``).
    """
    from kerasmyelin.atlas.priors import ventricle_and_white_matter_points

    ventricles, white = (_voxels_at(p, t1.shape, affine, subject_to_mni) for p in ventricle_and_white_matter_points())
    if min(ventricles[0].size, white[0].size) < MIN_POINTS:
        return None
    t1_brighter, t2_brighter = (brighter(np.asarray(v[ventricles], np.float64), np.asarray(v[white], np.float64))
                                for v in (t1, t2))
    return t2_brighter - t1_brighter


def fat_cue(t1: np.ndarray, t2: np.ndarray, outline) -> float | None:
    """The scalp cue of a whole-head pair (module docstring); None when skull-stripped.

    Args:
        t1, t2: (X, Y, Z) volumes on one grid.
        outline: the T1w's ``level_finder.Outline`` (its points are sampled in both images).
    """
    if outline.skull_stripped:
        return None
    depth = outline.distance()
    # The outer layer of points, however coarse their grid (a 2.5 mm scan samples every 5 mm).
    scalp = outline.inside & (depth <= max(SCALP_MM, float(np.min(outline.spacing))))
    deep = outline.inside & (depth >= DEEP_MM)
    if min(scalp.sum(), deep.sum()) < MIN_POINTS:
        return None
    sx, sy, sz = outline.step
    found = []
    for volume in (t1, t2):
        values = np.asarray(volume[::sx, ::sy, ::sz][: outline.shape[0], : outline.shape[1], : outline.shape[2]],
                            np.float64).reshape(-1)
        found.append(brighter(values[scalp], values[deep]))
    return found[0] - found[1]


def contrast_order(t1: np.ndarray, t2: np.ndarray, affine: np.ndarray, subject_to_mni: np.ndarray,
                   outline) -> ContrastOrder:
    """Both cues of a pair and their sum (0 where neither could be measured)."""
    csf = csf_cue(t1, t2, affine, subject_to_mni)
    fat = fat_cue(t1, t2, outline)
    return ContrastOrder(score=(csf or 0.0) + (fat or 0.0), csf=csf, fat=fat)


def check_contrast_order(pair, fit, finder=None) -> ContrastOrder:
    """Refuse a pair whose T1w and T2w look swapped, or that shows no infant tissue contrast.

    Args:
        pair: the ``volumes.ScanPair``.
        fit: the level finder's fit of ``pair.t1``.
        finder: the ``FinderConfig`` to refit with (see below); None for the default.

    Returns:
        The :class:`ContrastOrder` (also when nothing could be measured: ``measured`` is then
        False, and the caller says so).

    Raises:
        InputError: naming the T1w. A swapped pair's "T1w" is a T2w, whose head outline can fit
            the reference worse (a newborn's bright brain merges with its scalp); so a score
            between ``-MIN_SCORE`` and :data:`MIN_SCORE` is measured again on the other image's
            fit, and either fit scoring ``-MIN_SCORE`` or less says "swapped".
    """
    from kerasmyelin.wholebrain.level_finder import (
        FinderConfig,
        find_levels,
        subject_outline,
    )

    outline = pair.t1_outline
    if outline is None or outline.skull_stripped != bool(pair.skull_stripped):
        outline = subject_outline(pair.t1, pair.affine, bool(pair.skull_stripped), source=pair.sources.get("T1w"))
    order = contrast_order(pair.t1, pair.t2, pair.affine, fit.mni_alignment, outline)
    if not order.measured or order.score >= MIN_SCORE:
        return order
    scores = [order.score]
    if order.score > -MIN_SCORE:  # undecided: the other image's outline may fit better
        other = find_levels(pair.t2, pair.affine, skull_stripped=pair.skull_stripped, config=finder or FinderConfig(),
                            source=pair.sources.get("T2w"))
        scores.append(contrast_order(pair.t1, pair.t2, pair.affine, other.mni_alignment, outline).score)
    t2_name = pair.sources.get("T2w") or "the T2w"
    numbers = (f"contrast score {scores[0]:+.2f}" + (f", {scores[1]:+.2f} aligned on the T2w" if len(scores) > 1 else "")
               + f"; infant pairs score +{MIN_SCORE:g} and more")
    if min(scores) <= -MIN_SCORE:
        raise InputError(f"the T1w and T2w look swapped: on an infant's T1w CSF is darker than white matter (and the "
                         f"scalp brighter than the brain), on its T2w the other way round, but here this image looks "
                         f"like the T2w and {t2_name} like the T1w ({numbers}); if the files are labelled the wrong way "
                         "round, give them the other way round (one infant: kerasmyelin predict --swap-contrasts)",
                         pair.sources.get("T1w"))
    raise InputError(f"cannot tell which image is the T1w: an infant's CSF is darker than white matter on a T1w and "
                     f"brighter on a T2w, but this image and {t2_name} barely differ that way ({numbers}); are they "
                     "an infant's T1w and T2w of the head?", pair.sources.get("T1w"))
