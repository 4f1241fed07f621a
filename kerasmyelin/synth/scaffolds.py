"""Infant anatomy scaffolds: tissue maps segmented from the real infant templates.

The scaled adult MNI152 brain (``anatomy.py``) has adult proportions, thin sulcal CSF and an
adult's cortex. Each infant template (``io.infant_templates``: 0, 6, 9, 12 and 24 months) gives
a scaffold with an infant's own: its white matter, cortex and CSF are segmented from both of its
contrasts and placed on the same MNI anatomy grid, so every later step of the simulator (the
milestone fields, the layers of the head, the level landmarks, the slab geometry) treats it like
the MNI anatomy.

Method
------
1. *Brain and alignment.* The template's brain mask (``atlas.alignment.brain_mask_from_image``)
   and the diagonal affine that maps it onto the MNI cerebrum (``atlas.alignment.align_to_mni``,
   one scale per axis plus a shift, no rotation).
2. *Segmentation.* A three-class (white matter, grey matter, CSF) Gaussian mixture over the
   (T1w, T2w) intensities of the brain's voxels, each normalised by its brain median, fitted by
   EM with a spatial prior: the MNI grey- and white-matter probabilities at the aligned position
   (CSF = the rest), relaxed toward uniform, ``(1 - PRIOR_RELAX) * p + PRIOR_RELAX / 3``, because
   an infant's ventricles and sulci do not sit where an adult's do. The prior also fixes which
   class is which at every age, whichever way the contrast runs (white matter is T1w-darker
   than cortex at birth and brighter by 9 months). The posteriors are the tissue fractions.
3. *On the anatomy grid.* The fractions are smoothed over about half a grid voxel and sampled at
   every grid point through the inverse of the alignment. What the templates lack (they are cut
   below the midbrain) is filled with the MNI cerebellum and brainstem.
4. *Proportions.* The alignment stretched the template to MNI's extent along each axis; the
   inverse of that stretch, normalised to keep the volume, is the scaffold's
   :attr:`Scaffold.proportions`, which the simulator's warp applies, so the synthetic infant has
   the template's length, width and height ratios.

The scaffolds carry the templates' anatomy, never their intensities: contrast comes from the
tissue curves as for the MNI anatomy. Like the templates, they are group averages, so their
cortex is smoother than an individual infant's.

Units: world coordinates in mm (RAS), fractions in [0, 1].
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from kerasmyelin.errors import InputError
from kerasmyelin.io.infant_templates import TEMPLATE_MONTHS, corrected_image, template_file
from kerasmyelin.synth import anatomy

log = logging.getLogger(__name__)

PRIOR_RELAX = 0.5
"""Weight of the uniform part of the spatial prior (0: MNI priors as they are; 1: no prior)."""
EM_ITERATIONS = 25
CLASSES = ("wm", "gm", "csf")
MNI_ANATOMY = "mni"
TEMPLATE_PREFIX = "template-"


def anatomy_name(months: int) -> str:
    """The name a scaffold goes by in a cohort and its truth files: ``template-{months}mo``."""
    return f"{TEMPLATE_PREFIX}{int(months)}mo"


def scaffold_months(name: str) -> int:
    """The template age of a scaffold name; a ValueError for anything else."""
    if name.startswith(TEMPLATE_PREFIX) and name.endswith("mo"):
        body = name[len(TEMPLATE_PREFIX):-2]
        if body.isdigit() and int(body) in TEMPLATE_MONTHS:
            return int(body)
    raise ValueError(f"unknown anatomy {name!r}: use {MNI_ANATOMY!r} or one of "
                     f"{', '.join(anatomy_name(m) for m in TEMPLATE_MONTHS)}")


@dataclass
class Segmentation:
    """Tissue fractions of one template in its own voxels.

    Attributes:
        fractions: "wm", "gm", "csf" -> (X, Y, Z) float32 posterior in [0, 1] (0 outside the brain).
        brain: bool (X, Y, Z) brain mask.
        affine: 4x4 voxel -> corrected template world mm.
        to_mni: 4x4 diagonal affine, template world mm -> MNI mm.
        means: class -> (T1w, T2w) fitted mean, as a share of the brain median.
    """

    fractions: dict[str, np.ndarray]
    brain: np.ndarray
    affine: np.ndarray
    to_mni: np.ndarray
    means: dict[str, tuple[float, float]]


def _prior_at(points_mni: np.ndarray) -> np.ndarray:
    """(N, 3) MNI prior probabilities (wm, gm, csf) at (N, 3) MNI mm points."""
    from kerasmyelin.atlas.priors import load_mni_priors

    mni = load_mni_priors()
    vox = (points_mni - mni.affine[:3, 3]) @ np.linalg.inv(mni.affine[:3, :3]).T
    wm = ndimage.map_coordinates(mni.wm, vox.T, order=1, mode="constant", cval=0.0)
    gm = ndimage.map_coordinates(mni.gm, vox.T, order=1, mode="constant", cval=0.0)
    wm, gm = np.clip(wm, 0, 1), np.clip(gm, 0, 1)
    total = wm + gm
    over = total > 1
    wm[over], gm[over] = wm[over] / total[over], gm[over] / total[over]
    return np.stack([wm, gm, 1.0 - wm - gm], axis=1).astype(np.float64)


def gaussian_mixture_em(x: np.ndarray, prior: np.ndarray, iterations: int = EM_ITERATIONS):
    """EM for a Gaussian mixture whose mixing weights vary per point (a spatial prior).

    Args:
        x: (N, D) features.
        prior: (N, K) prior class probabilities per point (rows sum to 1).

    Returns:
        (posteriors (N, K) float32, means (K, D), covariances (K, D, D)).

    The first means and covariances are the prior-weighted moments, so class k stays the class
    the prior calls k.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    resp = prior.copy()
    eps = 1e-6 * np.eye(d) * max(float(np.var(x)), 1e-12)
    for _ in range(iterations + 1):
        w = resp.sum(axis=0) + 1e-12
        means = (resp.T @ x) / w[:, None]
        covs = np.empty((prior.shape[1], d, d))
        for k in range(prior.shape[1]):
            dx = x - means[k]
            covs[k] = (resp[:, k, None] * dx).T @ dx / w[k] + eps
        log_like = np.empty_like(prior)
        for k in range(prior.shape[1]):
            inv = np.linalg.inv(covs[k])
            dx = x - means[k]
            maha = np.einsum("ni,ij,nj->n", dx, inv, dx)
            log_like[:, k] = -0.5 * (maha + np.log(np.linalg.det(covs[k])))
        log_post = log_like + np.log(np.maximum(prior, 1e-12))
        log_post -= log_post.max(axis=1, keepdims=True)
        resp = np.exp(log_post)
        resp /= resp.sum(axis=1, keepdims=True)
    return resp.astype(np.float32), means, covs


def segment(t1w: np.ndarray, t2w: np.ndarray, affine: np.ndarray, relax: float = PRIOR_RELAX) -> Segmentation:
    """Segment a skull-stripped infant brain into white matter, grey matter and CSF.

    Args:
        t1w, t2w: (X, Y, Z) co-registered images of one brain, background 0.
        affine: 4x4 voxel -> world mm (RAS), shared by both.
        relax: the uniform part of the spatial prior (see the module's method, step 2).

    Raises:
        InputError: when the two images differ in shape or hold no brain.
    """
    from kerasmyelin.atlas.alignment import align_to_mni, brain_mask_from_image

    t1w, t2w = np.asarray(t1w, np.float32), np.asarray(t2w, np.float32)
    if t1w.shape != t2w.shape:
        raise InputError(f"T1w {t1w.shape} and T2w {t2w.shape} differ in shape; a scaffold needs both on one grid")
    brain = brain_mask_from_image(t1w) & (t2w > 0)
    if brain.sum() < 1000:
        raise InputError(f"only {int(brain.sum())} brain voxels: not a skull-stripped brain")
    to_mni = align_to_mni(brain, affine)
    ijk = np.argwhere(brain).astype(np.float64)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    points = world @ to_mni[:3, :3].T + to_mni[:3, 3]
    prior = (1.0 - relax) * _prior_at(points) + relax / len(CLASSES)
    x = np.stack([t1w[brain] / np.median(t1w[brain]), t2w[brain] / np.median(t2w[brain])], axis=1)
    post, means, _ = gaussian_mixture_em(x, prior)
    fractions = {}
    for k, name in enumerate(CLASSES):
        f = np.zeros(brain.shape, np.float32)
        f[brain] = post[:, k]
        fractions[name] = f
    return Segmentation(fractions, brain, np.asarray(affine, np.float64), to_mni,
                        {name: (round(float(means[k, 0]), 3), round(float(means[k, 1]), 3))
                         for k, name in enumerate(CLASSES)})


@dataclass
class Scaffold:
    """One template's anatomy on the MNI anatomy grid.

    Attributes:
        anatomy: the :class:`anatomy.Anatomy` (fractions, layers, milestone fields).
        proportions: (3,) per-axis factor (geometric mean 1) that gives the infant the template's
            proportions; the simulator multiplies its size scale by it.
        brain_ml: volume of the brain on the grid (MNI mm^3 / 1000), CSF inside it included, the
            volume the infant's brain volume is scaled against.
        months: the template's age.
        segmentation_means: class -> (T1w, T2w) mean as a share of the brain median.
    """

    anatomy: anatomy.Anatomy
    proportions: np.ndarray
    brain_ml: float
    months: int
    segmentation_means: dict[str, tuple[float, float]]


def template_pair(root: str | os.PathLike, months: int) -> tuple[Path, Path]:
    """The T1w and T2w files of one template; an InputError naming a missing one."""
    return template_file(root, months, "T1w"), template_file(root, months, "T2w")


def build_scaffold(root: str | os.PathLike, months: int, res_mm: float = 1.5) -> Scaffold:
    """Segment the template of ``months`` in ``root`` and build its anatomy on the grid.

    Raises:
        InputError: naming the template file when it is missing, corrupt or not a brain.
    """
    from kerasmyelin.atlas.priors import load_mni_priors

    t1_path, t2_path = template_pair(root, months)
    t1_img, t2_img = corrected_image(t1_path), corrected_image(t2_path)
    if t1_img.shape != t2_img.shape or not np.allclose(t1_img.affine, t2_img.affine, atol=1e-3):
        raise InputError("the T1w and T2w templates are not on one grid", t2_path)
    try:
        seg = segment(np.asarray(t1_img.dataobj), np.asarray(t2_img.dataobj), t1_img.affine)
    except InputError as exc:
        raise InputError(f"cannot build an anatomy scaffold: {exc}", t1_path) from exc

    t1_grid, gm_mni, wm_mni, origin = anatomy.mni_grid(res_mm)
    shape = t1_grid.shape
    # Grid point -> template voxel: grid voxel -> MNI mm -> template world mm -> template voxel.
    grid_to_mni = np.diag([res_mm, res_mm, res_mm, 1.0])
    grid_to_mni[:3, 3] = origin
    grid_to_voxel = np.linalg.inv(seg.affine) @ np.linalg.inv(seg.to_mni) @ grid_to_mni
    template_mm = float(np.mean(np.linalg.norm(seg.affine[:3, :3], axis=0)))
    grid_in_template_mm = res_mm / float(np.mean(np.diag(seg.to_mni)[:3]))
    sigma = 0.4 * max(grid_in_template_mm / template_mm, 1.0)
    sampled = {}
    for name in CLASSES:
        src = ndimage.gaussian_filter(seg.fractions[name], sigma, truncate=3.0)
        sampled[name] = ndimage.affine_transform(src, grid_to_voxel[:3, :3], offset=grid_to_voxel[:3, 3],
                                                 output_shape=shape, order=1, mode="constant", cval=0.0,
                                                 prefilter=False).astype(np.float32)
    cerebrum = sum(sampled.values())
    # What the template lacks below its cut: the MNI cerebellum and brainstem.
    mni = load_mni_priors()
    mni_to_priors = np.linalg.inv(mni.affine) @ grid_to_mni
    hind = ndimage.affine_transform((mni.brain & ~mni.cerebrum).astype(np.float32), mni_to_priors[:3, :3],
                                    offset=mni_to_priors[:3, 3], output_shape=shape, order=1, prefilter=False)
    hind = np.clip(hind * (1.0 - np.clip(cerebrum, 0, 1)), 0, 1)
    wm_h, gm_h = wm_mni * hind, gm_mni * hind
    wm = sampled["wm"] + wm_h
    gm = sampled["gm"] + gm_h
    total = np.clip(cerebrum + hind, 0, 1)
    brain = ndimage.binary_fill_holes(total > 0.5)
    anat = anatomy.layered_anatomy(wm, gm, brain, origin, res_mm)
    stretch = np.diag(seg.to_mni)[:3]  # template mm -> MNI mm per axis
    proportions = (1.0 / stretch) / np.prod(1.0 / stretch) ** (1 / 3)
    brain_ml = float(brain.sum()) * res_mm ** 3 / 1000.0
    log.info("scaffold %s: proportions %s, %.0f mL on the grid, means %s", anatomy_name(months),
             np.round(proportions, 3), brain_ml, seg.means)
    return Scaffold(anat, proportions, brain_ml, int(months), seg.means)
