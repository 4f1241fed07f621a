"""Agreement between estimated and corrected age: the paper's metrics and a few more.

Wada et al. 2019 report Spearman's r (with its p-value), RMSE and MAE; we add Pearson's r,
Bland-Altman bias and 95% limits of agreement, and errors per age bin, so a model that is good
on average but poor at some ages shows it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

DEFAULT_AGE_BINS = (-2.0, 3.0, 6.0, 9.0, 12.0, 16.0, 20.0, 24.0)


def age_metrics(true_months, predicted_months, bins=DEFAULT_AGE_BINS) -> dict:
    """Metrics of (N,) predicted against (N,) true ages, both in months.

    Returns:
        {"n", "spearman_r", "spearman_p", "pearson_r", "rmse", "mae", "bias",
         "loa_low", "loa_high", "bins": [{"from", "to", "n", "mae", "bias"}, ...]}
        errors in months; bias = mean(predicted - true); limits of agreement bias +/- 1.96 SD.
    """
    y = np.asarray(true_months, dtype=np.float64).ravel()
    p = np.asarray(predicted_months, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size < 3:
        raise ValueError(f"need two equal-length arrays of at least 3 ages, got {y.shape} and {p.shape}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise ValueError("ages must be finite")
    err = p - y
    sd = float(np.std(err, ddof=1))
    spearman = stats.spearmanr(y, p)
    out = {
        "n": int(y.size),
        "spearman_r": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
        "pearson_r": float(np.corrcoef(y, p)[0, 1]),
        "rmse": float(np.sqrt(np.mean(err ** 2))),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
        "loa_low": float(np.mean(err) - 1.96 * sd),
        "loa_high": float(np.mean(err) + 1.96 * sd),
        "bins": [],
    }
    for lo, hi in zip(bins[:-1], bins[1:]):
        inside = (y >= lo) & (y < hi)
        if inside.any():
            out["bins"].append({"from": lo, "to": hi, "n": int(inside.sum()),
                                "mae": float(np.mean(np.abs(err[inside]))), "bias": float(np.mean(err[inside]))})
    return out
