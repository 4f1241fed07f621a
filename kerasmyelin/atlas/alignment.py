"""Alignment of a skull-stripped brain to MNI152 space, and MNI z to the subject's slices.

:mod:`kerasmyelin.validation.template_ratios` samples the MNI tissue priors in a subject's
axial slabs; for that it needs a map from the subject's world mm to MNI mm and the subject's
slice at each level's MNI z. This module holds both: the subject's brain mask
(:func:`brain_mask_from_image`), a diagonal affine from moments (:func:`moment_alignment`)
refined by a Dice search (:func:`refine_alignment_dice`), the two wrapped by
:func:`align_to_mni`, and :func:`mni_z_to_axial_index`.

Method
------
The brain mask is the voxels > 0 (the volume is skull-stripped), opened once (3x3x3 cross),
largest connected component, enclosed holes filled. The alignment is a diagonal affine,
subject world mm -> MNI mm (one scale per world axis and a translation; no rotation, both
spaces being RAS and roughly AC-PC aligned). First guess from moments:
``s_k = sqrt(var_MNI_k / var_subject_k)`` of the world coordinates of the two masks along x,
y and z, translation matching the centroids. Then a coordinate search over the 6 parameters
maximising the Dice overlap of the two masks on a 2 mm world grid (~100 trials, each one
separable table look-up; ~0.4 s).

Two deviations from plain moment matching, both measured:

* *The MNI reference mask is the cerebrum only*
  (:func:`~kerasmyelin.atlas.priors.mni_cerebrum_mask`: the MNI brain minus the
  cerebellum below a tentorium surface fitted by eye on the ICBM 2009a T1 and the brainstem
  below z = -20 mm). The UNC infant templates are cerebrum-only (cerebellum and brainstem
  below the midbrain cut away). Against the whole MNI brain their z scale comes out 8-14 %
  too large and the levels land too high: by 6-7 mm (subject mm) at level "a", 3-5 mm at
  "c", 0-1.6 mm at "e".
* *The Dice refinement.* On the templates it moves the levels by at most 1.6 mm, but it
  makes the alignment insensitive to where a mask is cut: for a whole-brain mask (the MNI
  brain itself, rescaled), moments against the cerebrum reference are off by 13 % in z scale
  and ~8 mm (MNI) at level "c"; after the Dice search the errors are < 1 % and < 1 mm.

A pitch (rotation about x) was tried in the Dice search and rejected: it raised the Dice
by 0.01-0.02 with 4-16 degree pitches, but the lateral ventricles' long axis (a landmark
independent of the outer shape) is within 2 degrees of MNI's without it at 9-24 months
(7-10 degrees at 0-6 months), and 5-16 degrees off with it: the pitch fitted the
infant-vs-adult difference in shape, not a difference in orientation.

Units: world coordinates in mm (RAS).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from kerasmyelin.errors import InputError
from kerasmyelin.atlas.priors import _largest_component, load_mni_priors


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


def coordinate_search(score, params: np.ndarray, best: float, steps: np.ndarray, free, sweeps: int
                      ) -> tuple[np.ndarray, float]:
    """Greedy coordinate ascent: try +/- ``steps[k]`` on each free parameter, keep any gain, repeat.

    Stops after ``sweeps`` sweeps or at the first sweep that improves nothing.

    Returns:
        (best parameters, best score).
    """
    for _ in range(sweeps):
        improved = False
        for k in free:
            for sign in (1.0, -1.0):
                trial = params.copy()
                trial[k] += sign * steps[k]
                value = score(trial)
                if value > best + 1e-6:
                    best, params, improved = value, trial, True
        if not improved:
            break
    return params, best


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
        steps = np.array([rel * params[0], rel * params[1], rel * params[2], mm, mm, mm])
        params, best = coordinate_search(dice, params, best, steps, range(6), sweeps=8)
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
