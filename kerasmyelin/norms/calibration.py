"""Site calibration: a monotone correction of a model's estimates, fitted on a few labelled local
scans (``kerasmyelin calibrate``).

A model trained on one site's (or the synthetic) infants reads another site's scans with an
offset, and often a compressed range (docs/realism.md: estimates rising at 0.3-0.4 months per
month on the real templates). With the corrected ages of a few local scans, the correction
``corrected = intercept + slope * estimate`` is fitted:

- below ``LINEAR_FROM`` scans only the offset (slope 1: the median of age - estimate), because
  a slope from 5-9 points swings widely with one scan;
- from ``LINEAR_FROM`` scans the Theil-Sen line of age against estimate (median of pairwise
  slopes: one mislabelled scan moves it little), its slope kept within ``SLOPE_RANGE`` so the
  correction stays monotone and cannot flatten every estimate to one age or blow them up.

Its error is reported leave-one-out: each scan corrected by the correction fitted on the others,
so the figure is what a new local scan would get. The correction is applied inside the model's
graph (``models.site_calibration``), so predict and every export apply it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kerasmyelin.errors import InputError

MIN_SCANS = 5
LINEAR_FROM = 10
SLOPE_RANGE = (0.25, 4.0)
KINDS = ("auto", "offset", "linear")


@dataclass(frozen=True)
class SiteCalibration:
    """A fitted correction and how well it held out.

    Attributes:
        kind: "offset" or "linear".
        intercept, slope: corrected = intercept + slope * estimate (months).
        n: labelled scans it was fitted on.
        raw_mae: mean |estimate - age| before correction (months).
        loo_mae: mean |corrected - age| leave-one-out (months).
        loo_estimates: each scan's leave-one-out corrected estimate, in input order.
    """

    kind: str
    intercept: float
    slope: float
    n: int
    raw_mae: float
    loo_mae: float
    loo_estimates: tuple[float, ...]

    def apply(self, estimates):
        return self.intercept + self.slope * np.asarray(estimates, dtype=np.float64)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loo_estimates"] = [round(float(v), 4) for v in self.loo_estimates]
        return d

    def summary(self) -> dict:
        """What a model's record and each result.json carry (no per-scan values)."""
        return {k: v for k, v in self.to_dict().items() if k != "loo_estimates"}


def _line(kind: str, age: np.ndarray, est: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of the correction of ``kind`` fitted on these scans."""
    if kind == "offset":
        return float(np.median(age - est)), 1.0
    from scipy import stats

    if np.ptp(est) == 0:
        return float(np.median(age - est)), 1.0
    slope = float(np.clip(stats.theilslopes(age, est, method="joint").slope, *SLOPE_RANGE))
    return float(np.median(age - slope * est)), slope


def fit_site_calibration(ages, estimates, kind: str = "auto") -> SiteCalibration:
    """Fit the correction on labelled scans (see the module docstring).

    Args:
        ages: (N,) corrected ages in months.
        estimates: (N,) the model's estimates of the same scans.
        kind: "offset", "linear", or "auto" (offset below ``LINEAR_FROM`` scans, else linear).

    Raises:
        InputError: fewer than ``MIN_SCANS`` scans, NaN, or an unknown kind.
    """
    if kind not in KINDS:
        raise InputError(f"calibration kind {kind!r}: use one of {', '.join(KINDS)}")
    age = np.asarray(ages, dtype=np.float64).reshape(-1)
    est = np.asarray(estimates, dtype=np.float64).reshape(-1)
    if age.shape != est.shape:
        raise InputError(f"{age.size} ages for {est.size} estimates")
    if age.size < MIN_SCANS:
        raise InputError(f"a site calibration needs at least {MIN_SCANS} labelled scans, got {age.size}")
    if not (np.all(np.isfinite(age)) and np.all(np.isfinite(est))):
        raise InputError("ages and estimates must be finite numbers")
    if kind == "auto":
        kind = "offset" if age.size < LINEAR_FROM else "linear"
    loo = np.empty_like(age)
    for i in range(age.size):
        keep = np.arange(age.size) != i
        a, b = _line(kind, age[keep], est[keep])
        loo[i] = a + b * est[i]
    a, b = _line(kind, age, est)
    return SiteCalibration(kind, a, b, int(age.size), float(np.mean(np.abs(est - age))),
                           float(np.mean(np.abs(loo - age))), tuple(float(v) for v in loo))
