"""The fitted normative model of typical infants: interval, brain-age gap, grade and chart, and
its file format. The method is described in ``kerasmyelin.norms``."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from kerasmyelin.errors import InputError


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
