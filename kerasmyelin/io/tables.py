"""Strict readers for the tab-separated tables kerasmyelin reads (participants, slice levels)."""

from __future__ import annotations

import csv
import difflib
import math
import os
import re
from pathlib import Path

from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import (
    CHRONOLOGICAL_COLUMN,
    CORRECTED_COLUMN,
    GESTATIONAL_COLUMN,
)

AGE_COLUMNS = (CORRECTED_COLUMN, CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN)
# Other names people give the age columns (compared lower-case, letters and digits only). BIDS'
# own "age" is in years by default, so it is suggested, never read.
COLUMN_ALIASES = {
    CORRECTED_COLUMN: ("age", "ages", "months", "agemonth", "ageinmonths", "agemo", "agemos", "agem",
                       "correctedage", "correctedagemonth", "correctedagemonths", "correctedageinmonths",
                       "agecorrected", "agecorrectedmonths"),
    CHRONOLOGICAL_COLUMN: ("chronologicalage", "chronologicalagemonth", "chronoage", "chronoagemonths",
                           "postnatalage", "postnatalagemonths", "ageatscan", "ageatscanmonths"),
    GESTATIONAL_COLUMN: ("ga", "gaweeks", "gestationalage", "gestationalageweek", "gestationalweeks",
                         "gestage", "gestageweeks", "gestationweeks", "gestation"),
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def misnamed_columns(header, known=AGE_COLUMNS) -> list[tuple[str, str]]:
    """Header cells that look like a misspelling of a ``known`` column the header lacks.

    Returns:
        (cell as found, column meant) pairs in header order: ``Age_Months`` -> ``age_months``
        (case and separators), ``age`` or ``corrected_age`` (a known alias), ``age_monhts`` (a
        close spelling).
    """
    present = set(header)
    wanted = [k for k in known if k not in present]
    found = []
    for cell in header:
        if cell in known or not cell.strip():
            continue
        squashed = _squash(cell)
        for column in wanted:
            target = _squash(column)
            if (squashed == target or squashed in COLUMN_ALIASES.get(column, ())
                    or difflib.SequenceMatcher(None, squashed, target).ratio() >= 0.85):
                found.append((cell, column))
                break
    return found


def read_tsv(path: str | os.PathLike, required: tuple[str, ...], *, unique: bool = True) -> list[dict[str, str]]:
    """Rows of a TSV file as dicts, checking the header and (``unique``) that no
    ``participant_id`` appears twice; tables with one row per session pass ``unique=False``.

    Raises:
        InputError: naming the file (and line) for a missing file, text that is not UTF-8 or
            not TSV, missing columns, ragged rows or duplicate participant ids.
    """
    return read_tsv_table(path, required, unique=unique)[1]


def read_tsv_table(path: str | os.PathLike, required: tuple[str, ...], *,
                   unique: bool = True) -> tuple[list[str], list[dict[str, str]]]:
    """``read_tsv``'s rows with the header (its column names, also when there are no rows)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a leading BOM (Excel) is not text
            return _rows(csv.reader(fh, delimiter="\t"), required, path, unique)
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8", path) from None
    except csv.Error as exc:
        raise InputError(f"not a readable TSV ({exc})", path) from None


def missing_columns(header: list[str], missing: list[str]) -> str:
    """The problem text for required columns the header lacks, suggesting near misses."""
    hints = "".join(f"; rename {found!r} to {meant} if that is what it holds"
                    for found, meant in misnamed_columns(header, missing))
    return f"missing column(s) {', '.join(missing)} (found: {', '.join(header)}){hints}"


def _rows(reader, required: tuple[str, ...], path: Path,
          unique: bool = True) -> tuple[list[str], list[dict[str, str]]]:
    """The header and checked rows of ``read_tsv_table`` from a ``csv.reader``."""
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("file is empty", path) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(missing_columns(header, missing), path)
    rows, seen = [], set()
    for lineno, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise InputError(f"line {lineno} has {len(fields)} fields, the header has {len(header)}", path)
        row = dict(zip(header, (f.strip() for f in fields)))
        pid = row.get("participant_id")
        if pid is not None and unique:
            if pid in seen:
                raise InputError(f"line {lineno}: participant_id {pid!r} appears twice", path)
            seen.add(pid)
        rows.append(row)
    return header, rows


def parse_number(row: dict[str, str], column: str, path, *, integer: bool = False) -> float | int:
    """A finite number from one cell, or InputError naming the file, participant and column."""
    text = row.get(column, "")
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise InputError(f"{row.get('participant_id', '?')}: {column} {text!r} is not a "
                         f"{'whole number' if integer else 'number'}", path) from None
    if not integer and not math.isfinite(value):
        raise InputError(f"{row.get('participant_id', '?')}: {column} is {text!r}", path)
    return value
