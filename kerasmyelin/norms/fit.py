"""Fitting the normative model on typical infants' out-of-fold estimates, and measuring it
cross-fitted by fold (method: ``kerasmyelin.norms``)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats

from kerasmyelin.errors import InputError
from kerasmyelin.evaluation.metrics import DEFAULT_AGE_BINS
from kerasmyelin.norms.model import (
    AGE_OUTSIDE,
    AHEAD,
    AHEAD_QUANTILE,
    AHEAD_Z,
    BEYOND_BOUND,
    DEFAULT_LEVEL,
    ESTIMATE_OUTSIDE,
    FLOOR_FRACTION,
    GRADE_BOUND_Z,
    MARKED,
    MARKED_DELAY_QUANTILE,
    MARKED_DELAY_Z,
    MIN_FLOOR_MONTHS,
    MIN_INFANTS,
    NOT_GRADED,
    POSSIBLE,
    POSSIBLE_DELAY_QUANTILE,
    POSSIBLE_DELAY_Z,
    NormativeModel,
    SmoothScale,
    _check_level,
    _check_thresholds,
    _months,
)

def fit_scale(x, deviation) -> SmoothScale:
    """Least-squares line of |deviation| against x, floored at a quarter of the mean |deviation|.

    Args:
        x: (N,) the quantity the spread depends on (estimate or age, months).
        deviation: (N,) residuals in months.
    """
    x = np.asarray(x, dtype=np.float64)
    size = np.abs(np.asarray(deviation, dtype=np.float64))
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, size, 1)
    else:
        slope, intercept = 0.0, float(size.mean())
    floor = max(FLOOR_FRACTION * float(size.mean()), MIN_FLOOR_MONTHS)
    return SmoothScale(float(intercept), float(slope), floor, float(x.min()), float(x.max()))



def _theil_sen(x, y) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: median pairwise slope, median-based intercept."""
    if np.ptp(x) == 0:
        return 0.0, float(np.median(y))
    fit = stats.theilslopes(y, x, method="joint")  # intercept: median of y - slope * x
    return float(fit.slope), float(fit.intercept)


def fit_normative(true_months, estimated_months, folds=None, level: float = DEFAULT_LEVEL, *,
                  possible_z: float | None = None, marked_z: float | None = None,
                  ahead_z: float | None = None) -> NormativeModel:
    """Fit the interval, the gap correction and the normative spread on typical infants.

    Args:
        true_months: (N,) corrected ages in months.
        estimated_months: (N,) out-of-fold estimates in months.
        folds: (N,) fold of each infant, or None. Given, each conformal score uses a scale fitted
            on the other folds.
        level: the interval's default coverage, in (0, 1).
        possible_z, marked_z: grade thresholds (z <= possible_z: possible delay; z <= marked_z:
            marked delay), marked_z < possible_z < 0. None (default): the empirical 5th and 1st
            percentiles of the typical infants' z. The corrected gaps are right-skewed (skewness
            1.6-1.9 on the main job's runs), so the Gaussian -1.645 / -2.326 flagged only 1-3% of
            typical infants instead of 5% / 1%. If an empirical percentile is not below zero (or
            they are not ordered), the Gaussian value is used.
        ahead_z: z >= ahead_z is "ahead of norms", 0 < ahead_z < ``GRADE_BOUND_Z``. None
            (default): the empirical 95th percentile, the mirror of possible delay's 5th (the
            Gaussian +1.645 where it is not between 0 and the bound).

    Raises:
        InputError: non-finite or mismatched inputs, or fewer than ``MIN_INFANTS`` infants.
        ValueError: level or thresholds out of range.
    """
    y, e, folds = _check_inputs(true_months, estimated_months, folds)
    _check_level(level)
    if possible_z is not None and marked_z is not None:
        _check_thresholds(possible_z, marked_z, AHEAD_Z if ahead_z is None else ahead_z)
    if y.size < MIN_INFANTS:
        raise InputError(f"a normative fit needs at least {MIN_INFANTS} typical infants, got {y.size}")
    r = e - y
    scale = fit_scale(e, r)
    if folds is None:
        scores = np.abs(r) / scale(e)
    else:
        scores = np.empty_like(r)
        for k in np.unique(folds):
            out = folds == k
            scores[out] = np.abs(r[out]) / fit_scale(e[~out], r[~out])(e[out])
    b, a = _theil_sen(y, r)
    corrected = r - (a + b * y)
    spread = fit_scale(y, corrected)
    factor = float(np.sqrt(np.mean((corrected / spread(y)) ** 2)))
    z = corrected / (spread(y) * max(factor, 1e-6))
    if possible_z is None:
        possible_z = float(np.quantile(z, POSSIBLE_DELAY_QUANTILE))
        possible_z = possible_z if -GRADE_BOUND_Z < possible_z < 0 else POSSIBLE_DELAY_Z
    if marked_z is None:
        marked_z = float(np.quantile(z, MARKED_DELAY_QUANTILE))
        marked_z = marked_z if -GRADE_BOUND_Z < marked_z < possible_z else min(MARKED_DELAY_Z, possible_z - 0.1)
    if ahead_z is None:
        ahead_z = float(np.quantile(z, AHEAD_QUANTILE))
        ahead_z = ahead_z if 0 < ahead_z < GRADE_BOUND_Z else AHEAD_Z
    _check_thresholds(possible_z, marked_z, ahead_z)
    try:
        return NormativeModel(n=int(y.size), level=float(level), estimate_scale=scale,
                              scores=tuple(float(v) for v in np.sort(scores)), bias_intercept=float(a),
                              bias_slope=float(b), gap_sd=spread.times(max(factor, 1e-6)),
                              age_min=float(y.min()), age_max=float(y.max()),
                              possible_z=float(possible_z), marked_z=float(marked_z), ahead_z=float(ahead_z))
    except ValueError as exc:
        raise InputError(f"cannot fit a normative model: {exc}") from None


def cross_validate_normative(true_months, estimated_months, folds, level: float = DEFAULT_LEVEL,
                             bins=DEFAULT_AGE_BINS) -> dict:
    """Cross-fitted checks: for each fold, fit on the other folds and score the held-out infants.

    Args:
        true_months, estimated_months: (N,) corrected ages and out-of-fold estimates, months.
        folds: (N,) fold of each infant (at least 2 folds).
        bins: age-band edges (months) for coverage by band; ages outside go to the end bands.

    Returns:
        {"n", "folds", "level", "coverage", "mean_width_months", "bands": [{"from", "to", "n",
         "coverage", "mean_width_months"}], "raw_gap_spearman_r", "raw_gap_spearman_p",
         "corrected_gap_spearman_r", "corrected_gap_spearman_p" (gaps against corrected age),
         "flagged_possible_or_marked", "flagged_marked", "flagged_ahead" (share of held-out typical
         infants graded so; ideally 0.05, 0.01 and 0.05), "not_graded" (share not graded: check
         the input; few, see the module docstring), split into "not_graded_outside_ages" (corrected age or estimate
         outside the ages of the other folds' infants) and "not_graded_beyond_bound" (|z| beyond
         ``GRADE_BOUND_Z``)}.
    """
    y, e, folds = _check_inputs(true_months, estimated_months, folds)
    if folds is None:
        raise InputError("cross-validation needs the fold of each infant")
    labels = np.unique(folds)
    _check_level(level)
    lo, hi = np.empty_like(y), np.empty_like(y)
    corrected = np.empty_like(y)
    grade = np.empty(y.shape, dtype=object)
    reason = np.empty(y.shape, dtype=object)
    for k in labels:
        test = folds == k
        inner = folds[~test] if labels.size > 2 else None
        try:
            model = fit_normative(y[~test], e[~test], inner, level)
        except InputError as exc:
            raise InputError(f"without fold {k}: {exc}") from None
        lo[test], hi[test] = model.interval(e[test])
        g = model.gap(e[test], y[test])
        # Each fold is graded with the thresholds fitted without it, as a new infant would be.
        corrected[test], grade[test], reason[test] = g["corrected_gap_months"], g["grade"], g["reason"]
    covered = (y >= lo) & (y <= hi)
    width = hi - lo
    edges = np.asarray(bins, dtype=np.float64)
    band = np.digitize(y, edges[1:-1])
    bands = []
    for i, (b_lo, b_hi) in enumerate(itertools.pairwise(edges)):
        inside = band == i
        if inside.any():
            bands.append({"from": float(b_lo), "to": float(b_hi), "n": int(inside.sum()),
                          "coverage": float(covered[inside].mean()),
                          "mean_width_months": float(width[inside].mean())})
    raw = stats.spearmanr(e - y, y)
    fixed = stats.spearmanr(corrected, y)
    return {"n": int(y.size), "folds": int(labels.size), "level": float(level),
            "coverage": float(covered.mean()), "mean_width_months": float(width.mean()), "bands": bands,
            "raw_gap_spearman_r": float(raw.statistic), "raw_gap_spearman_p": float(raw.pvalue),
            "corrected_gap_spearman_r": float(fixed.statistic), "corrected_gap_spearman_p": float(fixed.pvalue),
            "flagged_possible_or_marked": float(np.mean((grade == POSSIBLE) | (grade == MARKED))),
            "flagged_marked": float(np.mean(grade == MARKED)), "flagged_ahead": float(np.mean(grade == AHEAD)),
            "not_graded": float(np.mean(grade == NOT_GRADED)),
            "not_graded_outside_ages": float(np.mean((reason == AGE_OUTSIDE) | (reason == ESTIMATE_OUTSIDE))),
            "not_graded_beyond_bound": float(np.mean(reason == BEYOND_BOUND))}

def _check_inputs(true_months, estimated_months, folds):
    y = np.atleast_1d(_months(true_months, "true ages"))
    e = np.atleast_1d(_months(estimated_months, "estimates"))
    if y.shape != e.shape:
        raise InputError(f"true ages and estimates differ in length: {y.size} and {e.size}")
    if folds is not None:
        folds = np.asarray(folds)
        if folds.shape != y.shape:
            raise InputError(f"folds has {folds.size} entries for {y.size} infants")
        if np.unique(folds).size < 2:
            raise InputError(f"folds must name at least 2 folds, got {np.unique(folds).size}")
    return y, e, folds
