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


def typical_infant(age_months: float, field_strength: float = 3.0, seed: int = 0) -> SubjectSpec:
    """A median infant of that age: typical pace, no regional jitter, neutral pose, no motion."""
    base = draw_cohort(CohortConfig(subjects=1, seed=seed))[0]
    return replace(base, age_months=float(age_months), myelination_age_months=float(age_months),
                   maturation_rate=1.0, field_strength=float(field_strength),
                   brain_volume_ml=float(brain_volume_ml(age_months)), scale_anisotropy=(1.0, 1.0, 1.0),
                   rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0),
                   regional_jitter_months=0.0, motion=False)


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
