"""White-to-grey matter signal ratios of synthetic infants, measured with their true tissue maps.

The synthetic scan knows each voxel's tissue fractions, so the ratio is measured where the
thick slice is (nearly) pure white matter and where it is mostly cortex, on the noise-free
signal. ``template_ratios`` measures the same quantity on the real templates.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.synth.cohort import CohortConfig, SubjectSpec, draw_cohort
from kerasmyelin.synth.growth import brain_volume_ml
from kerasmyelin.synth.simulate import simulate_subject

WM_PURE = 0.9
GM_MOSTLY = 0.6


def typical_infant(age_months: float, field_strength: float = 3.0, seed: int = 0,
                   protocol: str = "clinical", tissue_curves: str = "published", anatomy: str = "mni",
                   template_root: str = "") -> SubjectSpec:
    """A median infant of that age: typical pace, no regional jitter, neutral pose, no motion,
    scanned with the ``protocol`` family's sequences at their nominal timings, its tissue
    relaxing along ``tissue_curves`` (``synth.curves``), built on ``anatomy`` ("mni" or an
    infant scaffold of ``synth.scaffolds``, segmented from the templates in ``template_root``)."""
    base = draw_cohort(CohortConfig(subjects=1, seed=seed))[0]
    return replace(base, age_months=float(age_months), myelination_age_months=float(age_months),
                   maturation_rate=1.0, field_strength=float(field_strength),
                   brain_volume_ml=float(brain_volume_ml(age_months)), scale_anisotropy=(1.0, 1.0, 1.0),
                   rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0),
                   regional_jitter_months=0.0, motion=False, protocol=protocol, tissue_curves=tissue_curves,
                   anatomy=anatomy, template_root=str(template_root))


def wm_gm_ratios(spec: SubjectSpec) -> dict[tuple[str, str], float]:
    """(contrast, level) -> median white-matter signal / median cortex signal at that level's slice."""
    scan = simulate_subject(spec, with_truth=True)
    t = scan.truth
    out = {}
    for contrast in CONTRASTS:
        signal = t[contrast.lower()]
        for key in LEVEL_KEYS:
            k = scan.level_slices[key]
            wm = t["wm"][..., k] > WM_PURE
            gm = t["gm"][..., k] > GM_MOSTLY
            if wm.sum() < 20 or gm.sum() < 20:
                out[(contrast, key)] = float("nan")
                continue
            out[(contrast, key)] = float(np.median(signal[..., k][wm]) / np.median(signal[..., k][gm]))
    return out


def synthetic_brain_image(spec: SubjectSpec, contrast: str, res_mm: float = 1.5):
    """A skull-stripped, noise-free 3-D image of a synthetic infant, like a population template.

    The infant's signal on the reference grid, scaled to its brain size, with everything outside
    the brain set to zero, so that ``template_ratios.wm_gm_ratios`` measures it exactly as it
    measures the real templates.

    Returns:
        A ``nibabel.Nifti1Image`` (float32) with an RAS affine in mm.
    """
    import nibabel as nib

    from kerasmyelin.synth.tissue_signal import signal_volumes, skull_strip_mask, subject_tissue_model

    model = subject_tissue_model(spec, res_mm)
    t1w, t2w = signal_volumes(model, spec, spec.scanner, np.random.default_rng(spec.seed))
    mask = skull_strip_mask(res_mm, spec.anatomy, spec.template_root)
    data = np.where(mask > 0, t1w if contrast == "T1w" else t2w, 0.0).astype(np.float32)
    scale = (spec.brain_volume_ml / model.brain_ml) ** (1 / 3) * np.asarray(model.proportions)
    affine = model.affine.copy()
    affine[:3, :] *= scale[:, None]
    return nib.Nifti1Image(data, affine)


def instrument_ratios(spec: SubjectSpec) -> dict[tuple[str, str], float]:
    """(contrast, level) -> ratio measured by the template instrument on ``synthetic_brain_image``."""
    from kerasmyelin.validation.template_ratios import wm_gm_ratios as measure

    out = {}
    for contrast in CONTRASTS:
        for key, value in measure(synthetic_brain_image(spec, contrast)).items():
            out[(contrast, key)] = value
    return out
