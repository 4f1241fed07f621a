"""Build a ten-slice cache from NIfTI files on disk (real or synthetic scans alike)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.cache import write_cache
from kerasmyelin.data.prepare import PrepConfig, prepare_subject, to_canonical
from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN
from kerasmyelin.io.output_dir import OutputFolder, check_output
from kerasmyelin.io.nifti import load_volume
from kerasmyelin.io.tables import missing_columns, parse_number, read_tsv, read_tsv_table
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.io.ages import AGE_RANGE_MONTHS, age_row, row_age_months

LEVEL_COLUMNS = tuple(f"slice_{k}" for k in LEVEL_KEYS)


NOT_AVAILABLE = "n/a"  # BIDS's missing value: a row of n/a slices leaves that scan out, on purpose


@dataclass
class LevelTable:
    """A levels table as read (or as the automatic level finder made it).

    Attributes:
        rows: (participant_id, session_id or "") -> level key -> slice index (0-based, axial, in
            the RAS-reoriented volume), or None for a row whose five slices are all ``n/a``: a
            scan left out on purpose.
        lines: the same keys -> line number in the file (header = line 1), for messages.
        source: the file (or a description of where the levels came from), for messages and
            the manifest.
        session_column: the table has a ``session_id`` column.
    """

    rows: dict[tuple[str, str], dict[str, int] | None]
    lines: dict[tuple[str, str], int]
    source: str
    session_column: bool = False

    def where(self, key: tuple[str, str]) -> str:
        """ "line 4 (sub-003)": where a scan's row is, for messages."""
        return f"line {self.lines[key]} ({' '.join(filter(None, key))})" if key in self.lines else " ".join(key)


def read_level_table(path: str | os.PathLike) -> LevelTable:
    """The levels table at ``path``: participant_id [, session_id], slice_a ... slice_e.

    ``session_id`` (ses-...) is an optional column, for BIDS data sets with sessions; without it
    the session is "" (images in sub-*/anat). A row whose five slices are all ``n/a`` leaves that
    scan out of the cache (on purpose: it is listed, not dropped silently).

    Raises:
        InputError: naming the file and line of a scan given twice, a slice index that is not a
            whole number or is negative, or a row with only some slices ``n/a``.
    """
    header, rows = read_tsv_table(path, ("participant_id",) + LEVEL_COLUMNS, unique=False)
    out, lines = {}, {}
    # read_tsv_table skips blank lines; count them back for the line numbers.
    numbers = _data_line_numbers(path)
    for n, row in zip(numbers, rows):
        key = (row["participant_id"], row.get("session_id", "").strip())
        label = " ".join(filter(None, key))
        if key in out:
            raise InputError(f"line {n}: {label} has slice levels twice (also line {lines[key]})", path)
        lines[key] = n
        cells = [row[c].strip().lower() for c in LEVEL_COLUMNS]
        if all(c == NOT_AVAILABLE for c in cells):
            out[key] = None
            continue
        levels = {}
        for k in LEVEL_KEYS:
            try:
                levels[k] = parse_number(row, f"slice_{k}", path, integer=True)
            except InputError as exc:
                raise InputError(f"line {n}: {exc.problem}" + ("; write n/a in all five slice columns to leave "
                                 "this scan out" if cells[LEVEL_KEYS.index(k)] == NOT_AVAILABLE else ""),
                                 path) from None
        bad = {k: v for k, v in levels.items() if v < 0}
        if bad:
            raise InputError(f"line {n}: {label}: negative slice index {bad}", path)
        out[key] = levels
    return LevelTable(out, lines, str(path), "session_id" in header)


def _data_line_numbers(path) -> list[int]:
    """Line numbers (header = 1) of the non-blank data lines of a TSV, as read_tsv_table keeps them."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter="\t")
        next(reader, None)
        return [n for n, fields in enumerate(reader, start=2) if any(f.strip() for f in fields)]


def read_levels(path: str | os.PathLike) -> dict[tuple[str, str], dict[str, int]]:
    """(participant_id, session_id) -> level key -> slice index, from a TSV with slice_a ... slice_e
    (:func:`read_level_table`; rows left out with ``n/a`` are not in it)."""
    return {k: v for k, v in read_level_table(path).rows.items() if v is not None}


def _age_months(row: dict[str, str], path: Path) -> float:
    """The corrected age in months of one participants.tsv row: a number in AGE_RANGE_MONTHS.

    ``age_months`` when filled in; otherwise computed from ``chronological_age_months`` and
    ``gestational_age_weeks`` (``io.ages``) when the row has both.
    """
    if row.get(CHRONOLOGICAL_COLUMN, "").strip() or row.get(GESTATIONAL_COLUMN, "").strip():
        try:
            return row_age_months(row, row["participant_id"])
        except InputError as exc:
            raise InputError(exc.problem, path) from None
    age = parse_number(row, "age_months", path)
    lo, hi = AGE_RANGE_MONTHS
    if not lo <= age <= hi:
        raise InputError(f"{row['participant_id']}: age_months {age:g} is outside {lo:g} to {hi:g} months "
                         "(corrected age in months expected; weeks or days?)", path)
    return age


def _session_age(root: Path, participant: dict[str, str], session: str, participants_path: Path) -> float:
    """A scan's corrected age: its row of sub-*_sessions.tsv when that gives one, else the
    participant's (the rule ``predict --bids`` follows, ``io.ages.age_row``)."""
    pid = participant["participant_id"]
    table = root / pid / f"{pid}_sessions.tsv"
    if not session or not table.is_file():
        return _age_months(participant, participants_path)
    rows = {r["session_id"]: r for r in read_tsv(table, ("session_id",))}
    row, from_session = age_row(participant, rows.get(session))
    if not from_session:
        return _age_months(participant, participants_path)
    try:
        age = row_age_months(row, f"{pid} {session}")
    except InputError as exc:
        raise InputError(exc.problem, table) from None
    if age is None:
        raise InputError(f"{session}: no age given", table)
    return age


def bids_anat_file(root: Path, participant_id: str, contrast: str, session: str = "") -> Path:
    """The subject's (or session's) NIfTI of one contrast (.nii.gz or .nii), or InputError naming
    what is missing."""
    label = f"{participant_id}_{session}" if session else participant_id
    anat = root / participant_id / session / "anat" if session else root / participant_id / "anat"
    for ext in (".nii.gz", ".nii"):
        path = anat / f"{label}_{contrast}{ext}"
        if path.exists():  # a folder by that name is the reader's to refuse, by name
            return path
    sessions = sorted(p.name for p in (root / participant_id).glob("ses-*") if p.is_dir())
    hint = (f"; {participant_id} has sessions ({', '.join(sessions)}): add a session_id column to the levels "
            "table" if sessions and not session else "")
    raise InputError(f"no {contrast} image for {label} (looked for {label}_{contrast}.nii[.gz]){hint}", anat)


def check_same_grid(volumes: dict, paths: dict) -> None:
    """The slice indices are shared by both contrasts, so their grids must agree."""
    (c1, (d1, a1)), (c2, (d2, a2)) = volumes.items()
    if d1.shape != d2.shape or not np.allclose(a1, a2, atol=1e-3):
        raise InputError(f"{c1} and {c2} are on different grids (shapes {d1.shape} and {d2.shape}; "
                         f"affines differ by up to {np.abs(a1 - a2).max():.3g} mm); "
                         f"{c2} file: {paths[c2]}", paths[c1])


def _prepare_scan(root: Path, key: tuple[str, str], levels: dict[str, int], config: PrepConfig,
                  where: tuple[str, str] = ("", "")):
    """One scan's ten images and its manifest entry (without its age): (images, subject).

    ``where``: (levels file, "line N (sub-...)") of the scan's row, named when a slice lies outside
    the volume.
    """
    pid, session = key
    files, volumes = {}, {}
    for contrast in CONTRASTS:
        path = bids_anat_file(root, pid, contrast, session)
        volumes[contrast] = load_volume(path)
        files[contrast] = {"path": str(path.relative_to(root)),
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    check_same_grid(volumes, {c: root / files[c]["path"] for c in CONTRASTS})
    n_axial = to_canonical(*volumes["T1w"])[0].shape[2]
    outside = {k: v for k, v in levels.items() if not 0 <= v < n_axial}
    if outside:
        raise InputError(f"{where[1] or ' '.join(filter(None, key))}: slice index {outside} is outside the volume, "
                         f"whose RAS-reoriented axial slices are 0 to {n_axial - 1} "
                         f"({files['T1w']['path']})", where[0] or None)
    slices = {c: levels for c in CONTRASTS}
    sources = {c: str(root / files[c]["path"]) for c in CONTRASTS}
    images = prepare_subject(volumes, slices, config, sources=sources)
    return images, {"participant_id": pid, **({"session_id": session} if session else {}), "files": files,
                    "slices": levels}


def _prepare_task(args):
    return _prepare_scan(*args)


def prepare_bids(bids: str | os.PathLike, levels: str | os.PathLike | LevelTable, out: str | os.PathLike, *,
                 overwrite: bool = False, progress: bool = True, config: PrepConfig = PrepConfig(),
                 jobs: int = 1, extra: Callable[[Path], None] | None = None, manifest_extra: dict | None = None,
                 notice: Callable[[str], None] | None = None) -> Path:
    """Prepare every participant of a BIDS folder from its slice levels; write a cache to ``out``.

    Every participant of participants.tsv needs a row (per session, with a session_id column);
    a row of ``n/a`` slices leaves its scan out, on purpose (``notice`` is told, the manifest lists
    it under ``left_out``).

    Args:
        levels: the levels TSV, or a :class:`LevelTable` already made (automatic levels).
        jobs: worker processes that load and prepare scans (forked; results kept in scan order).
        extra: called with the output's work folder before the cache is written, to add files
            (the automatic levels' tables and QC sheets) that appear with it, or not at all.
        manifest_extra: entries added to manifest.json.
        notice: called with the text of notices (scans left out).
    """
    from tqdm.auto import tqdm

    root = Path(bids)
    table = levels if isinstance(levels, LevelTable) else None
    inputs = [("--bids", root)] + ([] if table is not None else [("--levels", levels)])
    check_output(out, "cache", overwrite=overwrite, inputs=inputs, bids_roots=[root])  # before reading
    participants_path = root / "participants.tsv"
    participants = read_tsv(participants_path, ("participant_id",))
    columns = set(participants[0]) if participants else set()
    if participants and "age_months" not in columns and not {CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN} <= columns:
        raise InputError(f"{missing_columns(list(participants[0]), ['age_months'])}; give the corrected "
                         f"age in months, or {CHRONOLOGICAL_COLUMN} and {GESTATIONAL_COLUMN} to compute it",
                         participants_path)
    if table is None:
        table = read_level_table(levels)
    source = table.source
    by_id = {r["participant_id"]: r for r in participants}
    unknown = [key for key in table.rows if key[0] not in by_id]
    if unknown:
        raise InputError(f"{table.where(unknown[0])}: {unknown[0][0]} is not in {participants_path}"
                         + (f" (nor are {len(unknown) - 1} more)" if len(unknown) > 1 else ""), source)
    with_rows = {pid for pid, _ in table.rows}
    missing = [(n, r["participant_id"]) for n, r in zip(_data_line_numbers(participants_path), participants)
               if r["participant_id"] not in with_rows]
    if missing:
        n, pid = missing[0]
        raise InputError(f"no row for {pid} ({participants_path} line {n})"
                         + (f" nor for {len(missing) - 1} more participant(s)" if len(missing) > 1 else "")
                         + "; give its slice levels, or write n/a in its five slice columns to leave it out", source)
    left_out = sorted(key for key, v in table.rows.items() if v is None)
    if left_out and notice is not None:
        notice(f"left out {len(left_out)} scan(s) whose slices are n/a in {source}: "
               + ", ".join(" ".join(filter(None, k)) for k in left_out[:10]) + (" ..." if len(left_out) > 10 else ""))
    keys = sorted(key for key, v in table.rows.items() if v is not None)
    if not keys:
        raise InputError(f"no participant of {participants_path} has slice levels (every row is n/a)", source)
    ages_of = {key: _session_age(root, by_id[key[0]], key[1], participants_path) for key in keys}  # all checked first
    tasks = [(root, key, table.rows[key], config, (source, table.where(key))) for key in keys]
    with OutputFolder(out, "cache", overwrite=overwrite, inputs=inputs, bids_roots=[root],
                      what="kerasmyelin prepare") as folder, contextlib.ExitStack() as stack:
        tmp = folder.work
        if jobs > 1:
            pool = cf.ProcessPoolExecutor(min(jobs, len(keys)), mp_context=multiprocessing.get_context("fork"))
            # On a failure, report it without preparing the scans still queued.
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            prepared = pool.map(_prepare_task, tasks)  # in scan order
        else:
            prepared = map(_prepare_task, tasks)
        images, ids, ages, subjects = {}, [], [], []
        for key, (scan, subject) in zip(keys, tqdm(prepared, total=len(keys), desc="prepare", unit="scan",
                                                   disable=not progress)):
            for name, img in scan.items():
                images.setdefault(name, []).append(img)
            # One row per scan; an infant's sessions share its id, so folds keep them together.
            ids.append(key[0])
            ages.append(ages_of[key])
            subjects.append({**subject, "age_months": ages_of[key]})
        manifest = {"created_by": f"kerasmyelin {__version__} prepare", "prep_config": config.as_dict(),
                    "level_source": source, "subjects": subjects,
                    "left_out": [{"participant_id": k[0], **({"session_id": k[1]} if k[1] else {})}
                                 for k in left_out], **(manifest_extra or {})}
        if extra is not None:
            extra(tmp)
        write_cache(tmp, {k: np.stack(v) for k, v in images.items()}, ids, ages, manifest)
    return Path(out).expanduser().absolute()
