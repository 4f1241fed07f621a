"""Many infants at once: the T1w/T2w pairs of a BIDS folder or a CSV list.

A BIDS raw folder gives one job per subject (or per session: ``sub-01/ses-02/anat/
sub-01_ses-02_T1w.nii.gz``), its corrected age from ``participants.tsv`` (column
``age_months``; per session from ``sub-01/sub-01_sessions.tsv`` when that has it). A CSV list
has columns ``subject, t1w, t2w`` and optionally ``age_months``; relative paths are taken from
the CSV's folder. Where a row has no corrected age but ``chronological_age_months`` and
``gestational_age_weeks``, the corrected age is computed from them (``io.ages``; in a
sessions.tsv the gestational age may come from participants.tsv). Problems of one row (a
missing file, an unreadable age, a CSV row with more or fewer cells than the header) become that
job's error, reported and skipped by the batch; only an unusable list as a whole stops it.
Inputs that would otherwise be dropped without a word (no participants.tsv, an age column under
another name such as ``age`` or ``Age_Months``, a subject without a row in participants.tsv)
are reported through the readers' ``log`` callable; the infants concerned run without an age.
Accepted columns and units: docs/inputs.md.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import (
    CHRONOLOGICAL_COLUMN,
    CORRECTED_COLUMN,
    GESTATIONAL_COLUMN,
    age_row,
    row_age_months,
)
from kerasmyelin.io.tables import misnamed_columns, missing_columns, read_tsv_table

# A label names the infant's output folder: no path separators, no leading dot.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CSV_COLUMNS = ("subject", "t1w", "t2w")
NO_AGE = "estimated without gap or delay grade"
_MEANING = {CORRECTED_COLUMN: "the corrected age in months", CHRONOLOGICAL_COLUMN: "the age at scan in months",
            GESTATIONAL_COLUMN: "the gestational age at birth in weeks"}


def warn_on_stderr(text: str) -> None:
    """The readers' default ``log``: one notice per line on stderr, as ``warning: ...``."""
    print(f"warning: {text}", file=sys.stderr)


@dataclass
class Job:
    """One infant to estimate.

    Attributes:
        subject: the label used in outputs ("sub-01" or "sub-01_ses-02").
        t1w, t2w: NIfTI paths (None when missing: see ``error``).
        age_months: corrected age or None.
        error: why this job cannot run, or None.
    """

    subject: str
    t1w: Path | None
    t2w: Path | None
    age_months: float | None = None
    error: str | None = None


def _anat(folder: Path, stem: str, contrast: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{stem}_{contrast}{ext}"
        if p.is_file():
            return p
    return None


def _read_table(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, dict[str, str] | None, int]]]:
    """The header and the rows of a CSV: (line, cells, number of cells) per row.

    ``cells`` is the row as a dict of stripped text, or None when the row has more or fewer
    cells than the header (an unquoted delimiter inside a value shifts every column after it;
    a missing cell leaves the reader to guess which). ``line`` is where the row starts. Rows
    of empty cells are skipped.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a leading BOM (Excel) is not text
        reader = csv.reader(fh, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        rows, end = [], reader.line_num
        for fields in reader:
            line, end = end + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            cells = dict(zip(header, (f.strip() for f in fields))) if len(fields) == len(header) else None
            rows.append((line, cells, len(fields)))
    return header, rows


def _ragged(line: int, cells: int, columns: int) -> str:
    hint = "quote values that contain ','" if cells > columns else "leave an unknown value empty: ',,'"
    return f"line {line} has {cells} fields, the header has {columns} ({hint})"


def _column_notices(path: Path, header: list[str], log: Callable[[str], None]) -> None:
    """A notice for each age column under another name (``age``, ``Age_Months``): it is not read."""
    for found, meant in misnamed_columns(header):
        years = " BIDS gives 'age' in years: convert it to months first." if found.lower() == "age" else ""
        log(f"{path}: column {found!r} is not read, so its values are ignored; if it holds {_MEANING[meant]}, "
            f"rename it to {meant}.{years}")


def _has_age_columns(header) -> bool:
    return CORRECTED_COLUMN in header or {CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN} <= set(header)


def _ageless(n: int, total: int) -> str:
    """"2 of 3 infants have no age and are estimated without ..." (or "has ... is" for one)."""
    have, are = ("have", "are") if n > 1 else ("has", "is")
    return f"{n} of {total} infants {have} no age and {are} {NO_AGE}"


def _names(labels: list[str], most: int = 10) -> str:
    return ", ".join(labels[:most]) + (f" and {len(labels) - most} more" if len(labels) > most else "")


def jobs_from_bids(root: str | os.PathLike, *, log: Callable[[str], None] = warn_on_stderr) -> list[Job]:
    """One job per subject (or session) with anatomical images in a BIDS raw folder.

    Args:
        root: the BIDS raw folder (``participants.tsv``, ``sub-*``).
        log: called with the text of each notice about inputs that are not used: no
            participants.tsv, no age column in it or one under another name, subjects it has no
            row for. The infants concerned get no age (``Job.age_months`` None) and still run.

    Raises:
        InputError: for a missing folder, no ``sub-*`` folders, or an unreadable
            participants.tsv or sessions.tsv (``io.tables.read_tsv``).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("BIDS folder not found", root)
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise InputError("no sub-* folders: not a BIDS raw data set", root)
    rows: dict[str, dict[str, str]] | None = None  # None: no participants.tsv
    participants = root / "participants.tsv"
    ages_in_participants = False
    if participants.is_file():
        # read_tsv_table refuses duplicate ids and ragged rows: a participants.tsv is made as a whole
        header, table_rows = read_tsv_table(participants, ("participant_id",))
        _column_notices(participants, header, log)
        ages_in_participants = _has_age_columns(header)
        rows = {row["participant_id"]: row for row in table_rows if row.get("participant_id")}
    jobs, unlisted = [], []
    for sub in subjects:
        sessions = sorted(p for p in sub.glob("ses-*") if p.is_dir())
        session_rows = {}
        table = sub / f"{sub.name}_sessions.tsv"
        if sessions and table.is_file():
            header, table_rows = read_tsv_table(table, ("session_id",))
            _column_notices(table, header, log)
            session_rows = {r["session_id"]: r for r in table_rows}
        for folder, label in ([(s, f"{sub.name}_{s.name}") for s in sessions] or [(sub, sub.name)]):
            anat = folder / "anat"
            job = Job(label, _anat(anat, label, "T1w"), _anat(anat, label, "T2w"))
            missing = [c for c, p in (("T1w", job.t1w), ("T2w", job.t2w)) if p is None]
            if missing:
                job.error = f"{anat}: no {' or '.join(f'{label}_{c}.nii[.gz]' for c in missing)}"
            row, from_session = age_row((rows or {}).get(sub.name, {}),
                                         session_rows.get(folder.name) if folder is not sub else None)
            where = f"{table} {folder.name}" if from_session else f"{participants} {sub.name}"
            try:
                job.age_months = row_age_months(row, where)
            except InputError as exc:
                job.error = job.error or str(exc)
            if rows is not None and sub.name not in rows and job.age_months is None and job.error is None:
                unlisted.append(sub.name)
            jobs.append(job)
    ageless = sum(j.age_months is None and j.error is None for j in jobs)
    if rows is None and ageless:
        log(f"{root}: no participants.tsv, so {_ageless(ageless, len(jobs))} "
            f"(participants.tsv with participant_id and {CORRECTED_COLUMN} gives the ages; docs/inputs.md)")
    elif rows is not None and not ages_in_participants and ageless:
        log(f"{participants}: no {CORRECTED_COLUMN} column (nor {CHRONOLOGICAL_COLUMN} with "
            f"{GESTATIONAL_COLUMN}), so {_ageless(ageless, len(jobs))}")
    elif unlisted:
        unlisted = sorted(set(unlisted))
        log(f"{participants}: no row for {_names(unlisted)} ({len(unlisted)} of {len(subjects)} subjects), "
            f"so their age is unknown and they are {NO_AGE}")
    return jobs


def jobs_from_csv(path: str | os.PathLike, *, log: Callable[[str], None] = warn_on_stderr) -> list[Job]:
    """One job per row of a CSV with columns subject, t1w, t2w[, age_months | chronological_age_months,
    gestational_age_weeks].

    Args:
        path: the CSV list; relative image paths are taken from its folder.
        log: called with the text of each notice: an age column under another name (``age``,
            ``Age_Months``), whose values are not read.

    Raises:
        InputError: for a file that is missing, not UTF-8 CSV, without rows, without a required
            column, or whose rows all have another number of cells than the header. A single
            row with too many or too few cells becomes that row's ``Job.error``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        header, rows = _read_table(path, ",")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a readable CSV ({exc})", path) from None
    if not rows:
        raise InputError("no rows", path)
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InputError(missing_columns(header, missing), path)
    if all(cells is None for _, cells, _ in rows):  # the header, not the rows, is what is wrong
        line, _, n = rows[0]
        raise InputError(f"{_ragged(line, n, len(header))}, and no row has {len(header)}: check the header", path)
    _column_notices(path, header, log)
    jobs, seen = [], set()
    for line, row, n in rows:
        if row is None:
            jobs.append(Job(f"line-{line}", None, None, error=f"{path}: {_ragged(line, n, len(header))}"))
            continue
        label = row["subject"]
        job = Job(label, None, None)
        if not label:
            job.subject, job.error = f"line-{line}", f"{path}: line {line} has no subject label"
        elif not LABEL.match(label):
            job.subject = f"line-{line}"
            job.error = (f"{path}: line {line}: subject label {label!r} may hold only letters, digits, '.', '_' "
                         "and '-' (it names the output folder)")
        elif label in seen:
            job.error = f"{path}: line {line}: subject {label!r} appears twice"
        seen.add(label)
        for contrast in ("t1w", "t2w"):
            p = Path(row[contrast])
            try:
                p = p.expanduser()
            except RuntimeError:  # "~someone" with no such user: keep the text as it is
                pass
            p = p if p.is_absolute() else path.parent / p
            try:
                found = bool(row[contrast]) and p.is_file()
            except OSError as exc:  # a name too long for the file system, a loop of links ...
                found, reason = False, exc.strerror or str(exc)
            else:
                reason = "file not found"
            if found:
                setattr(job, contrast, p)
            elif job.error is None:
                job.error = f"{p}: {reason} (line {line}, column {contrast})"
        try:
            job.age_months = row_age_months(row, f"{path} line {line}")
        except InputError as exc:
            job.error = job.error or str(exc)
        jobs.append(job)
    return jobs
