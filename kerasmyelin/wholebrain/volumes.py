"""A T1w/T2w pair as the pipeline needs it: one RAS grid, checked, in clinical-like slabs.

Clinical stacks (2-D, thick slices) and research scans (3-D, ~1 mm isotropic) both arrive here.
Both are reoriented to RAS (axes flipped and swapped, no interpolation); if the T2w is on
another grid it is resampled onto the T1w's (trilinear), since the five levels are found once
per infant. A 3-D scan is then averaged into 5 mm axial slabs, like the clinical slices the
model was trained on: slab centres every 5 mm, phased so that one centre falls on level c
(the middle level) once the levels are known.

Everything here is a pure array transform; files are read by :func:`kerasmyelin.io.nifti.load_volume`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kerasmyelin.data.prepare import to_canonical
from kerasmyelin.errors import InputError

SLAB_MM = 5.0
THIN_SLICE_MM = 2.5   # axial voxels thinner than this are a 3-D scan, made into slabs
SAME_HEAD_MIN_DICE = 0.60
SAME_HEAD_MIN_NMI = 0.10


@dataclass
class ScanPair:
    """One infant's T1w and T2w on one RAS grid.

    Attributes:
        t1, t2: (X, Y, Z) volumes, axis 2 up: float32, or integers as stored in the file.
        affine: 4x4 voxel -> world mm of both.
        sources: contrast -> file name (for messages).
        t2_resampled: True when the T2w was interpolated onto the T1w's grid.
        same_head: the measures of :func:`check_same_head`, when run.
        noise: each image's neighbour correlation (``plausibility.check_not_noise``), when run.
        t1_outline: the T1w's ``level_finder.Outline`` made by that check, for reuse.
        skull_stripped: whether the pair is treated as skull-stripped (decided once, in make_pair).
    """

    t1: np.ndarray
    t2: np.ndarray
    affine: np.ndarray
    sources: dict[str, str]
    t2_resampled: bool = False
    same_head: dict[str, float] | None = None
    noise: dict[str, float] | None = None
    t1_outline: object = None
    skull_stripped: bool | None = None

    @property
    def voxel_mm(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def is_3d(self) -> bool:
        return bool(self.voxel_mm[2] < THIN_SLICE_MM)


def same_grid(shape_a, affine_a, shape_b, affine_b, tol_mm: float = 0.1) -> bool:
    """True when two volumes share shape and voxel positions (to ``tol_mm``)."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    corners = np.array([[0, 0, 0, 1], [shape_a[0] - 1, shape_a[1] - 1, shape_a[2] - 1, 1]], float).T
    return bool(np.abs(np.asarray(affine_a) @ corners - np.asarray(affine_b) @ corners).max() <= tol_mm)


def resample_onto(data: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray) -> np.ndarray:
    """Trilinear resampling of ``data`` onto the grid (shape, target_affine); 0 outside."""
    to_source = np.linalg.inv(np.asarray(affine, np.float64)) @ np.asarray(target_affine, np.float64)
    return ndimage.affine_transform(np.asarray(data, np.float32), to_source[:3, :3], offset=to_source[:3, 3],
                                    output_shape=tuple(shape), order=1, mode="constant", cval=0.0,
                                    prefilter=False)


def normalised_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Normalised MI, (H(a) + H(b)) / H(a, b) - 1, in [0, 1]; 0 for independent images."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()

    def quantise(x):
        lo, hi = np.percentile(x, [1, 99])
        return np.clip(((x - lo) / max(hi - lo, 1e-9) * bins).astype(int), 0, bins - 1)

    joint = np.bincount(quantise(a) * bins + quantise(b), minlength=bins * bins).astype(np.float64)
    joint /= joint.sum()

    def entropy(p):
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h_ab = entropy(joint)
    return (entropy(joint.reshape(bins, bins).sum(1)) + entropy(joint.reshape(bins, bins).sum(0))) / max(h_ab, 1e-12) - 1


def check_same_head(pair: ScanPair, skull_stripped: bool | None = None, outlines=None) -> dict[str, float]:
    """Refuse a T1w and T2w that do not show the same head in the same place.

    Two measures, sampled on the level finder's ~4 mm grid, calibrated with
    ``experiments/calibrate_same_head.py`` on the synthetic cohort (20 infants, each T1w against
    its own T2w and against the next infant's) and the five real templates:

    * the Dice overlap of the two outlines (head masks, or non-zero voxels when skull-stripped):
      0.75-0.95 for the same infant, 0.91-1.00 for a template's own pair, 0.45-0.91 for
      different infants and 0.33-0.34 for templates of different ages. It only catches gross
      mismatches: refused below :data:`SAME_HEAD_MIN_DICE`.
    * for whole-head scans, the normalised mutual information of the intensities inside the
      outlines: 0.13-0.23 for the same infant, 0.03-0.08 for different infants (two heads'
      anatomy does not line up voxel for voxel). Refused below :data:`SAME_HEAD_MIN_NMI`. Not
      used for skull-stripped images, whose own template pairs score 0.02-0.11.

    Args:
        outlines: the two images' outlines (:func:`pair_outlines`) if already made.

    Returns:
        {"dice": ..., "nmi": ...} of the pair.
    """
    first, second = outlines or pair_outlines(pair, skull_stripped)
    skull_stripped = first.skull_stripped
    a, b = first.inside, second.inside
    dice = 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)
    sx, sy, sz = first.step
    both = a | b
    va = pair.t1[::sx, ::sy, ::sz][: first.shape[0], : first.shape[1], : first.shape[2]].reshape(-1)
    vb = pair.t2[::sx, ::sy, ::sz][: first.shape[0], : first.shape[1], : first.shape[2]].reshape(-1)
    nmi = normalised_mutual_information(va[both], vb[both])
    other = f"the T1w {pair.sources['T1w']}" if pair.sources.get("T1w") else "the T1w"
    if dice < SAME_HEAD_MIN_DICE:
        raise InputError(f"the T2w does not show the same head as {other}: their outlines overlap "
                         f"only {dice:.0%} (Dice; the same head gives > 74%)", pair.sources.get("T2w"))
    if not skull_stripped and nmi < SAME_HEAD_MIN_NMI:
        raise InputError(f"the T2w does not show the same head as {other}: their intensities are "
                         f"nearly unrelated (normalised mutual information {nmi:.3f} < {SAME_HEAD_MIN_NMI})",
                         pair.sources.get("T2w"))
    return {"dice": round(dice, 4), "nmi": round(float(nmi), 4)}


def pair_outlines(pair: ScanPair, skull_stripped: bool | None = None):
    """The T1w's and the T2w's ``level_finder.Outline``; the T1w's is kept in ``pair.t1_outline``
    for the level finder."""
    from kerasmyelin.wholebrain.level_finder import (
        looks_skull_stripped,
        subject_outline,
    )

    if skull_stripped is None:
        skull_stripped = pair.skull_stripped if pair.skull_stripped is not None else looks_skull_stripped(pair.t1)
    first = subject_outline(pair.t1, pair.affine, skull_stripped, source=pair.sources.get("T1w"))
    second = subject_outline(pair.t2, pair.affine, skull_stripped, source=pair.sources.get("T2w"))
    pair.t1_outline = first
    return first, second


def _voxels(data: np.ndarray) -> np.ndarray:
    """Integer voxels as they are (every later step converts only what it samples), else float32."""
    data = np.asarray(data)
    return data if np.issubdtype(data.dtype, np.integer) else data.astype(np.float32, copy=False)


def make_pair(t1: tuple[np.ndarray, np.ndarray], t2: tuple[np.ndarray, np.ndarray],
              sources: dict[str, str] | None = None, check: bool = True,
              skull_stripped: bool | None = None) -> ScanPair:
    """Reorient both volumes to RAS and bring the T2w onto the T1w's grid.

    Args:
        t1, t2: (data, affine) of each contrast, any orientation.
        sources: contrast -> file name, for messages.
        check: run the input checks: infant head geometry and not one image twice (on the files
            as given), then not noise and :func:`check_same_head` (their measures land in
            ``pair.noise`` and ``pair.same_head``); see :mod:`.plausibility`.
        skull_stripped: the user's answer, or None to decide from the T1w's background; the
            decision is kept in ``pair.skull_stripped`` so every later step uses the same one.
    """
    from kerasmyelin.wholebrain import plausibility

    sources = dict(sources or {})
    if check:
        for (data, affine), contrast in ((t1, "T1w"), (t2, "T2w")):
            plausibility.check_head_geometry(np.shape(data), affine, sources.get(contrast))
        plausibility.check_not_the_same_image(t1[0], t2[0], sources)
    d1, a1 = to_canonical(_voxels(t1[0]), t1[1])
    d2, a2 = to_canonical(_voxels(t2[0]), t2[1])
    resampled = not same_grid(d1.shape, a1, d2.shape, a2)
    if resampled:
        # Overlap of the two fields of view, in world mm: the T2w must cover most of the T1w's.
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in d1.shape], indexing="ij")).reshape(3, -1)
        in_t2 = np.linalg.inv(a2) @ a1 @ np.vstack([corners, np.ones(corners.shape[1])])
        lo, hi = in_t2[:3].min(axis=1), in_t2[:3].max(axis=1)
        overlap = np.prod(np.clip(np.minimum(hi, np.array(d2.shape) - 1) - np.maximum(lo, 0), 0, None)
                          / np.maximum(hi - lo, 1e-9))
        if overlap < 0.5:
            raise InputError(f"the T2w's field of view covers only {overlap:.0%} of the T1w's "
                             f"({sources.get('T1w')}); are they from the same session?", sources.get("T2w"))
        d2 = resample_onto(np.asarray(d2, np.float32), a2, d1.shape, a1)
    # Views, not copies: every later step reads strided samples or single slices.
    pair = ScanPair(d1, d2, np.asarray(a1, np.float64), sources,
                    resampled)
    if skull_stripped is None:
        from kerasmyelin.wholebrain.level_finder import looks_skull_stripped

        skull_stripped = looks_skull_stripped(pair.t1)
    pair.skull_stripped = bool(skull_stripped)
    if check:
        outlines = pair_outlines(pair)
        pair.noise = plausibility.check_not_noise(pair, outlines)
        pair.same_head = check_same_head(pair, outlines=outlines)
    return pair


def slab_stack(volume: np.ndarray, affine: np.ndarray, centre_mm, thickness_mm: float = SLAB_MM
               ) -> tuple[np.ndarray, np.ndarray]:
    """Average a thin-slice RAS volume into contiguous axial slabs, one centred on the world point
    ``centre_mm`` (x, y, z; on a tilted grid the slab holding that point, not just that z).

    Each slab is the mean of the slices it covers, end slices weighted by the part inside (a
    box profile, as a 2-D acquisition's ideal slice profile).

    Returns:
        (stack (X, Y, n_slabs) float32, its 4x4 affine).
    """
    dz = float(np.sqrt((np.asarray(affine)[:3, 2] ** 2).sum()))
    z_axis = np.asarray(affine)[:3, 2] / dz
    origin = np.asarray(affine)[:3, 3]
    n = volume.shape[2]
    # Slab centres in voxel units along axis 2, every thickness_mm, one on the centre point.
    centre_vox = float((np.linalg.inv(np.asarray(affine, np.float64)) @ np.array([*centre_mm, 1.0]))[2])
    step = thickness_mm / dz
    first = centre_vox - np.floor(centre_vox / step) * step
    centres = np.arange(first, n - 1e-6, step)
    half = step / 2.0
    out = np.zeros(volume.shape[:2] + (len(centres),), np.float32)
    edges = np.arange(n, dtype=np.float64)
    for i, c in enumerate(centres):
        w = np.clip(np.minimum(edges + 0.5, c + half) - np.maximum(edges - 0.5, c - half), 0, 1)
        idx = np.nonzero(w > 0)[0]
        out[..., i] = np.tensordot(np.asarray(volume[..., idx], np.float32), (w[idx] / w[idx].sum()).astype(np.float32),
                                   axes=([2], [0]))
    new = np.asarray(affine, np.float64).copy()
    new[:3, 2] = z_axis * thickness_mm
    new[:3, 3] = origin + np.asarray(affine)[:3, 2] * centres[0]
    return out, new
