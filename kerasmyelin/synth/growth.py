"""Infant brain size by age, for scaling the adult anatomy to an infant.

The curve was fitted (least squares, ``V(m) = v_inf - (v_inf - v_0) exp(-m / tau)``) to the
brain-mask volumes of 196 real infants aged 10-821 days in
``shared/data/brain_volume_by_age/brain_mask_volumes.csv`` (Baby Connectome Project, MIT
licence). Only the three fitted numbers live here; ``tests/test_growth.py`` re-fits the curve
from that file where it is present and checks it still agrees. The residual spread of that fit
(standard deviation of log volume 0.091) includes the sex difference; the cohort draws 0.8 of
it around the sex-specific median.
"""

from __future__ import annotations

import numpy as np

V_INF_ML = 1218.96
V_TERM_ML = 439.58
TAU_MONTHS = 6.873
LOG_SD = 0.091
# The largest brain in the same file (mL; its 24-month visit, at 24.5 months): the upper end of
# infant sizes that the whole-brain pipeline's size flag starts from (wholebrain.plausibility).
LARGEST_INFANT_BRAIN_ML = 1413.9
# Below term the exponential falls too steeply; fetal brains near term grow about 100 mL a
# month (the fitted slope at term is 113 mL/month), so younger ages continue that slope.
_SLOPE_AT_TERM = (V_INF_ML - V_TERM_ML) / TAU_MONTHS
# Boys' brains are about 8% larger than girls' in infancy (Knickmeyer 2008; Gilmore 2007).
SEX_FACTOR = {"M": 1.04, "F": 0.96}


def brain_volume_ml(age_months: np.ndarray | float) -> np.ndarray:
    """Median brain-mask volume in mL at a corrected age in months (both sexes)."""
    m = np.asarray(age_months, dtype=np.float64)
    grown = V_INF_ML - (V_INF_ML - V_TERM_ML) * np.exp(-np.maximum(m, 0.0) / TAU_MONTHS)
    return np.where(m >= 0, grown, V_TERM_ML + _SLOPE_AT_TERM * m)
