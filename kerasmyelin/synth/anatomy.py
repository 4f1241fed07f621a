"""The reference anatomy every synthetic infant is built from.

Grey matter, white matter and brain outline come from the ICBM 2009a symmetric MNI152 template
and its tissue probability maps, bundled in the nilearn wheel (nothing is downloaded). Around
the skull-stripped brain we add the layers a clinical head scan shows: extra-axial CSF (wide in
infants), skull and scalp. Each white-matter voxel gets the ages at which it turns T1-bright and
T2-dark (``milestones.py``) and, from those, the maturation speeds that drive its relaxation times
(``maturation.py``). This is built once per process and shared by every subject.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kerasmyelin.io.mni import load_mni
from kerasmyelin.synth import milestones as ms

TISSUES: tuple[str, ...] = ("wm", "gm", "csf", "skull", "scalp")
# Layer outer radii in adult-MNI mm beyond the brain surface; scaled with the brain later.
EXTRA_AXIAL_CSF_MM = 3.0
SKULL_MM = 7.0
SCALP_MM = 13.0
_PAD_MM = 16.0  # room for the layers; the template's brainstem touches its lower edge


@dataclass
class Anatomy:
    """Tissue maps on a regular grid in MNI152 mm.

    Attributes:
        affine: 4x4 voxel -> MNI mm.
        res_mm: voxel size in mm (isotropic).
        fractions: tissue name -> (X, Y, Z) float32 volume fraction in [0, 1].
        t1_mid, t2_mid: (X, Y, Z) float32 age in months at which the white matter there turns
            T1-bright / T2-dark in a typical infant (meaningful where white matter is present).
        wm_index: flat indices of voxels with white matter, where maturation is computed.
        depth_mm: (X, Y, Z) float32 depth below the brain's outer surface (adult-scale mm).
    """

    affine: np.ndarray
    res_mm: float
    fractions: dict[str, np.ndarray]
    t1_mid: np.ndarray
    t2_mid: np.ndarray
    wm_index: np.ndarray
    depth_mm: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.fractions["wm"].shape

    def world_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MNI mm coordinate of each grid axis (the grid is axis-aligned)."""
        return tuple(self.affine[i, 3] + self.affine[i, i] * np.arange(n, dtype=np.float32)
                     for i, n in enumerate(self.shape))

    def head_bounding_box_mm(self) -> np.ndarray:
        """(2, 3) array: lowest and highest MNI mm corner of everything that is not background."""
        occupied = self.fractions["scalp"] + self.fractions["skull"] > 0.01
        lo, hi = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            idx = np.nonzero(occupied.any(axis=other))[0]
            lo.append(idx[0])
            hi.append(idx[-1])
        corners = np.array([lo, hi], dtype=np.float64)
        return corners * np.diag(self.affine)[:3] + self.affine[:3, 3]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _box_weight(coords, box, edge_mm: float = 4.0) -> np.ndarray:
    """Soft membership of the ellipsoid inscribed in a box, mirrored in x.

    1 well inside, falling smoothly to 0 over about ``edge_mm`` at the surface: tracts have
    rounded outlines, and a box's corners would show as squares in the images.
    """
    r2 = None
    for axis, (c, (lo, hi)) in enumerate(zip(coords, box)):
        c = np.abs(c) if axis == 0 else c
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo) + edge_mm / 2
        term = ((c - centre) / half) ** 2
        r2 = term if r2 is None else r2 + term
    mean_half = np.mean([0.5 * (hi - lo) + edge_mm / 2 for lo, hi in box])
    return _smoothstep((1.0 - np.sqrt(r2)) * mean_half / edge_mm + 0.5)


def _lobar_timing(coords, depth_mm: np.ndarray, attr: str) -> np.ndarray:
    """Milestone age of lobar white matter from its position and depth."""
    _, y, z = coords
    frontal = _smoothstep((y - ms.Y_OCCIPITAL) / (ms.Y_FRONTAL - ms.Y_OCCIPITAL))
    central = _smoothstep((depth_mm - ms.PERIPHERAL_DEPTH_MM) / (ms.CENTRAL_DEPTH_MM - ms.PERIPHERAL_DEPTH_MM))
    central_mid = ((1 - frontal) * getattr(ms.CENTRAL_OCCIPITAL, attr)
                   + frontal * getattr(ms.CENTRAL_FRONTAL, attr))
    high = _smoothstep((z - ms.Z_CENTRUM) / 10.0 + 0.5)
    central_mid = (1 - high) * central_mid + high * getattr(ms.CENTRUM_SEMIOVALE, attr)
    peripheral_mid = ((1 - frontal) * getattr(ms.PERIPHERAL_OCCIPITAL, attr)
                      + frontal * getattr(ms.PERIPHERAL_FRONTAL, attr))
    return central * central_mid + (1 - central) * peripheral_mid


def milestone_fields(coords, depth_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Typical T1-bright and T2-dark ages (months) at white-matter points.

    Args:
        coords: (x, y, z) arrays of MNI mm, all the same shape.
        depth_mm: depth below the cortex at those points.

    Returns:
        (t1_mid, t2_mid), float32 arrays of the same shape.
    """
    out = []
    for attr in ("t1_mid", "t2_mid"):
        mid = _lobar_timing(coords, depth_mm, attr)
        for tract in ms.COMPACT_TRACTS:
            w = _box_weight(coords, tract.box)
            mid = (1 - w) * mid + w * getattr(tract, attr)
        if attr == "t2_mid":
            w = _box_weight(coords, ms.TERMINAL_ZONE.box, edge_mm=6.0)
            mid = (1 - w) * mid + w * ms.TERMINAL_ZONE.t2_mid
        out.append(mid.astype(np.float32))
    return out[0], out[1]


def mni_grid(res_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 template on the anatomy grid: (t1, gm, wm, origin), padded for the layers.

    Every anatomy shares this grid (``scaffolds.py`` resamples the infant templates onto it), so
    the milestone fields, the level landmarks and the slab geometry mean the same in all of them.
    """
    t1, affine = load_mni("t1")
    gm, _ = load_mni("gm")
    wm, _ = load_mni("wm")
    if res_mm != 1.0:
        # Area-average before subsampling so thin cortex keeps its partial volume; output voxel
        # i samples template voxel i * res_mm exactly, so the new affine is exact.
        shape = tuple(int(np.floor((n - 1) / res_mm)) + 1 for n in t1.shape)
        t1, gm, wm = (ndimage.affine_transform(ndimage.gaussian_filter(a, 0.4 * res_mm, truncate=3.0),
                                               np.full(3, res_mm), output_shape=shape, order=1, prefilter=False)
                      for a in (t1, gm, wm))
    # Room for the layers around the brain; the template's brainstem touches its lower edge.
    pad = int(np.ceil(_PAD_MM / res_mm))
    pads = ((pad, pad), (pad, pad), (pad + int(np.ceil(8 / res_mm)), pad))
    t1, gm, wm = (np.pad(a, pads) for a in (t1, gm, wm))
    origin = affine[:3, 3] - res_mm * np.array([p[0] for p in pads], dtype=np.float64)
    return t1, gm, wm, origin


@functools.lru_cache(maxsize=2)
def build_anatomy(res_mm: float = 1.5) -> Anatomy:
    """Build (once per process and resolution) the reference anatomy at ``res_mm`` mm."""
    t1, gm, wm, origin = mni_grid(res_mm)
    brain_f = np.clip(ndimage.gaussian_filter((t1 > 0.02).astype(np.float32), 0.5), 0, 1)
    brain = ndimage.binary_fill_holes(brain_f > 0.5)
    return layered_anatomy(wm, gm, brain, origin, res_mm)


def head_layers(outside_mm: np.ndarray, step_mm: float, size: float = 1.0):
    """(extra-axial CSF, skull, scalp) fractions at ``outside_mm`` mm outside the brain.

    The layers' outer radii are the adult-scale ones above times ``size``; each boundary is a
    partial-volume ramp one ``step_mm`` wide. Shared by the synthetic anatomy and by the real
    templates put inside a simulated head (``validation.template_head``).
    """
    def ramp(r):
        return np.clip((r * size - outside_mm) / step_mm + 0.5, 0, 1)

    csf = ramp(EXTRA_AXIAL_CSF_MM)
    skull = np.clip(ramp(SKULL_MM) - csf, 0, 1)
    scalp = np.clip(ramp(SCALP_MM) - ramp(SKULL_MM), 0, 1)
    return csf, skull, scalp


def layered_anatomy(wm: np.ndarray, gm: np.ndarray, brain: np.ndarray, origin: np.ndarray,
                    res_mm: float) -> Anatomy:
    """An :class:`Anatomy` from brain tissue maps on the anatomy grid.

    Args:
        wm, gm: white- and grey-matter fractions (X, Y, Z), clipped to ``brain``.
        brain: bool (X, Y, Z), the brain with its ventricles and sulci; what is in it and neither
            white nor grey matter is CSF.
        origin: MNI mm of voxel (0, 0, 0); the grid is axis-aligned with spacing ``res_mm``.

    Adds the layers outside the brain (extra-axial CSF, skull, scalp) and the milestone fields.
    """
    outside_mm = res_mm * ndimage.distance_transform_edt(~brain).astype(np.float32)
    brain_f = brain.astype(np.float32)
    wm = np.clip(np.minimum(wm, brain_f), 0, 1)
    gm = np.clip(np.minimum(gm, brain_f - wm), 0, 1)
    csf = np.clip(brain_f - gm - wm, 0.0, 1.0)
    outer_csf, skull, scalp = (layer * (1 - brain_f) for layer in head_layers(outside_mm, res_mm))
    csf = csf + outer_csf
    # Depth below the brain's outer surface: "central" and "peripheral" in the milestone table
    # mean deep (periventricular) and subcortical white matter.
    depth_mm = res_mm * ndimage.distance_transform_edt(brain).astype(np.float32)
    fractions = {"wm": wm, "gm": gm, "csf": csf, "skull": skull, "scalp": scalp}
    fractions = {k: np.clip(v, 0, 1).astype(np.float32) for k, v in fractions.items()}
    new_affine = np.diag([res_mm, res_mm, res_mm, 1.0])
    new_affine[:3, 3] = origin
    shape = fractions["wm"].shape
    axes = [origin[i] + res_mm * np.arange(n, dtype=np.float32) for i, n in enumerate(shape)]

    wm_index = np.flatnonzero(fractions["wm"] > 0.01)
    ijk = np.unravel_index(wm_index, shape)
    coords = tuple(axes[i][ijk[i]] for i in range(3))
    t1m, t2m = milestone_fields(coords, depth_mm.ravel()[wm_index])
    # Smooth the timing maps (weighted by white matter) so regions blend without seams.
    t1_mid = np.zeros(shape, np.float32)
    t2_mid = np.zeros(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    weight.ravel()[wm_index] = fractions["wm"].ravel()[wm_index]
    t1_mid.ravel()[wm_index] = t1m * weight.ravel()[wm_index]
    t2_mid.ravel()[wm_index] = t2m * weight.ravel()[wm_index]
    sigma = 3.0 / res_mm
    norm = ndimage.gaussian_filter(weight, sigma) + 1e-6
    t1_mid = (ndimage.gaussian_filter(t1_mid, sigma) / norm).astype(np.float32)
    t2_mid = (ndimage.gaussian_filter(t2_mid, sigma) / norm).astype(np.float32)
    return Anatomy(new_affine, res_mm, fractions, t1_mid, t2_mid, wm_index, depth_mm)
