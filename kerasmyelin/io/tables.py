"""Strict readers for the tab-separated tables kerasmyelin reads (participants, slice levels)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from kerasmyelin.errors import InputError


def read_tsv(path: str | os.PathLike, required: tuple[str, ...], *, unique: bool = True) -> list[dict[str, str]]:
    """Rows of a TSV file as dicts, checking the header and (``unique``) that no
    ``participant_id`` appears twice; tables with one row per session pass ``unique=False``.

    Raises:
        InputError: naming the file (and line) for a missing file, text that is not UTF-8 or
            not TSV, missing columns, ragged rows or duplicate participant ids.
    """
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


def _rows(reader, required: tuple[str, ...], path: Path, unique: bool = True) -> list[dict[str, str]]:
    """The checked rows of ``read_tsv`` from a ``csv.reader``."""
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("file is empty", path) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} (found: {', '.join(header)})", path)
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
    return rows


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
