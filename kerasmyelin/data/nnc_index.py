"""The index of a Neural Network Console (NNC) dataset, ``index.csv``: its header's columns
named, its rows checked (``data.nnc`` imports the images they list).

The CSV has one row per example: image columns hold paths to image files (relative to the CSV's
folder), the label column holds the target. The header follows NNC's ``NAME[__INDEX][:LABEL]``
convention (nnabla ``CsvDataSource``): ``x__0:T1w a`` is element 0 of variable ``x``, labelled
"T1w a"; ``y:age`` is the variable ``y``, labelled "age".

- **Age column**: the column whose label or variable is ``age_months``, ``age``,
  ``corrected_age`` or ``corrected_age_months``, else the one whose variable is ``y`` (NNC's
  default output). Corrected age in months. Without one, ``chronological_age_months`` and
  ``gestational_age_weeks`` columns give it (``io.ages``).
- **Participant id**: a column named ``participant_id``, ``subject``, ``subject_id`` or ``id``
  (label or variable); without one, ids are ``row-001``, ``row-002``, ... in file order.
- **Image columns**: each other column is matched to an input name (``levels.INPUT_NAMES``) by
  its label, else its variable: case, spaces, dots and hyphens do not matter, and ``T1w_a``,
  ``t1_a``, ``T1a``, ``T1 a``, ``T1WI-a``, ``x_t1w_a`` all mean ``t1w_a``. When no column
  matches by name and there are exactly ten other columns, they are taken in the paper's order
  (T1w a-e, then T2w a-e; Figure 2): by ``__INDEX`` when they are the elements of one variable
  (``x__0`` ... ``x__9``), else left to right. Columns that match nothing are ignored (and
  listed in the manifest) when the ten inputs were all found by name.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN, row_age_months
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, input_name

# The name the column-order warning has always been logged under (``prepare --nnc``'s output).
log = logging.getLogger("kerasmyelin.data.nnc")

AGE_NAMES = ("age_months", "age", "corrected_age", "corrected_age_months")
ID_NAMES = ("participant_id", "subject", "subject_id", "id")
# "t1w_a", "t1_a", "t1a", "t1wi_a", "x_t1w_a", "t1_level_a" ... -> ("1", "a")
_INPUT_PATTERN = re.compile(r"^(?:x_?)?t([12])(?:wi|w)?_?(?:level_?)?([a-e])$")


@dataclass(frozen=True)
class Column:
    """One header cell, parsed as NNC does: ``NAME[__INDEX][:LABEL]``."""

    position: int
    text: str
    variable: str
    index: int | None
    label: str | None

    @classmethod
    def parse(cls, position: int, text: str) -> Column:
        name, _, label = text.partition(":")
        variable, sep, index = name.partition("__")
        return cls(position, text, variable.strip(), int(index) if sep and index.strip().isdigit() else None,
                   label.strip() or None)

    def names(self) -> tuple[str, ...]:
        """Label first, then variable: the names a column may be recognised by."""
        return tuple(n for n in (self.label, self.variable) if n)


def _norm(name: str) -> str:
    return re.sub(r"[\s.\-]+", "_", name.strip().lower())


def input_for(name: str) -> str | None:
    """The input name a header name means ("T1w a" -> "t1w_a"), or None."""
    m = _INPUT_PATTERN.match(_norm(name))
    return input_name(CONTRASTS[int(m.group(1)) - 1], m.group(2)) if m else None


@dataclass
class NncIndex:
    """What ``index.csv`` holds, checked.

    Attributes:
        path: the CSV file.
        columns: input name -> the header cell it is read from.
        mapped_by: "name" or "order" (see module docstring).
        ignored: header cells not used.
        rows: per example: "line" (CSV line number), "participant_id", "age_months" (corrected
            age, months) and "images" (input name -> absolute image path).
    """

    path: Path
    columns: dict[str, str]
    mapped_by: str
    ignored: list[str]
    rows: list[dict] = field(default_factory=list)


def _find(columns: list[Column], names: tuple[str, ...], what: str, path: Path,
          variables: tuple[str, ...] = ()) -> Column | None:
    hits = [c for c in columns if any(_norm(n) in names for n in c.names())]
    if not hits:
        hits = [c for c in columns if c.variable in variables]
    if len(hits) > 1:
        raise InputError(f"more than one {what} column: {', '.join(c.text for c in hits)}", path)
    return hits[0] if hits else None


def _map_images(candidates: list[Column], path: Path) -> tuple[dict[str, Column], str, list[str]]:
    by_name: dict[str, Column] = {}
    unmatched = []
    for col in candidates:
        name = next((m for m in map(input_for, col.names()) if m), None)
        if name is None:
            unmatched.append(col)
        elif name in by_name:
            raise InputError(f"columns {by_name[name].text!r} and {col.text!r} both name input {name}", path)
        else:
            by_name[name] = col
    if by_name:
        missing = [n for n in INPUT_NAMES if n not in by_name]
        if missing:
            raise InputError(f"no image column for input(s) {', '.join(missing)} (columns found by name: "
                             f"{', '.join(f'{c.text}={n}' for n, c in by_name.items())}; unrecognised: "
                             f"{', '.join(c.text for c in unmatched) or 'none'})", path)
        return by_name, "name", [c.text for c in unmatched]
    if len(candidates) != len(INPUT_NAMES):
        raise InputError(f"cannot tell the ten image columns: none is named after an input (T1w_a ... T2w_e, "
                         f"t1_a, T1a, ...) and there are {len(candidates)} columns besides age and id, not ten "
                         f"({', '.join(c.text for c in candidates) or 'none'})", path)
    if len({c.variable for c in candidates}) == 1 and all(c.index is not None for c in candidates):
        candidates = sorted(candidates, key=lambda c: c.index)
    log.warning("%s: image columns taken in the paper's order (T1w a-e, then T2w a-e): %s", path,
                ", ".join(f"{c.text}={n}" for c, n in zip(candidates, INPUT_NAMES)))
    return dict(zip(INPUT_NAMES, candidates)), "order", []


def _image_path(text: str, base: Path) -> Path:
    if os.sep == "/" and "\\" in text:  # written on Windows: ".\images\0001.png"
        text = text.replace("\\", "/")
    p = Path(text)
    return p if p.is_absolute() else base / p


def read_nnc_index(path: str | os.PathLike) -> NncIndex:
    """Parse and check an NNC ``index.csv`` (header, ages, ids, duplicates); images are not read.

    Raises:
        InputError: naming the file (and line) for a missing column, a bad or missing age, an empty
            image cell, duplicate participants or rows, or an image used twice in one row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8", path) from None
    except csv.Error as exc:
        raise InputError(f"not a readable CSV ({exc})", path) from None
    if not lines or not any(h.strip() for h in lines[0]):
        raise InputError("file is empty", path)
    columns = [Column.parse(i, h) for i, h in enumerate(lines[0])]
    age = _find(columns, AGE_NAMES, "age", path, variables=("y",))
    ident = _find([c for c in columns if c is not age], ID_NAMES, "participant id", path)
    helpers = {}
    for name in (CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN):
        helpers[name] = _find([c for c in columns if c not in (age, ident)], (name,), name, path)
    if age is None and None in helpers.values():
        raise InputError(f"no age column: name it y (NNC's output variable) or age_months, holding the corrected "
                         f"age in months, or give {CHRONOLOGICAL_COLUMN} and {GESTATIONAL_COLUMN} "
                         f"(header: {', '.join(c.text for c in columns)})", path)
    used = {id(c) for c in (age, ident, *helpers.values()) if c is not None}
    images, mapped_by, ignored = _map_images([c for c in columns if id(c) not in used], path)

    table = NncIndex(path, {n: c.text for n, c in images.items()}, mapped_by, ignored)
    seen_ids: dict[str, int] = {}
    seen_rows: dict[tuple, int] = {}
    for lineno, fields in enumerate(lines[1:], start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(columns):
            raise InputError(f"line {lineno} has {len(fields)} fields, the header has {len(columns)}", path)
        cell = {c.position: fields[c.position].strip() for c in columns}
        where = f"line {lineno}"
        age_row = {"age_months": cell[age.position] if age else "",
                   **{k: cell[c.position] for k, c in helpers.items() if c is not None}}
        try:
            months = row_age_months(age_row, where)
        except InputError as exc:
            raise InputError(exc.problem, path) from None
        if months is None:
            raise InputError(f"{where}: no age given (corrected age in months expected)", path)
        pid = cell[ident.position] if ident else f"row-{len(table.rows) + 1:03d}"
        if not pid:
            raise InputError(f"{where}: empty {ident.text} cell", path)
        if pid in seen_ids:
            raise InputError(f"{where}: participant {pid!r} appears twice (also line {seen_ids[pid]})", path)
        seen_ids[pid] = lineno
        files = {}
        for name, col in images.items():
            if not cell[col.position]:
                raise InputError(f"{where}: empty image cell in column {col.text!r} ({name})", path)
            files[name] = _image_path(cell[col.position], path.absolute().parent)
        key = tuple(os.path.normpath(files[n]) for n in INPUT_NAMES)
        if key in seen_rows:
            raise InputError(f"{where} repeats the images of line {seen_rows[key]}", path)
        seen_rows[key] = lineno
        if len(set(key)) < len(key):
            twice = sorted({n for n in INPUT_NAMES if key.count(os.path.normpath(files[n])) > 1})
            raise InputError(f"{where}: the same image file is given for {', '.join(twice)}", path)
        table.rows.append({"line": lineno, "participant_id": pid, "age_months": months, "images": files})
    if not table.rows:
        raise InputError("no examples (the header only)", path)
    return table
