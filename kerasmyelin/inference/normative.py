"""One infant's estimate set against typical infants: interval, brain-age gap, delay grade, chart.

Everything here is fitted on a run's cross-validated (out-of-fold) estimates of typical infants:
each infant's estimate comes from a network that never saw that infant, so its error is the
error a new infant gets. Ages are corrected ages in months (-1.7 to 24 in the paper's cohort).

**Interval (corrected age unknown).** Split-conformal and locally adaptive. With the residual
r = estimate - true age, errors grow with age (on the 100-epoch example runs, 119 infants:
Spearman rho(|r|, estimate) = 0.26 for the simple model and 0.29 for the ensemble, p < 0.005),
so |r| is divided by a scale s(estimate) and the conformal quantile q is taken of |r| / s at
the finite-sample level ceil((n + 1)(1 - alpha)) / n. The interval is
estimate +/- q * s(estimate) and holds the true age of 90 % (default) of typical infants.

The scale is a straight line fitted by least squares to |r| against the estimate, held constant
outside the estimates it was fitted on and never below a floor (a quarter of the mean |r|). Why
a line and not binned medians: with ~119 infants a bin holds 10-30 of them and the binned
medians jump about (0.5, 0.7, 1.2, 0.8, 2.0, 1.8, 0.7 months across the ensemble's bins), so an
interpolated curve would follow noise; two parameters capture the trend, and the conformal step
calibrates the overall width whatever the shape, so a shape that fits imperfectly costs only
width and coverage at particular ages, never the overall 90 %. ``cross_validate_normative``
measures both, by age band. The interval is centred on the estimate, so where estimates are
biased it covers less than the nominal level: on the example runs the 20-24-month band (16
infants, under-estimated by ~2 months as the estimates flatten near 24) is covered at 0.75
(simple) and 0.81 (ensemble). Centring on a fitted line of the residual against the estimate
did not change that (the bias is a ceiling, not linear) and was left out. When the folds are
given, each infant's conformal score uses a scale fitted without its fold, as a new infant's
would be. The deployed network ("full", trained on every infant) is likely a little better than
the fold networks, so the intervals err wide.

**Brain-age gap (corrected age known).** gap = estimate - corrected age; negative means less
myelinated than the calendar says. Estimates regress to the cohort's mean (young infants are
over-estimated, old ones under-estimated), so the raw gap falls with age and a typical
20-month-old would look delayed. As Smith et al. (NeuroImage 2019;200:528-39) and Cole et al.
do, gap = a + b * age is fitted on the typical infants and the corrected gap is
gap - (a + b * age): the gap relative to what typical infants of that corrected age get.
The line is fitted with Theil-Sen (median of pairwise slopes), not least squares: the gaps are
skewed (a few young infants over-estimated by several months, the oldest under-estimated as
the estimates flatten near 24 months), the least-squares line follows those few, and the
typical infant's corrected gap then still rises with age (held-out Spearman r = +0.13 on the
simple example run, +0.07 on the ensemble; Theil-Sen: +0.01 on both). The median-based line
describes the typical infant, which is what the grade compares with.
This *age-level* correction is used rather than the *prediction-level* one (refit
estimate = a' + b' * age and report (estimate - a') / b' - age): de Lange & Cole
(NeuroImage: Clinical 2020;26:102229) show the two remove the age dependence equally but the
prediction-level gap is the age-level gap divided by b', which inflates it (and its noise) by
1 / b' with a slope estimated from ~119 infants; the age-level gap stays in months of the
estimate, which is what the grade below compares, and the estimate itself is left unchanged
for the interval. Both corrections remove the correlation with age on the data they are fitted
on by construction, so it is checked only cross-fitted (fit on the other folds, apply to the
held-out fold).

**Grade (corrected age known).** The corrected gap is compared with the spread of the
corrected gaps of typical infants at that age: z = corrected gap / sd(age), with sd(age) a
straight-line scale of |corrected gap| against age (as above) rescaled so that the typical
infants' z have a root-mean-square of 1. In words, for a neuroradiologist:

- **not graded: check the input** (``NOT_GRADED``), whatever z says, when the infant's
  corrected age or the estimate lies outside the ages the run was trained on (its typical
  infants' corrected ages, ``age_min`` to ``age_max``), or when |z| > ``GRADE_BOUND_Z`` = 4.
  Such a result says the scan is unlike the training infants (another contrast, a wrong
  corrected age, a failed skull-strip), not where this infant stands among them: grading it
  "within norms" beside a warning is what issue 19 found (a 1-month-old estimated at 30.0
  months, 16.4 SD from typical infants, was "within norms"). Why 4: Gaussian gaps put 0.006 %
  of typical infants beyond it (1 in 16,000). The gaps are right-skewed, so the share was
  measured: cross-fitted (4 folds) on 60 simulated cohorts of 119 typical infants, 0.03 % of
  held-out infants exceeded it with Gaussian gaps, and 0.4 % and 0.8 % with log-normal gaps of
  skewness 0.9 and 1.7 (the main job's runs: 1.6-1.9), all of them ahead of the norms; none fell
  below -4. The inputs it is for sat at 9-16 SD (ten real infants, issue 19). The age rule costs
  more in the same simulations: ~3 % of held-out typical infants got estimates above the oldest
  trained age (noise sd 2.9 months at 24 months there; the real runs' estimates flatten below
  24, so fewer), and ~2 % were older or younger than every infant of the other folds, a
  cross-fitting artefact that a model fitted on all of them does not meet.
  ``cross_validate_normative`` measures both on a run ("not_graded_*"). The whole-brain
  pipeline also withholds it, with or without a corrected age, for a brain far outside the
  sizes of infants 0-24 months (``BRAIN_SIZE``; ``wholebrain.plausibility``).
- **marked delay**: the estimated myelination age is lower, for this corrected age, than
  all but 1 % of the typical infants' (z at or below their empirical 1st percentile);
- **possible delay**: lower than all but 5 % (z at or below their empirical 5th percentile);
- **ahead of norms**: higher than all but 5 % (z at or above their empirical 95th percentile,
  the mirror of possible delay, and so computed the same way);
- **within norms**: otherwise.

``NormativeModel.grade_rule()`` gives the months at 0, 12 and 24 months for a fitted run. The
thresholds are the typical infants' own z quantiles, not Gaussian ones: their corrected gaps
are right-skewed (a few young infants over-estimated by months), and the Gaussian -1.645 /
-2.326 flagged only 1-3 % of them. With ~119 typical infants the 1st percentile rests on one or
two infants, so the marked-delay cut-off is approximate. Where a quantile is unusable (not on
its side of zero, not ordered, or beyond the bound) the Gaussian value is used (-1.645, -2.326,
+1.645), and so is +1.645 for ``ahead_z`` in models saved before it existed (format version
1). How often held-out typical infants get each grade is reported by
``cross_validate_normative`` (ideally 5 % delay, 1 % marked, 5 % ahead, and few not graded: see above). The
thresholds can be set by hand (``possible_z``, ``marked_z``, ``ahead_z``). ``gap()``'s
"percentile" is the Gaussian 100 * Phi(z), a rough guide only.

**Chart.** For corrected ages -2 to 25 months in 0.25-month steps: the expected estimate
(age + a + b * age), the band of typical infants, which is the within-norms region
(expected + possible_z sd(age) to expected + ahead_z sd(age)), and the marked-delay line
(expected + marked_z sd(age)).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from kerasmyelin.errors import InputError
from kerasmyelin.evaluation.metrics import DEFAULT_AGE_BINS

DEFAULT_LEVEL = 0.90
POSSIBLE_DELAY_QUANTILE = 0.05  # share of typical infants graded "possible delay" or worse
MARKED_DELAY_QUANTILE = 0.01  # ... and "marked delay"
AHEAD_QUANTILE = 0.95  # share of typical infants below "ahead of norms"
POSSIBLE_DELAY_Z = -1.645  # fallbacks and hand-built models: the standard normal's 5th percentile
MARKED_DELAY_Z = -2.326  # ... and 1st
AHEAD_Z = 1.645  # ... and 95th; also what models saved before ahead_z existed use
GRADE_BOUND_Z = 4.0  # |z| beyond this is not graded: beyond essentially every typical infant (docstring)
MIN_INFANTS = 20
FLOOR_FRACTION = 0.25  # scale floor: this share of the mean absolute deviation
MIN_FLOOR_MONTHS = 0.01
CHART_RANGE_MONTHS = (-2.0, 25.0, 0.25)  # first, last, step
FORMAT_VERSION = 2  # 2 added ahead_z; version-1 files still load, with AHEAD_Z
WITHIN, AHEAD, POSSIBLE, MARKED = "within norms", "ahead of norms", "possible delay", "marked delay"
NOT_GRADED = "not graded: check the input"
GRADES: tuple[str, ...] = (WITHIN, AHEAD, POSSIBLE, MARKED, NOT_GRADED)
# Why a grade was withheld, for machines (result.json "grade_reason", predictions.csv). ``gap`` checks
# the first three in this order; the whole-brain pipeline's input checks add the last, which comes
# before them (wholebrain.plausibility: a brain far outside infant sizes, an adult's say).
AGE_OUTSIDE = "age_outside_trained_ages"
ESTIMATE_OUTSIDE = "estimate_outside_trained_ages"
BEYOND_BOUND = "z_beyond_bound"
BRAIN_SIZE = "brain_size_outside_infants"
GAP_REASONS: tuple[str, ...] = (AGE_OUTSIDE, ESTIMATE_OUTSIDE, BEYOND_BOUND)
REASONS: tuple[str, ...] = (BRAIN_SIZE, *GAP_REASONS)


@dataclass(frozen=True)
class SmoothScale:
    """A spread that changes smoothly with x: max(intercept + slope * clip(x, x_min, x_max), floor).

    Attributes:
        intercept, slope: the straight line (months, months per month).
        floor: the smallest value returned (months, > 0).
        x_min, x_max: the range of x it was fitted on; outside it the value is held constant.
    """

    intercept: float
    slope: float
    floor: float
    x_min: float
    x_max: float

    def __post_init__(self):
        if not all(math.isfinite(v) for v in asdict(self).values()):
            raise ValueError("scale parameters must be finite")
        if not self.floor > 0:
            raise ValueError(f"scale floor must be > 0, got {self.floor}")
        if not self.x_min <= self.x_max:
            raise ValueError(f"scale range must rise, got {self.x_min} to {self.x_max}")

    def __call__(self, x):
        x = np.clip(np.asarray(x, dtype=np.float64), self.x_min, self.x_max)
        return np.maximum(self.intercept + self.slope * x, self.floor)

    def times(self, factor: float) -> SmoothScale:
        return SmoothScale(self.intercept * factor, self.slope * factor, self.floor * factor, self.x_min, self.x_max)


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


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n + 1) * level)-th smallest of n conformal scores (split-conformal quantile).

    Raises:
        ValueError: level outside (0, 1), or too few scores for that level.
    """
    _check_level(level)
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = s.size
    k = math.ceil((n + 1) * level - 1e-9)
    if k > n:
        raise ValueError(f"a {level:.1%} interval needs at least {math.ceil(level / (1 - level) - 1e-9)} "
                         f"infants, got {n}")
    return float(s[max(k, 1) - 1])


@dataclass(frozen=True)
class NormativeModel:
    """Typical infants' out-of-fold estimates, summarised for one infant's report.

    Attributes:
        n: typical infants it was fitted on.
        level: default coverage of ``interval`` (0.9).
        estimate_scale: s(estimate), the interval's scale (months).
        scores: the n conformal scores |estimate - true age| / s, sorted.
        bias_intercept, bias_slope: a (months) and b (per month) of gap = a + b * age (Theil-Sen).
        gap_sd: sd(age) of the typical infants' corrected gaps (months).
        age_min, age_max: the typical infants' corrected ages (months).
        possible_z, marked_z, ahead_z: grade thresholds on z (possible: z <= possible_z; marked:
            z <= marked_z; ahead: z >= ahead_z), with -GRADE_BOUND_Z < marked_z < possible_z < 0 <
            ahead_z < GRADE_BOUND_Z.
    """

    n: int
    level: float
    estimate_scale: SmoothScale
    scores: tuple[float, ...]
    bias_intercept: float
    bias_slope: float
    gap_sd: SmoothScale
    age_min: float
    age_max: float
    possible_z: float = POSSIBLE_DELAY_Z
    marked_z: float = MARKED_DELAY_Z
    ahead_z: float = AHEAD_Z

    def __post_init__(self):
        if self.n < 1 or len(self.scores) != self.n:
            raise ValueError(f"need n >= 1 conformal scores, got n={self.n} and {len(self.scores)} scores")
        s = np.asarray(self.scores, dtype=np.float64)
        if not (np.all(np.isfinite(s)) and np.all(s >= 0) and np.all(np.diff(s) >= 0)):
            raise ValueError("conformal scores must be finite, >= 0 and sorted")
        _check_level(self.level)
        conformal_quantile(s, self.level)
        _check_thresholds(self.possible_z, self.marked_z, self.ahead_z)
        if not all(math.isfinite(v) for v in (self.bias_intercept, self.bias_slope, self.age_min, self.age_max)):
            raise ValueError("bias and age range must be finite")
        if not self.age_min <= self.age_max:
            raise ValueError(f"age range must rise, got {self.age_min} to {self.age_max}")

    # -- corrected age unknown -------------------------------------------------------------

    def quantile(self, level: float | None = None) -> float:
        """q: the interval is estimate +/- q * s(estimate)."""
        return conformal_quantile(self.scores, self.level if level is None else level)

    def interval(self, estimate, level: float | None = None):
        """Where the true age lies, at ``level`` (default: the fitted one), for estimates in months.

        Args:
            estimate: a number or (N,) estimates in months.

        Returns:
            (lo, hi) in months, floats or (N,) arrays like ``estimate``.
        """
        e = _months(estimate, "estimate")
        half = self.quantile(level) * self.estimate_scale(e)
        return _like(estimate, e - half), _like(estimate, e + half)

    # -- corrected age known -----------------------------------------------------------------

    def expected(self, age_months):
        """The estimate typical infants of this corrected age get (months)."""
        a = np.asarray(age_months, dtype=np.float64)
        return a + self.bias_intercept + self.bias_slope * a

    def gap(self, estimate, age_months) -> dict:
        """The brain-age gap and the grade.

        Args:
            estimate: a number or (N,) estimates in months.
            age_months: corrected age(s) in months, same shape.

        Returns:
            {"gap_months": estimate - age, "corrected_gap_months": estimate - expected(age),
             "z": corrected gap / sd(age), "grade": one of ``GRADES``, "reason": why the grade was
             withheld (one of ``GAP_REASONS``, the first that applies; None, or "" in arrays, when
             graded), "reason_text": the same in words, naming the bound crossed (None / ""),
             "percentile": 100 * Phi(z) (Gaussian; share of typical infants with a lower
             estimate), "extrapolated": age outside the typical infants' ages}.
            Floats and str for numbers in, arrays for arrays in.
        """
        e = _months(estimate, "estimate")
        a = _months(age_months, "corrected age")
        if e.shape != a.shape:
            raise InputError(f"estimate and corrected age differ in shape: {e.shape} and {a.shape}")
        gap = e - a
        corrected = e - self.expected(a)
        z = corrected / self.gap_sd(a)
        extrapolated = (a < self.age_min) | (a > self.age_max)
        reason = np.select([extrapolated, (e < self.age_min) | (e > self.age_max), np.abs(z) > GRADE_BOUND_Z],
                           list(GAP_REASONS), "")
        graded = np.select([z <= self.marked_z, z <= self.possible_z, z >= self.ahead_z], [MARKED, POSSIBLE, AHEAD],
                           WITHIN)
        grade = np.where(reason != "", NOT_GRADED, graded)
        text = np.array([self._reason_text(r, *v) for r, *v in np.broadcast(reason, e, a, z)], dtype=object)
        out = {"gap_months": gap, "corrected_gap_months": corrected, "z": z, "grade": grade, "reason": reason,
               "reason_text": text.reshape(reason.shape), "percentile": 100.0 * stats.norm.cdf(z),
               "extrapolated": extrapolated}
        if np.ndim(estimate) == 0 and np.ndim(age_months) == 0:
            out = {k: (str(v) if k == "grade" else (str(v) or None) if k in ("reason", "reason_text")
                       else bool(v) if k == "extrapolated" else float(v))
                   for k, v in out.items()}
        return out

    def _reason_text(self, reason: str, estimate: float, age: float, z: float) -> str:
        """One withheld grade's reason in words, with the numbers and the bound it crossed."""
        ages = f"the ages this run was trained on ({self.age_min:.1f} to {self.age_max:.1f} months)"
        if reason == AGE_OUTSIDE:
            return f"the corrected age ({age:.1f} months) lies outside {ages}"
        if reason == ESTIMATE_OUTSIDE:
            return f"the estimate ({estimate:.1f} months) lies outside {ages}"
        if reason == BEYOND_BOUND:
            return (f"the corrected gap is z = {z:+.1f} SD from typical infants, beyond the bound of "
                    f"{GRADE_BOUND_Z:g} SD")
        return ""

    def chart(self, ages=None) -> dict:
        """The normative chart: (M,) arrays over corrected ages (default -2 to 25 months, 0.25 steps).

        Returns:
            {"age_months", "expected" (typical estimate), "lo", "hi" (band of typical infants, the
             within-norms region: expected + possible_z sd to expected + ahead_z sd), "lo_marked"
             (expected + marked_z sd), "extrapolated"
             (outside the typical infants' ages: the line is extended and sd held constant)}.
        """
        if ages is None:
            first, last, step = CHART_RANGE_MONTHS
            ages = first + step * np.arange(round((last - first) / step) + 1)
        a = np.atleast_1d(_months(ages, "chart ages"))
        expected = self.expected(a)
        sd = self.gap_sd(a)
        return {"age_months": a, "expected": expected,
                "lo": expected + self.possible_z * sd, "hi": expected + self.ahead_z * sd,
                "lo_marked": expected + self.marked_z * sd,
                "extrapolated": (a < self.age_min) | (a > self.age_max)}

    def grade_rule(self) -> str:
        """The grading rule in one line, with this run's months."""
        ages = np.array([0.0, 12.0, 24.0])
        sd = self.gap_sd(ages)

        def months(z):
            return "/".join(f"{-z * s:.1f}" for s in sd)

        return (f"not graded (check the input) if the corrected age or the estimate is outside this run's trained "
                f"ages ({self.age_min:.1f} to {self.age_max:.1f} months) or |z| > {GRADE_BOUND_Z:g}. Otherwise: "
                f"possible delay if the estimate is at least {months(self.possible_z)} months (at corrected age "
                f"0/12/24 months) below what typical infants of that age get (z <= {self.possible_z:.2f}); "
                f"marked delay at least {months(self.marked_z)} months below (z <= {self.marked_z:.2f}); ahead of "
                f"norms at least {months(-self.ahead_z)} months above (z >= {self.ahead_z:.2f}); else within "
                f"norms. Thresholds: the 5th and 1st percentiles (delay) and the 95th (ahead) of {self.n} typical "
                f"infants' out-of-fold z, unless set by hand or unusable (then Gaussian)")

    # -- storage -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-ready data; ``from_dict`` reads it back."""
        d = asdict(self)
        d["scores"] = list(self.scores)
        return {"version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, data, source: str | os.PathLike | None = None) -> NormativeModel:
        """The model ``to_dict`` wrote, checked; files of format version 1 (before ``ahead_z``) load too.

        Args:
            source: the file it came from, named in errors.

        Raises:
            InputError: an unknown or missing key, a wrong type, or an impossible value.
        """
        where = "normative model"
        if not isinstance(data, dict) or "version" not in data:
            _keys(data, {"version", *_FIELDS}, where, source)  # names what is wrong
        version = data["version"]
        if isinstance(version, bool) or version not in _FIELDS_BY_VERSION:
            raise InputError(f"{where}: version {version!r} is not one of {', '.join(map(str, _FIELDS_BY_VERSION))}",
                             source)
        fields = _FIELDS_BY_VERSION[version]
        _keys(data, {"version", *fields}, where, source)
        values = {}  # fields a version lacks take the dataclass defaults (ahead_z: AHEAD_Z)
        for name in fields:
            value = data[name]
            if name in ("estimate_scale", "gap_sd"):
                _keys(value, set(_SCALE_FIELDS), f"{where}.{name}", source)
                value = {k: _number(value[k], f"{where}.{name}.{k}", source) for k in _SCALE_FIELDS}
                try:
                    value = SmoothScale(**value)
                except ValueError as exc:
                    raise InputError(f"{where}.{name}: {exc}", source) from None
            elif name == "scores":
                if not isinstance(value, (list, tuple)):
                    raise InputError(f"{where}.scores: expected a list of numbers, got {type(value).__name__}",
                                     source)
                value = tuple(_number(v, f"{where}.scores[{i}]", source) for i, v in enumerate(value))
            elif name == "n":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InputError(f"{where}.n: expected a whole number, got {value!r}", source)
            else:
                value = _number(value, f"{where}.{name}", source)
            values[name] = value
        try:
            return cls(**values)
        except ValueError as exc:
            raise InputError(f"{where}: {exc}", source) from None


_FIELDS = tuple(NormativeModel.__dataclass_fields__)
# What each format version holds; older versions load with the defaults of the fields they lack.
_FIELDS_BY_VERSION = {1: tuple(f for f in _FIELDS if f != "ahead_z"), FORMAT_VERSION: _FIELDS}
_SCALE_FIELDS = tuple(SmoothScale.__dataclass_fields__)


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


def normative_from_run(run: str | os.PathLike, level: float = DEFAULT_LEVEL) -> tuple[NormativeModel, dict]:
    """Fit and cross-validate the normative model on a run folder's out-of-fold estimates.

    Uses the estimate the run exports (``predicted_months``: the simple network, or the ensemble
    with its configured rule), the folds in ``splits.json``, and every fold's ``predictions.csv``.

    Returns:
        (the model fitted on every infant, ``cross_validate_normative``'s report plus "run",
         "experiment", "estimate" (label) and "column").

    Raises:
        InputError: naming the run folder when it is not a run, a fold has no predictions yet,
            or fewer than ``MIN_INFANTS`` infants were predicted.
    """
    from kerasmyelin.evaluation.report import estimate_columns
    from kerasmyelin.runs import SPLITS_FILE, RunFolder
    from kerasmyelin.training.config import load_experiment
    from kerasmyelin.training.splits import load_splits

    folder = RunFolder(run)
    run = folder.path
    if not folder.is_run():
        raise InputError(f"not a kerasmyelin run folder (no {folder.config_file.name})", run)
    if not folder.splits_file.is_file():
        raise InputError(f"no {SPLITS_FILE}: run 'kerasmyelin evaluate' / train all folds first", run)
    config = load_experiment(folder.config_file)
    splits = load_splits(folder.splits_file)
    predictions = folder.gather_predictions(len(splits))
    if predictions is None:
        missing = folder.missing_predictions(len(splits))
        raise InputError(f"no out-of-fold predictions for {', '.join(missing)}: run 'kerasmyelin evaluate' / "
                         f"train all folds first", run)
    label, column = next(iter(estimate_columns(predictions, config).items()))
    if column not in predictions or "age_months" not in predictions:
        raise InputError(f"the fold predictions lack {column} or age_months", run)
    fold_of = {pid: k for k, split in enumerate(splits) for pid in split["test"]}
    ids = predictions["participant_id"].tolist()
    strays = [p for p in ids if p not in fold_of]
    if strays:
        raise InputError(f"predictions name infants no fold in {SPLITS_FILE} tests: {strays[:3]}", run)
    if len(set(ids)) != len(ids):
        raise InputError("an infant is predicted in more than one fold", run)
    if len(ids) < MIN_INFANTS:
        raise InputError(f"only {len(ids)} infants have out-of-fold predictions; a normative fit needs "
                         f"at least {MIN_INFANTS}", run)
    folds = np.array([fold_of[p] for p in ids])
    y, e = predictions["age_months"], predictions[column]
    model = fit_normative(y, e, folds, level)
    report = {"run": str(run), "experiment": config.name, "estimate": label, "column": column,
              **cross_validate_normative(y, e, folds, level)}
    return model, report


def write_run_norms(run: str | os.PathLike) -> str:
    """Fit the run's normative model and write it into the run folder (``normative.json``), once,
    for serving to read (``kerasmyelin evaluate`` calls this). Returns a line for the user: what
    was written, or why no norms could be fitted (too few infants), in which case an older
    ``normative.json`` is removed rather than left describing other predictions."""
    from kerasmyelin.runs import RunFolder

    folder = RunFolder(run)
    try:
        model, report = normative_from_run(folder.path)
    except InputError as exc:
        if folder.norms_file.exists():
            folder.norms_file.unlink()
        return f"no normative model ({exc}): estimates from this run come without interval or grade"
    path = folder.write_norms(model, report)
    return (f"wrote {path} (norms on {model.n} infants; held-out coverage {report['coverage']:.0%} of "
            f"{model.level:.0%})")


def write_normative(path: str | os.PathLike, model: NormativeModel, report: dict | None = None) -> Path:
    """The model (and, optionally, its cross-validation report) as JSON, written atomically."""
    from kerasmyelin.io.atomic import write_text_atomic

    payload = {"model": model.to_dict(), "cross_validation": report}
    return write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def read_normative(path: str | os.PathLike) -> NormativeModel:
    """The model ``write_normative`` stored; InputError naming the file when it is not one."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the normative model ({exc.strerror or exc})", path) from None
    except ValueError as exc:
        raise InputError(f"not JSON ({exc})", path) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise InputError("not a normative model file (no 'model')", path)
    return NormativeModel.from_dict(payload["model"], path)


# -- checks ------------------------------------------------------------------------------------

def _check_level(level) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number strictly between 0 and 1 (0.9 for 90 %), got {level!r}")


def _check_thresholds(possible_z, marked_z, ahead_z) -> None:
    # Inside the bound: a threshold beyond it would name a grade that is never given.
    bound = GRADE_BOUND_Z
    if not (all(math.isfinite(v) for v in (possible_z, marked_z, ahead_z))
            and -bound < marked_z < possible_z < 0 < ahead_z < bound):
        raise ValueError(f"thresholds must satisfy -{bound:g} < marked_z < possible_z < 0 < ahead_z < {bound:g}, got "
                         f"{marked_z}, {possible_z} and {ahead_z}")


def _months(values, what: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers in months") from None
    if a.ndim > 1:
        raise InputError(f"{what} must be a number or a 1-D array, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(np.atleast_1d(a)))
    if bad.size:
        raise InputError(f"{what} holds {bad.size} NaN or infinite value(s) (first at position {bad[0]})")
    return a


def _like(template, values):
    return float(values) if np.ndim(template) == 0 else values


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


def _keys(data, expected: set, where: str, source) -> None:
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}", source)
    unknown, missing = sorted(set(data) - expected, key=str), sorted(expected - set(data))
    if unknown or missing:
        parts = ([f"unknown key(s) {', '.join(map(str, unknown))}"] if unknown else []) + \
                ([f"missing key(s) {', '.join(missing)}"] if missing else [])
        raise InputError(f"{where}: {'; '.join(parts)}", source)


def _number(value, where: str, source) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}", source)
    return float(value)
