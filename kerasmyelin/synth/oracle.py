"""The cohort's oracle floor: how well age can be known from the brain's appearance at all.

Each synthetic infant matures at its own pace, so its brain looks like a typical infant of its
*myelination age*, not of its calendar (corrected) age. A model that read the myelination age
perfectly would still err by the difference; that error is the floor every model's error is
reported against.
"""

from __future__ import annotations

import numpy as np


def oracle_floor(age_months, myelination_age_months) -> dict[str, float]:
    """Error of taking the myelination age as the estimate of the corrected age.

    Args:
        age_months: (N,) corrected ages, the label.
        myelination_age_months: (N,) the ages the infants' brains look like.

    Returns:
        {"mae": ..., "rmse": ..., "pearson_r": ..., "n": N}, errors in months.
    """
    a = np.asarray(age_months, dtype=np.float64)
    m = np.asarray(myelination_age_months, dtype=np.float64)
    if a.shape != m.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two 1-D arrays of equal length >= 2, got {a.shape} and {m.shape}")
    err = m - a
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "pearson_r": float(np.corrcoef(a, m)[0, 1]), "n": int(a.size)}
