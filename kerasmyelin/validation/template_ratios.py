"""White-matter to grey-matter intensity ratios at the five axial levels, without segmentation.

This module checks a synthetic cohort against real infant templates: it measures, in any
skull-stripped brain volume, how bright white matter (WM) is relative to grey matter (GM) at
each of the five levels of :mod:`kerasmyelin.levels`, using only the MNI152 tissue priors that
ship with nilearn.

Method
------
1. **Brain mask.** Voxels > 0 (the volume is skull-stripped), opened once (3x3x3 cross),
   largest connected component, enclosed holes filled.
2. **Alignment to MNI.** A diagonal affine, subject world mm -> MNI mm (one scale per world
   axis and a translation; no rotation, both spaces being RAS and roughly AC-PC aligned).
   First guess from moments: ``s_k = sqrt(var_MNI_k / var_subject_k)`` of the world
   coordinates of the two masks along x, y and z, translation matching the centroids. Then a
   coordinate search over the 6 parameters maximising the Dice overlap of the two masks on a
   2 mm world grid (~100 trials, each one separable table look-up; ~0.4 s).

   Two deviations from plain moment matching, both measured:

   * *The MNI reference mask is the cerebrum only* (:func:`mni_cerebrum_mask`: the MNI brain
     minus the cerebellum below a tentorium surface fitted by eye on the ICBM 2009a T1 and
     the brainstem below z = -20 mm). The UNC infant templates are cerebrum-only (cerebellum
     and brainstem below the midbrain cut away). Against the whole MNI brain their z scale
     comes out 8-14 % too large and the levels land too high: by 6-7 mm (subject mm) at
     level "a", 3-5 mm at "c", 0-1.6 mm at "e".
   * *The Dice refinement.* On the templates it moves the levels by at most 1.6 mm, but it
     makes the alignment insensitive to where a mask is cut: for a whole-brain mask (the MNI
     brain itself, rescaled), moments against the cerebrum reference are off by 13 % in z scale
     and ~8 mm (MNI) at level "c"; after the Dice search the errors are < 1 % and < 1 mm.

   A pitch (rotation about x) was tried in the Dice search and rejected: it raised the Dice
   by 0.01-0.02 with 4-16 degree pitches, but the lateral ventricles' long axis (a landmark
   independent of the outer shape) is within 2 degrees of MNI's without it at 9-24 months
   (7-10 degrees at 0-6 months), and 5-16 degrees off with it: the pitch fitted the
   infant-vs-adult difference in shape, not a difference in orientation.
3. **Tissue masks** (per level, only on the slab that is needed: the MNI priors are sampled
   trilinearly at the slab's voxels through the affine).
   WM = ``p_wm > 0.9``, eroded by 2 voxels in plane, deeper than 6 mm below the brain surface.
   GM = ``p_gm > 0.6`` *and* 1-3 mm below the brain surface (the outer cortical ribbon).
   The depth band replaces "inside the brain mask eroded by 1-2 voxels": an adult GM prior
   affinely mapped onto an infant brain marks a broad band that covers much of the infant's
   subcortical WM and the deep nuclei, so ``p_gm > 0.6`` alone gives a GM median close to
   the WM one. The ribbon's outermost voxel layer (partial volume with the zero background)
   is skipped. These settings were chosen by looking at overlays of every level and age and
   by comparing with a three-class intensity clustering of each slab at the ages with good
   contrast (they cut the mean |log ratio error| against it, levels b-e, from 0.145 to 0.124).
4. **Ratio.** The slab is ~5 mm thick (the odd number of slices nearest 5 mm, centred on the
   level's MNI z mapped into the subject at the level's landmark (x, y); 7 slices = 5.6 mm at
   0.8 mm voxels). ``ratio = median(intensity in WM) / median(intensity in GM)``.

Limitations
-----------
* An affine adult prior is only roughly right on an infant brain, so both masks are mixtures
  (by the clustering above, 45-75 % of the WM mask lies on WM at levels "d" and "e" at 24
  months, 30-45 % at "b" and "c", where the infant's relatively large deep nuclei and
  insula take the place of the adult internal and external capsules). Ratios are therefore
  *compressed towards 1*: at levels "d" and "e" at 24 months they are within ~5 % of the
  clustering's, at "b" and "c" they are much closer to 1 than the real contrast (T1w 1.02
  vs 1.22-1.24, T2w 0.83-0.90 vs 0.65-0.70). Compare like with like: measure the synthetic
  cohort with this same function.
* Level "a" (z = -30, pons / middle cerebellar peduncles) lies below the cut of
  cerebrum-only templates: the slab holds only the inferior temporal lobes (and the cut
  stump of the brainstem), the WM core is tiny, and the ratio can be NaN (fewer than
  :data:`MIN_MASK_VOXELS` voxels). Level "b" mixes midbrain, hypothalamus and medial temporal
  grey matter into "GM".

Units: world coordinates in mm (RAS), intensities in the image's own units; ratios are
dimensionless.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from kerasmyelin.errors import InputError
from kerasmyelin.levels import LEVELS

__all__ = [
    "GM_DEPTH_MM",
    "GM_PROBABILITY",
    "MIN_MASK_VOXELS",
    "SLAB_THICKNESS_MM",
    "TEMPLATE_CONTRASTS",
    "TEMPLATE_MONTHS",
    "WM_EROSION_VOXELS",
    "WM_MIN_DEPTH_MM",
    "WM_PROBABILITY",
    "LevelMasks",
    "MniPriors",
    "align_to_mni",
    "brain_mask_from_image",
    "find_templates",
    "level_masks",
    "load_mni_priors",
    "mni_cerebrum_mask",
    "mni_z_to_axial_index",
    "moment_alignment",
    "refine_alignment_dice",
    "template_ratio_table",
    "wm_gm_ratios",
]

TEMPLATE_MONTHS: tuple[int, ...] = (0, 6, 9, 12, 24)
"""Ages (months) of the infant templates, ``Template-Month{m}-{contrast}.nii.gz``."""

TEMPLATE_CONTRASTS: tuple[str, ...] = ("T1w", "T2w")

SLAB_THICKNESS_MM: float = 5.0
"""Thickness of the axial slab measured at each level, in subject mm."""

WM_PROBABILITY: float = 0.9
"""MNI white-matter prior threshold (0-1) for the WM mask."""

GM_PROBABILITY: float = 0.6
"""MNI grey-matter prior threshold (0-1) for the GM mask."""

GM_DEPTH_MM: tuple[float, float] = (1.0, 3.0)
"""GM is sought in this band of depth below the brain's surface (subject mm): the outer
cortical ribbon, past the partial-volume rim against the background."""

WM_MIN_DEPTH_MM: float = 6.0
"""WM voxels shallower than this (subject mm) are dropped, so WM and GM never share a voxel."""

WM_EROSION_VOXELS: int = 2
"""In-plane erosion (voxels) of the WM prior mask."""

MIN_MASK_VOXELS: int = 30
"""Fewer WM or GM voxels than this in a slab gives a NaN ratio instead of a noisy number."""

_MNI_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_BRAINSTEM_CUT_Z_MM = -20.0


# --------------------------------------------------------------------------------------------
# MNI priors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MniPriors:
    """The ICBM 2009a symmetric priors bundled with nilearn, 1 mm, shape (197, 233, 189).

    Attributes:
        gm: grey-matter probability, float32 in [0, 1].
        wm: white-matter probability, float32 in [0, 1].
        brain: whole-brain mask (``t1 > 0``), bool; includes cerebellum and brainstem.
        cerebrum: ``brain`` without cerebellum and brainstem below the midbrain, bool.
        affine: 4x4 voxel -> MNI mm.
    """

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    cerebrum: np.ndarray
    affine: np.ndarray


def _nilearn_data_dir() -> Path:
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise InputError("nilearn is needed for the bundled MNI152 tissue priors") from exc
    return Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"


def mni_cerebrum_mask(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Remove cerebellum and lower brainstem from an MNI152 brain mask by a geometric model.

    The tentorium is modelled as the surface ``z = -3 - 0.45*|x| + 0.33*(y + 60)`` (mm),
    fitted by eye on sagittal slices of the ICBM 2009a T1 (cerebellar top at z ~ -5 at the
    vermis, ~ -27 at |x| = 50, for y = -60, rising anteriorly); everything below it and
    behind ``y = -44 + 0.2*|x|`` is cerebellum. The brainstem (-52 < y < -12) is cut at
    z = -20 mm for |x| < 16 and at z = -26 mm for |x| < 27 (pons and middle cerebellar
    peduncles; roughly the pontomesencephalic junction, where the infant templates are
    cut). What is left is opened once and its largest connected component kept
    (1639 mL of the 1887 mL brain).

    Args:
        brain: bool array (X, Y, Z), the MNI brain mask.
        affine: 4x4 voxel -> MNI mm of ``brain``.

    Returns:
        bool array of the same shape.
    """
    i, j, k = np.ogrid[tuple(slice(0, n) for n in brain.shape)]
    aff = np.asarray(affine, dtype=np.float32)
    x, y, z = (aff[r, 0] * i + aff[r, 1] * j + aff[r, 2] * k + aff[r, 3] for r in range(3))
    ax = np.abs(x)
    tentorium = -3.0 - 0.45 * ax + 0.33 * (y + 60.0)
    cerebellum = (y < -44.0 + 0.2 * ax) & (z < tentorium)
    below_cut = ((ax < 16.0) & (z < _BRAINSTEM_CUT_Z_MM)) | ((ax < 27.0) & (z < -26.0))
    brainstem = below_cut & (y > -52.0) & (y < -12.0)
    cerebrum = brain & ~cerebellum & ~brainstem
    return _largest_component(ndi.binary_opening(cerebrum))


@functools.lru_cache(maxsize=1)
def load_mni_priors() -> MniPriors:
    """Load (once per process) the MNI152 ICBM 2009a GM/WM priors bundled with nilearn.

    Returns:
        A :class:`MniPriors`; its arrays are read-only and shared between calls.

    Raises:
        InputError: when a bundled file is missing (names the file).
    """
    folder = _nilearn_data_dir()
    arrays = {}
    affine = None
    for tissue in ("t1", "gm", "wm"):
        path = folder / _MNI_NAME.format(tissue)
        if not path.is_file():
            raise InputError("MNI152 prior bundled with nilearn is missing", path)
        img = nib.load(path)
        arrays[tissue] = np.asarray(img.dataobj)
        affine = img.affine.copy()
    brain = arrays["t1"] > 0
    gm = arrays["gm"].astype(np.float32) / 255.0
    wm = arrays["wm"].astype(np.float32) / 255.0
    cerebrum = mni_cerebrum_mask(brain, affine)
    for a in (gm, wm, brain, cerebrum, affine):
        a.setflags(write=False)
    return MniPriors(gm=gm, wm=wm, brain=brain, cerebrum=cerebrum, affine=affine)


# --------------------------------------------------------------------------------------------
# Masks and alignment
# --------------------------------------------------------------------------------------------


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...]:
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        lo = max(int(nz[0]) - pad, 0)
        hi = min(int(nz[-1]) + 1 + pad, mask.shape[axis])
        out.append(slice(lo, hi))
    return tuple(out)


def brain_mask_from_image(data: np.ndarray) -> np.ndarray:
    """Brain mask of a skull-stripped volume: ``data > 0``, opened, largest component, filled.

    Args:
        data: array (X, Y, Z) of intensities; background is 0.

    Returns:
        bool array (X, Y, Z).

    Raises:
        InputError: when no voxel is above 0.
    """
    raw = np.asarray(data) > 0
    if not raw.any():
        raise InputError("the volume has no voxel above 0: not a skull-stripped brain")
    box = _bbox(raw, pad=2)
    sub = ndi.binary_opening(raw[box])
    if not sub.any():  # a tiny phantom: opening removed everything
        sub = raw[box]
    out = np.zeros(raw.shape, dtype=bool)
    out[box] = ndi.binary_fill_holes(_largest_component(sub))
    return out


def _world_coords(mask: np.ndarray, affine: np.ndarray, stride: int = 1) -> np.ndarray:
    """World mm (N, 3) of the True voxels of ``mask`` (every ``stride``-th voxel per axis)."""
    sub = mask[::stride, ::stride, ::stride]
    ijk = np.argwhere(sub).astype(np.float64) * stride
    aff = np.asarray(affine, dtype=np.float64)
    return ijk @ aff[:3, :3].T + aff[:3, 3]


def _diag_affine(scale: np.ndarray, c_sub: np.ndarray, c_ref: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = np.diag(scale)
    out[:3, 3] = c_ref - scale * c_sub
    return out


def moment_alignment(
    subject_mask: np.ndarray,
    subject_affine: np.ndarray,
    reference_mask: np.ndarray,
    reference_affine: np.ndarray,
) -> np.ndarray:
    """Diagonal affine matching the centroid and per-axis spread of two masks.

    ``ref = s * (p - c_subject) + c_reference`` per world axis, with
    ``s_k = sqrt(var_reference_k / var_subject_k)``, variances of the world coordinates (mm)
    of the mask voxels along x, y and z. No rotation.

    Args:
        subject_mask: bool array (X, Y, Z), the subject's brain.
        subject_affine: 4x4 voxel -> subject world mm.
        reference_mask: bool array, the reference brain (e.g. MNI cerebrum).
        reference_affine: 4x4 voxel -> reference world mm.

    Returns:
        4x4 float64 affine mapping subject world mm -> reference world mm.

    Raises:
        InputError: when either mask is empty.
    """
    stride_s = 2 if subject_mask.sum() > 200_000 else 1
    stride_r = 2 if reference_mask.sum() > 200_000 else 1
    ps = _world_coords(np.asarray(subject_mask, bool), subject_affine, stride_s)
    pr = _world_coords(np.asarray(reference_mask, bool), reference_affine, stride_r)
    if len(ps) < 2 or len(pr) < 2:
        raise InputError("cannot align an empty brain mask")
    scale = np.sqrt(pr.var(axis=0) / np.maximum(ps.var(axis=0), 1e-9))
    return _diag_affine(scale, ps.mean(axis=0), pr.mean(axis=0))


def refine_alignment_dice(
    initial: np.ndarray,
    subject_mask: np.ndarray,
    subject_affine: np.ndarray,
    reference_mask: np.ndarray,
    reference_affine: np.ndarray,
    step_mm: float = 2.0,
) -> np.ndarray:
    """Refine a diagonal subject->reference affine by maximising the Dice overlap of the masks.

    The transform stays ``ref = S @ (p - g) + q``: ``S`` diagonal (one scale per world axis),
    ``g`` the centre of the search grid and ``q`` its image, so that changing a scale does not
    move the brain. Coordinate search over the three scales (steps 4 %, 2 %, 1 %, 0.5 %) and
    the three components of ``q`` (4, 2, 1, 0.5 mm), on a regular world grid of ``step_mm``
    covering the subject mask plus 15 mm. Because the transform is diagonal and the grid
    axis-aligned, each trial is one separable table look-up (~1 ms at 2 mm).

    Args:
        initial: 4x4 diagonal affine subject world mm -> reference world mm (e.g. from
            :func:`moment_alignment`).
        subject_mask: bool array (X, Y, Z).
        subject_affine: 4x4 voxel -> subject world mm.
        reference_mask: bool array; its affine must be diagonal (no rotation), as MNI's is.
        reference_affine: 4x4 voxel -> reference world mm.
        step_mm: grid spacing in subject mm.

    Returns:
        4x4 float64 diagonal affine subject world mm -> reference world mm.

    Raises:
        ValueError: when ``initial`` or ``reference_affine`` has a rotation.
    """
    return _refine_dice(
        initial, subject_mask, subject_affine, reference_mask, reference_affine, step_mm
    )[0]


def _refine_dice(
    initial: np.ndarray,
    subject_mask: np.ndarray,
    subject_affine: np.ndarray,
    reference_mask: np.ndarray,
    reference_affine: np.ndarray,
    step_mm: float,
) -> tuple[np.ndarray, float]:
    """:func:`refine_alignment_dice`, also returning the final Dice (0-1, on the grid)."""
    init = np.asarray(initial, dtype=np.float64)
    raff = np.asarray(reference_affine, dtype=np.float64)
    for name, m in (("initial", init), ("reference_affine", raff)):
        if np.abs(m[:3, :3] - np.diag(np.diag(m[:3, :3]))).max() > 1e-6:
            raise ValueError(f"refine_alignment_dice needs a diagonal {name}")
    # Subject mask on an axis-aligned world grid (offsets from its centre g).
    pts = _world_coords(np.asarray(subject_mask, bool), subject_affine, stride=2)
    lo, hi = pts.min(axis=0) - 15.0, pts.max(axis=0) + 15.0
    g = 0.5 * (lo + hi)
    axes = [np.arange(lo[k] - g[k], hi[k] - g[k] + step_mm, step_mm) for k in range(3)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    world = np.stack([gx + g[0], gy + g[1], gz + g[2], np.ones_like(gx)], axis=0).reshape(4, -1)
    vox = (np.linalg.inv(np.asarray(subject_affine, np.float64)) @ world)[:3]
    a = ndi.map_coordinates(np.asarray(subject_mask, np.uint8), vox, order=0, cval=0)
    a = a.reshape(gx.shape).astype(bool)
    n_a = int(a.sum())
    # Reference padded with a False border so out-of-range indices land on it.
    ref = np.pad(np.asarray(reference_mask, bool), 1)
    rdiag, roff = np.diag(raff)[:3], raff[:3, 3]

    def dice(params: np.ndarray) -> float:
        idx = []
        for k in range(3):
            r = params[k] * axes[k] + params[3 + k]
            i = np.rint((r - roff[k]) / rdiag[k]).astype(np.int64) + 1
            idx.append(np.clip(i, 0, ref.shape[k] - 1))
        b = ref[np.ix_(*idx)]
        inter = int(np.count_nonzero(a & b))
        return 2.0 * inter / max(n_a + int(np.count_nonzero(b)), 1)

    scale0 = np.diag(init)[:3]
    params = np.array([*scale0, *(scale0 * g + init[:3, 3])])
    best = dice(params)
    for rel, mm in ((0.04, 4.0), (0.02, 2.0), (0.01, 1.0), (0.005, 0.5)):
        steps = [rel * params[0], rel * params[1], rel * params[2], mm, mm, mm]
        for _ in range(8):
            improved = False
            for k in range(6):
                for sign in (1.0, -1.0):
                    trial = params.copy()
                    trial[k] += sign * steps[k]
                    d = dice(trial)
                    if d > best + 1e-6:
                        best, params, improved = d, trial, True
            if not improved:
                break
    scale = params[:3]
    out = np.eye(4)
    out[:3, :3] = np.diag(scale)
    out[:3, 3] = params[3:] - scale * g
    return out, best


def align_to_mni(
    brain_mask: np.ndarray, affine: np.ndarray, refine: bool = True, reference: str = "cerebrum"
) -> np.ndarray:
    """Align a skull-stripped brain mask to MNI152 (diagonal scale + translation, no rotation).

    Args:
        brain_mask: bool array (X, Y, Z), the subject's brain.
        affine: 4x4 voxel -> subject world mm (RAS).
        refine: also run :func:`refine_alignment_dice` after :func:`moment_alignment`.
        reference: ``"cerebrum"`` (default: MNI brain without cerebellum and lower brainstem)
            or ``"brain"`` (whole MNI brain). Keep the default for any subject: the Dice step
            aligns a whole-brain mask onto the cerebrum reference to ~1 mm (checked on the MNI
            brain itself, rescaled), whereas a whole-brain reference stretches a cerebrum-only
            mask by ~10 % in z; its Dice is even higher, so Dice cannot choose between them.

    Returns:
        4x4 float64 affine mapping subject world mm -> MNI mm.

    Raises:
        ValueError: for an unknown ``reference``.
        InputError: when the mask is empty.
    """
    mni = load_mni_priors()
    refs = {"cerebrum": mni.cerebrum, "brain": mni.brain}
    if reference not in refs:
        raise ValueError(f"reference must be one of {sorted(refs)}, got {reference!r}")
    ref = refs[reference]
    out = moment_alignment(brain_mask, affine, ref, mni.affine)
    if refine:
        out = refine_alignment_dice(out, brain_mask, affine, ref, mni.affine)
    return out


def _axial_axis(affine: np.ndarray) -> int:
    return int(np.argmax(np.abs(np.asarray(affine)[2, :3])))


def _mni_to_subject_voxel(
    point_mni: tuple[float, float, float], subject_to_mni: np.ndarray, subject_affine: np.ndarray
) -> np.ndarray:
    p = np.array([*point_mni, 1.0])
    world = np.linalg.solve(np.asarray(subject_to_mni, np.float64), p)
    return (np.linalg.inv(np.asarray(subject_affine, np.float64)) @ world)[:3]


def mni_z_to_axial_index(
    z_mm: float,
    subject_to_mni: np.ndarray,
    subject_affine: np.ndarray,
    xy_mm: tuple[float, float] = (0.0, 0.0),
) -> int:
    """The subject's axial voxel index (along the voxel axis closest to world z) of an MNI z.

    Args:
        z_mm: MNI z in mm.
        subject_to_mni: 4x4 subject world mm -> MNI mm (from :func:`align_to_mni`).
        subject_affine: 4x4 voxel -> subject world mm.
        xy_mm: the MNI (x, y) in mm of the point used (matters only when the subject's voxel
            axes are tilted against world axes).

    Returns:
        The nearest voxel index along the axial axis; may lie outside the volume.
    """
    vox = _mni_to_subject_voxel((xy_mm[0], xy_mm[1], z_mm), subject_to_mni, subject_affine)
    return int(np.rint(vox[_axial_axis(subject_affine)]))


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelMasks:
    """The masks of one level's slab.

    Attributes:
        level: level key, "a".."e".
        slices: the subject's axial voxel indices of the slab (in the canonical RAS volume).
        intensity: float32 (X, Y, S), the slab's intensities (S = len(slices)).
        brain: bool (X, Y, S) brain mask.
        wm: bool (X, Y, S) WM core.
        gm: bool (X, Y, S) GM (cortex) mask.
        ratio: median(intensity[wm]) / median(intensity[gm]); NaN when a mask is too small.
        depth: float32 (X, Y, S), distance (mm) below the brain's surface.
        p_wm: float32 (X, Y, S), MNI white-matter prior resampled onto the slab (0-1).
        p_gm: float32 (X, Y, S), MNI grey-matter prior resampled onto the slab (0-1).
    """

    level: str
    slices: tuple[int, ...]
    intensity: np.ndarray
    brain: np.ndarray
    wm: np.ndarray
    gm: np.ndarray
    ratio: float
    depth: np.ndarray
    p_wm: np.ndarray
    p_gm: np.ndarray


def _tissue_masks(
    brain: np.ndarray, depth: np.ndarray, p_wm: np.ndarray, p_gm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """WM core and GM ribbon masks of one slab (all arrays (X, Y, S))."""
    cross2d = ndi.generate_binary_structure(2, 1)[..., None]
    wm = (p_wm > WM_PROBABILITY) & brain
    if WM_EROSION_VOXELS > 0:
        wm = ndi.binary_erosion(wm, structure=cross2d, iterations=WM_EROSION_VOXELS)
    wm &= depth > WM_MIN_DEPTH_MM
    gm = (p_gm > GM_PROBABILITY) & (depth > GM_DEPTH_MM[0]) & (depth <= GM_DEPTH_MM[1])
    return wm, gm & ~wm


def _slab_half_width(voxel_mm: float) -> int:
    return max(0, int(round((SLAB_THICKNESS_MM / voxel_mm - 1.0) / 2.0)))


def level_masks(
    img: nib.spatialimages.SpatialImage,
    brain_mask: np.ndarray | None = None,
    subject_to_mni: np.ndarray | None = None,
) -> dict[str, LevelMasks]:
    """WM and GM masks and the WM/GM ratio at every level (see the module docstring).

    Args:
        img: a skull-stripped 3D brain image (any orientation; reoriented to RAS internally).
        brain_mask: optional bool array in ``img``'s voxel grid; default
            :func:`brain_mask_from_image` of the data.
        subject_to_mni: optional 4x4 subject world mm -> MNI mm; default :func:`align_to_mni`.

    Returns:
        ``{level_key: LevelMasks}`` for the keys of :data:`kerasmyelin.levels.LEVELS`, arrays
        in the closest-canonical (RAS) voxel grid of ``img``.

    Raises:
        InputError: when the image is not 3D, or its brain mask is empty or of another shape.
    """
    name = img.get_filename()
    if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
        raise InputError(f"expected a 3D image, got shape {img.shape}", name)
    if len(img.shape) == 4:
        img = img.slicer[..., 0]
    ras = nib.as_closest_canonical(img)
    data = ras.get_fdata(dtype=np.float32)
    aff = ras.affine
    if brain_mask is None:
        try:
            mask = brain_mask_from_image(data)
        except InputError as exc:
            raise InputError(exc.problem, name) from None
    else:
        brain_mask = np.asarray(brain_mask, dtype=bool)
        if brain_mask.shape != tuple(img.shape[:3]):
            raise InputError(
                f"brain mask shape {brain_mask.shape} differs from image shape {img.shape[:3]}",
                name,
            )
        ornt = nib.orientations.io_orientation(img.affine)
        mask = nib.orientations.apply_orientation(brain_mask, ornt).astype(bool)
        if not mask.any():
            raise InputError("the brain mask is empty", name)
    if subject_to_mni is None:
        subject_to_mni = align_to_mni(mask, aff)
    mni = load_mni_priors()
    mni_inv = np.linalg.inv(mni.affine)
    voxel_z = float(np.sqrt((aff[:3, 2] ** 2).sum()))
    half = _slab_half_width(voxel_z)
    box_xy = _bbox(mask.any(axis=2)[..., None], pad=1)[:2]
    x0, y0 = box_xy[0].start, box_xy[1].start
    out: dict[str, LevelMasks] = {}
    for level in LEVELS:
        x_l, y_l, z_l = level.mni_landmark
        centre = mni_z_to_axial_index(z_l, subject_to_mni, aff, (x_l, y_l))
        ks = [k for k in range(centre - half, centre + half + 1) if 0 <= k < data.shape[2]]
        if not ks:
            empty = np.zeros((0, 0, 0), dtype=bool)
            flt = empty.astype(np.float32)
            out[level.key] = LevelMasks(
                level.key, (), flt, empty, empty, empty, float("nan"), flt, flt, flt
            )
            continue
        k0, k1 = ks[0], ks[-1] + 1
        inten = data[box_xy[0], box_xy[1], k0:k1]
        brain = mask[box_xy[0], box_xy[1], k0:k1]
        # Depth below the brain's surface (mm), in 3D: take a margin of slices so that the
        # slab's own faces are not mistaken for the surface.
        e = int(np.ceil(max(GM_DEPTH_MM[1], WM_MIN_DEPTH_MM) / voxel_z)) + 1
        m0, m1 = max(k0 - e, 0), min(k1 + e, data.shape[2])
        padded = np.pad(mask[box_xy[0], box_xy[1], m0:m1], ((1, 1), (1, 1), (0, 0)))
        voxel_mm = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        depth_full = ndi.distance_transform_edt(padded, sampling=voxel_mm)
        depth = depth_full[1:-1, 1:-1, k0 - m0 : k0 - m0 + (k1 - k0)]
        # MNI priors sampled at the slab's voxels.
        ii, jj, kk = np.meshgrid(
            np.arange(brain.shape[0]) + x0,
            np.arange(brain.shape[1]) + y0,
            np.arange(k0, k1),
            indexing="ij",
        )
        vox = np.stack([ii, jj, kk, np.ones_like(ii)], axis=0).reshape(4, -1).astype(np.float64)
        mni_vox = (mni_inv @ np.asarray(subject_to_mni) @ aff @ vox)[:3]
        inside = brain.ravel()
        p_wm = np.zeros(inside.shape, np.float32)
        p_gm = np.zeros(inside.shape, np.float32)
        p_wm[inside] = ndi.map_coordinates(mni.wm, mni_vox[:, inside], order=1, cval=0.0)
        p_gm[inside] = ndi.map_coordinates(mni.gm, mni_vox[:, inside], order=1, cval=0.0)
        p_wm = p_wm.reshape(brain.shape)
        p_gm = p_gm.reshape(brain.shape)
        wm, gm = _tissue_masks(brain, depth, p_wm, p_gm)
        if wm.sum() >= MIN_MASK_VOXELS and gm.sum() >= MIN_MASK_VOXELS:
            g = float(np.median(inten[gm]))
            ratio = float(np.median(inten[wm])) / g if g > 0 else float("nan")
        else:
            ratio = float("nan")
        out[level.key] = LevelMasks(
            level.key, tuple(ks), inten, brain, wm, gm, ratio, depth, p_wm, p_gm
        )
    return out


def wm_gm_ratios(
    img: nib.spatialimages.SpatialImage, brain_mask: np.ndarray | None = None
) -> dict[str, float]:
    """WM/GM median intensity ratio at each of the five levels of a skull-stripped brain.

    Args:
        img: a 3D skull-stripped brain image (nibabel), background 0.
        brain_mask: optional bool array of ``img.shape``; default ``data > 0`` cleaned up.

    Returns:
        ``{"a": r_a, ..., "e": r_e}``, dimensionless; NaN where the level falls outside the
        volume or a mask has fewer than :data:`MIN_MASK_VOXELS` voxels.

    Raises:
        InputError: for a non-3D image or an empty / mis-shaped brain mask.
    """
    return {k: m.ratio for k, m in level_masks(img, brain_mask).items()}


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def find_templates(root: str | os.PathLike) -> dict[tuple[int, str], Path]:
    """The infant template files in ``root``.

    Args:
        root: folder holding ``Template-Month{0,6,9,12,24}-{T1w,T2w}.nii.gz``.

    Returns:
        ``{(month, contrast): path}`` for all 10 templates.

    Raises:
        InputError: naming the folder when it is missing or lacks any of the files.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise InputError("infant template folder not found", folder)
    found: dict[tuple[int, str], Path] = {}
    missing: list[str] = []
    for month in TEMPLATE_MONTHS:
        for contrast in TEMPLATE_CONTRASTS:
            path = folder / f"Template-Month{month}-{contrast}.nii.gz"
            if path.is_file():
                found[(month, contrast)] = path
            else:
                missing.append(path.name)
    if missing:
        raise InputError(f"missing infant template files: {', '.join(missing)}", folder)
    return found


def template_ratio_table(root: str | os.PathLike) -> dict[tuple[int, str], dict[str, float]]:
    """WM/GM ratios of every infant template at every level.

    Args:
        root: folder of the templates (see :func:`find_templates`).

    Returns:
        ``{(month, contrast): {level_key: ratio}}`` for months :data:`TEMPLATE_MONTHS` and
        contrasts ``("T1w", "T2w")``.

    Raises:
        InputError: when files are missing.
    """
    return {key: wm_gm_ratios(nib.load(path)) for key, path in find_templates(root).items()}
