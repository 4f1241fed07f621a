"""Build a ten-slice cache from NIfTI files on disk (real or synthetic scans alike)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import multiprocessing
import os
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.cache import write_cache
from kerasmyelin.data.prepare import PrepConfig, prepare_subject
from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN
from kerasmyelin.io.output_dir import OutputFolder, check_output
from kerasmyelin.io.nifti import load_volume
from kerasmyelin.io.tables import missing_columns, parse_number, read_tsv
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.io.ages import AGE_RANGE_MONTHS, age_row, row_age_months

LEVEL_COLUMNS = tuple(f"slice_{k}" for k in LEVEL_KEYS)


def read_levels(path: str | os.PathLike) -> dict[tuple[str, str], dict[str, int]]:
    """(participant_id, session_id) -> level key -> slice index, from a TSV with slice_a ... slice_e.

    ``session_id`` (ses-...) is an optional column, for BIDS data sets with sessions; without it
    the session is "" (images in sub-*/anat).
    """
    rows = read_tsv(path, ("participant_id",) + LEVEL_COLUMNS, unique=False)
    out = {}
    for n, row in enumerate(rows, 2):
        key = (row["participant_id"], row.get("session_id", "").strip())
        if key in out:
            raise InputError(f"line {n}: {' '.join(filter(None, key))} has slice levels twice", path)
        levels = {k: parse_number(row, f"slice_{k}", path, integer=True) for k in LEVEL_KEYS}
        bad = {k: v for k, v in levels.items() if v < 0}
        if bad:
            raise InputError(f"{row['participant_id']}: negative slice index {bad}", path)
        out[key] = levels
    return out


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


def _check_same_grid(volumes: dict, paths: dict) -> None:
    """The slice indices are shared by both contrasts, so their grids must agree."""
    (c1, (d1, a1)), (c2, (d2, a2)) = volumes.items()
    if d1.shape != d2.shape or not np.allclose(a1, a2, atol=1e-3):
        raise InputError(f"{c1} and {c2} are on different grids (shapes {d1.shape} and {d2.shape}; "
                         f"affines differ by up to {np.abs(a1 - a2).max():.3g} mm); "
                         f"{c2} file: {paths[c2]}", paths[c1])


def _prepare_scan(root: Path, key: tuple[str, str], levels: dict[str, int], config: PrepConfig):
    """One scan's ten images and its manifest entry (without its age): (images, subject)."""
    pid, session = key
    files, volumes = {}, {}
    for contrast in CONTRASTS:
        path = bids_anat_file(root, pid, contrast, session)
        volumes[contrast] = load_volume(path)
        files[contrast] = {"path": str(path.relative_to(root)),
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    _check_same_grid(volumes, {c: root / files[c]["path"] for c in CONTRASTS})
    slices = {c: levels for c in CONTRASTS}
    sources = {c: str(root / files[c]["path"]) for c in CONTRASTS}
    images = prepare_subject(volumes, slices, config, sources=sources)
    return images, {"participant_id": pid, **({"session_id": session} if session else {}), "files": files,
                    "slices": levels}


def _prepare_task(args):
    return _prepare_scan(*args)


def prepare_bids(bids: str | os.PathLike, levels: str | os.PathLike, out: str | os.PathLike, *,
                 overwrite: bool = False, progress: bool = True, config: PrepConfig = PrepConfig(),
                 jobs: int = 1) -> Path:
    """Prepare every participant of a BIDS folder that has slice levels; write a cache to ``out``.

    Args:
        jobs: worker processes that load and prepare scans (forked; results kept in scan order).
    """
    from tqdm.auto import tqdm

    root = Path(bids)
    inputs = [("--bids", root), ("--levels", levels)]
    check_output(out, "cache", overwrite=overwrite, inputs=inputs, bids_roots=[root])  # before reading
    participants_path = root / "participants.tsv"
    participants = read_tsv(participants_path, ("participant_id",))
    columns = set(participants[0]) if participants else set()
    if participants and "age_months" not in columns and not {CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN} <= columns:
        raise InputError(f"{missing_columns(list(participants[0]), ['age_months'])}; give the corrected "
                         f"age in months, or {CHRONOLOGICAL_COLUMN} and {GESTATIONAL_COLUMN} to compute it",
                         participants_path)
    level_table = read_levels(levels)
    by_id = {r["participant_id"]: r for r in participants}
    unknown = sorted({pid for pid, _ in level_table} - set(by_id))
    if unknown:
        raise InputError(f"levels given for participants not in {participants_path}: {unknown[:5]}", levels)
    if not level_table:
        raise InputError(f"no participant of {participants_path} has slice levels", levels)
    keys = sorted(level_table)
    ages_of = {key: _session_age(root, by_id[key[0]], key[1], participants_path) for key in keys}  # all checked first
    tasks = [(root, key, level_table[key], config) for key in keys]
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
                    "level_source": str(levels), "subjects": subjects}
        write_cache(tmp, {k: np.stack(v) for k, v in images.items()}, ids, ages, manifest)
    return Path(out).expanduser().absolute()
