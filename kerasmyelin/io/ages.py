"""Corrected age: the label of Wada et al. 2019, from chronological and gestational age.

The paper "corrected [each age] by converting gestational age to a full 40 weeks". kerasmyelin
applies that to every infant, born early or late: corrected age = chronological age minus
(40 - gestational age) weeks, so a baby born at 32 weeks and scanned at 3 months is 1.16
months old corrected, and one born at 42 weeks is 0.46 months older than its chronological
age. (Some clinics correct only below 37 weeks; the synthetic cohort, its participants.json
and this function correct every infant.)

Column names read from participants.tsv, sessions.tsv and CSV lists:

- ``age_months``: corrected age in months (used as given when present);
- ``chronological_age_months``: age at scan since birth, in months;
- ``gestational_age_weeks``: gestational age at birth, in weeks.
"""

from __future__ import annotations

import math

WEEKS_PER_MONTH = 365.25 / 12 / 7  # 4.348: a mean calendar month in weeks
TERM_WEEKS = 40.0
GESTATIONAL_RANGE_WEEKS = (22.0, 44.0)
CHRONOLOGICAL_RANGE_MONTHS = (0.0, 60.0)

CORRECTED_COLUMN = "age_months"
CHRONOLOGICAL_COLUMN = "chronological_age_months"
GESTATIONAL_COLUMN = "gestational_age_weeks"


def corrected_age_months(chronological_months: float, gestational_weeks: float) -> float:
    """Corrected age in months: chronological age minus (40 - gestational age) weeks.

    Args:
        chronological_months: age at scan since birth, months, 0 to 60.
        gestational_weeks: gestational age at birth, weeks, 22 to 44.

    Returns:
        Corrected age in months (negative for a preterm infant scanned before term).

    Raises:
        ValueError: a value that is not a finite number or lies outside its range; the message
            names the value and its unit.
    """
    chronological = _finite(chronological_months, "chronological age", "months")
    gestational = _finite(gestational_weeks, "gestational age", "weeks")
    lo, hi = CHRONOLOGICAL_RANGE_MONTHS
    if not lo <= chronological <= hi:
        raise ValueError(f"chronological age {chronological:g} months is outside {lo:g} to {hi:g} months "
                         "(age since birth in months expected; weeks or days?)")
    lo, hi = GESTATIONAL_RANGE_WEEKS
    if not lo <= gestational <= hi:
        raise ValueError(f"gestational age {gestational:g} weeks is outside {lo:g} to {hi:g} weeks "
                         "(gestational age at birth in weeks expected)")
    return chronological - (TERM_WEEKS - gestational) / WEEKS_PER_MONTH


def _finite(value, what: str, unit: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number of {unit}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} is {value!r}, not a number of {unit}")
    return number
