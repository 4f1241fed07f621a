"""White-matter to grey-matter intensity ratios at the five axial levels, without segmentation.

This module checks a synthetic cohort against real infant templates: it measures, in any
skull-stripped brain volume, how bright white matter (WM) is relative to grey matter (GM) at
each of the five levels of :mod:`kerasmyelin.levels`, using only the MNI152 tissue priors that
ship with nilearn (:mod:`kerasmyelin.atlas.priors`).

Method
------
1. **Brain mask.** Voxels > 0 (the volume is skull-stripped), cleaned up
   (:func:`~kerasmyelin.atlas.alignment.brain_mask_from_image`).
2. **Alignment to MNI.** A diagonal affine, subject world mm -> MNI mm (one scale per world
   axis and a translation; no rotation): moments, then a search maximising the Dice overlap
   of the brain mask with the MNI cerebrum (the templates are cerebrum-only).
   :mod:`kerasmyelin.atlas.alignment` describes it and the measurements behind it.
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
* The templates must be read with their headers corrected (:func:`corrected_image`): as
  stored they reverse front and back, the MNI priors then land mirrored and at levels b and c
  the white-matter mask falls largely on deep grey matter, which pulled every ratio there
  towards 1. (The figures of earlier versions of this note, "30-45 % of the WM mask on WM at b
  and c", were measured that way.) Read corrected, the 24-month T2w ratio is 0.59-0.60 at
  every level b-e, as a radiologist would expect of myelinated white matter.
* An affine adult prior is still only roughly right on an infant brain, so both masks are
  mixtures, and thin infant white matter (temporal lobe at b) mixes more than adult white
  matter would. Compare like with like: measure the synthetic cohort with this same function.
* Level "a" (z = -30, pons / middle cerebellar peduncles) lies below the cut of
  cerebrum-only templates: the slab holds only the inferior temporal lobes (and the cut
  stump of the brainstem), the WM core is tiny, and the ratio can be NaN (fewer than
  :data:`MIN_MASK_VOXELS` voxels). Level "b" mixes midbrain, hypothalamus and medial temporal
  grey matter into "GM".

Units: world coordinates in mm (RAS), intensities in the image's own units; ratios are
dimensionless.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from kerasmyelin.atlas.alignment import (
    _bbox,
    align_to_mni,
    brain_mask_from_image,
    mni_z_to_axial_index,
)
from kerasmyelin.atlas.priors import load_mni_priors
from kerasmyelin.errors import InputError
from kerasmyelin.io.infant_templates import (  # noqa: F401 (read here)
    TEMPLATE_MONTHS,
    corrected_image,
    find_templates,
)
from kerasmyelin.levels import LEVELS

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
        origin: (i, j) of the slab's first voxel in the RAS volume (the arrays are cropped to
            the brain's bounding box in plane).
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
    origin: tuple[int, int] = (0, 0)


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
            :func:`~kerasmyelin.atlas.alignment.brain_mask_from_image` of the data.
        subject_to_mni: optional 4x4 subject world mm -> MNI mm; default
            :func:`~kerasmyelin.atlas.alignment.align_to_mni`.

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
            level.key, tuple(ks), inten, brain, wm, gm, ratio, depth, p_wm, p_gm, (x0, y0)
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
    return {key: wm_gm_ratios(corrected_image(path)) for key, path in find_templates(root).items()}
