"""Noise-free T1w and T2w signal of one infant on its anatomy's grid: relaxation times at the
infant's maturation through the scanner's signal equations, and the tissues that do not mature
(the same for every infant of one anatomy and sequence, so cached)."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from kerasmyelin.synth.cohort import SubjectSpec
from kerasmyelin.synth.curves import curves_for
from kerasmyelin.synth.maturation import grey_matter_times, white_matter_times
from kerasmyelin.synth.relaxation import (
    CONSTANT_TISSUES,
    SCALP_FAT_FRACTION,
    tissue_parameters,
)
from kerasmyelin.synth.sequences import PROTOCOLS, Scanner, Sequence
from kerasmyelin.synth.tissue_model import TissueModel, tissue_model


def warm_up(res_mm: float = 1.5, anatomies=(("mni", ""),)) -> None:
    """Load or build the shared tissue models now (before forking workers).

    Args:
        anatomies: (anatomy name, template folder) pairs the cohort uses (``SubjectSpec.anatomy``,
            ``SubjectSpec.template_root``).
    """
    for name, root in anatomies:
        tissue_model(res_mm, name, root)
        for scanner in PROTOCOLS["clinical"].values():
            for seq in (scanner.t1w, scanner.t2w):
                constant_tissue_volume(res_mm, scanner.field_strength, seq, name, root)
        skull_strip_mask(res_mm, name, root)


def subject_tissue_model(spec: SubjectSpec, res_mm: float = 1.5) -> TissueModel:
    """The tissue model (anatomy) this infant is built on."""
    return tissue_model(res_mm, spec.anatomy, spec.template_root)


def signal_volumes(anat: TissueModel, spec: SubjectSpec, scanner: Scanner, rng) -> list[np.ndarray]:
    """Noise-free T1w and T2w signal on the anatomy grid for this infant's maturation."""
    curves = curves_for(spec.tissue_curves)
    k1, k2 = anat.speeds(curves)
    coords = anat.wm_coords
    m = np.float32(spec.myelination_age_months)
    # The infant's own smooth regional deviations from the typical timing.
    k = rng.normal(size=(2, 3))
    k *= (2 * np.pi / rng.uniform(50, 120, 2) / np.linalg.norm(k, axis=1))[:, None]
    jitter = sum(np.cos(kk.astype(np.float32) @ coords + rng.uniform(0, 2 * np.pi)) for kk in k)
    jitter = np.float32(spec.regional_jitter_months / np.sqrt(2) * rng.normal(1.0, 0.3)) * jitter
    fs = scanner.field_strength
    wm_params = tissue_parameters("wm", fs, *white_matter_times(m - jitter, k1, k2, curves), curves)
    gm_params = tissue_parameters("gm", fs, *grey_matter_times(m, curves), curves)
    f = anat.fractions
    f_wm = f["wm"].ravel()[anat.wm_index]
    out = []
    for seq in (scanner.t1w, scanner.t2w):
        vol = f["gm"] * seq.signal(*gm_params)
        vol += constant_tissue_volume(anat.res_mm, fs, seq, spec.anatomy, spec.template_root)
        vol.ravel()[anat.wm_index] += f_wm * seq.signal(*wm_params)
        out.append(vol)
    return out


def constant_tissue_signals(field_strength: float, seq: Sequence) -> dict[str, float]:
    """Signal of each tissue that does not mature (CSF, skull, fat, muscle, and the scalp's mix)."""
    tissues = CONSTANT_TISSUES[field_strength]
    const = {name: float(seq.signal(*(np.float32(v) for v in tissues[name]))) for name in tissues}
    const["scalp"] = SCALP_FAT_FRACTION * const["fat"] + (1 - SCALP_FAT_FRACTION) * const["muscle"]
    return const


@functools.lru_cache(maxsize=16)
def constant_tissue_volume(res_mm: float, field_strength: float, seq: Sequence, anatomy: str = "mni",
                            templates: str = "") -> np.ndarray:
    """Signal of the tissues that do not mature (CSF, skull, scalp): the same for every infant
    of one anatomy scanned with the same sequence."""
    anat = tissue_model(res_mm, anatomy, templates)
    const = constant_tissue_signals(field_strength, seq)
    vol = np.zeros(anat.shape, np.float32)
    for name in ("csf", "skull", "scalp"):
        vol += anat.fractions[name] * np.float32(const[name])
    vol.flags.writeable = False
    return vol


@functools.lru_cache(maxsize=8)
def skull_strip_mask(res_mm: float = 1.5, anatomy: str = "mni", templates: str = "") -> np.ndarray:
    """What a skull-stripping tool keeps on the anatomy grid: the brain with its ventricles and
    sulcal CSF, without skull, scalp and most of the CSF outside the brain (float32 0/1)."""
    anat = tissue_model(res_mm, anatomy, templates)
    brain = anat.fractions["wm"] + anat.fractions["gm"] > 0.5
    # Closing over ~6 mm takes in the sulci and the ventricles' openings (the atria reach the
    # surface through the choroidal fissure); filling, in 3-D and slice by slice, the ventricles.
    r = max(1, int(round(6.0 / res_mm)))
    ball = np.sum(np.square(np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]), axis=0) <= r * r
    brain = ndimage.binary_closing(np.pad(brain, r), ball)[r:-r, r:-r, r:-r]
    brain = ndimage.binary_fill_holes(brain)
    for z in range(brain.shape[2]):
        brain[:, :, z] = ndimage.binary_fill_holes(brain[:, :, z])
    mask = brain.astype(np.float32)
    mask.flags.writeable = False
    return mask
