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

This module is the one owner of reading an age from a table cell (:func:`parse_age`,
:func:`row_age_months`, :func:`age_row`), shared by ``prepare`` (data/build.py, data/nnc.py)
and ``predict`` (wholebrain/manifest.py); it sits below both.
"""

from __future__ import annotations

import math

from kerasmyelin.errors import InputError

WEEKS_PER_MONTH = 365.25 / 12 / 7  # 4.348: a mean calendar month in weeks
TERM_WEEKS = 40.0
GESTATIONAL_RANGE_WEEKS = (22.0, 44.0)
CHRONOLOGICAL_RANGE_MONTHS = (0.0, 60.0)

AGE_RANGE_MONTHS = (-3.0, 60.0)
"""Corrected ages kerasmyelin accepts from a table or an option; outside it, wrong units are likely."""

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


def is_blank(text: str | None) -> bool:
    """An empty cell: '', 'n/a', 'na' or 'nan' (any case)."""
    return text is None or text.strip().lower() in ("", "n/a", "na", "nan")


def parse_age(text: str | None, where: str) -> float | None:
    """A corrected age in months from a table cell; '' / 'n/a' -> None; a bad value -> InputError."""
    if is_blank(text):
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: age {text!r} is not a number of months") from None
    return _in_range(value, text, where)


def _in_range(value: float, text: str, where: str) -> float:
    if not math.isfinite(value) or not AGE_RANGE_MONTHS[0] <= value <= AGE_RANGE_MONTHS[1]:
        raise InputError(f"{where}: age {text} is outside {AGE_RANGE_MONTHS[0]:g} to {AGE_RANGE_MONTHS[1]:g} "
                         "months (corrected age in months expected; weeks or days?)")
    return value


def row_age_months(row: dict[str, str], where: str) -> float | None:
    """The corrected age in months of one table row, or None when the row gives none.

    ``age_months`` is used when filled in; otherwise ``chronological_age_months`` and
    ``gestational_age_weeks`` together give it (``io.ages.corrected_age_months``). One of the
    two without the other, or values out of range, is an InputError naming ``where``.
    """
    age = parse_age(row.get(CORRECTED_COLUMN), where)
    if age is not None:
        return age
    chronological, gestational = row.get(CHRONOLOGICAL_COLUMN), row.get(GESTATIONAL_COLUMN)
    if is_blank(chronological) and is_blank(gestational):
        return None
    if is_blank(chronological) or is_blank(gestational):
        given, missing = ((GESTATIONAL_COLUMN, CHRONOLOGICAL_COLUMN) if is_blank(chronological)
                          else (CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN))
        raise InputError(f"{where}: {given} is given but {missing} is not; the corrected age needs both "
                         f"(or give {CORRECTED_COLUMN})")
    try:
        corrected = corrected_age_months(chronological, gestational)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    return _in_range(corrected, f"{corrected:.2f} (corrected from {CHRONOLOGICAL_COLUMN} {chronological} and "
                                f"{GESTATIONAL_COLUMN} {gestational})", where)


def age_row(participant: dict[str, str], session: dict[str, str] | None) -> tuple[dict[str, str], bool]:
    """The cells that give one session's age, and whether they come from the sessions table.

    A session row with an age of its own (corrected, or chronological with the gestational age
    from either table) wins; otherwise the participant's age applies.
    """
    if session is not None and not (is_blank(session.get(CORRECTED_COLUMN)) and
                                    is_blank(session.get(CHRONOLOGICAL_COLUMN))):
        gestational = session.get(GESTATIONAL_COLUMN)
        if is_blank(gestational):
            gestational = participant.get(GESTATIONAL_COLUMN)
        return {CORRECTED_COLUMN: session.get(CORRECTED_COLUMN, ""),
                CHRONOLOGICAL_COLUMN: session.get(CHRONOLOGICAL_COLUMN, ""),
                GESTATIONAL_COLUMN: gestational or ""}, True
    return participant, False
