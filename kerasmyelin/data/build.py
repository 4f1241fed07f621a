"""Build a ten-slice cache from NIfTI files on disk (real or synthetic scans alike)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.cache import write_cache
from kerasmyelin.data.prepare import PrepConfig, prepare_subject
from kerasmyelin.errors import InputError
from kerasmyelin.io.ages import CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN
from kerasmyelin.io.atomic import staged_dir
from kerasmyelin.io.nifti import load_volume
from kerasmyelin.io.tables import parse_number, read_tsv
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.wholebrain.manifest import AGE_RANGE_MONTHS, row_age_months

LEVEL_COLUMNS = tuple(f"slice_{k}" for k in LEVEL_KEYS)


def read_levels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """participant_id -> level key -> slice index, from a TSV with slice_a ... slice_e."""
    rows = read_tsv(path, ("participant_id",) + LEVEL_COLUMNS)
    out = {}
    for row in rows:
        levels = {k: parse_number(row, f"slice_{k}", path, integer=True) for k in LEVEL_KEYS}
        bad = {k: v for k, v in levels.items() if v < 0}
        if bad:
            raise InputError(f"{row['participant_id']}: negative slice index {bad}", path)
        out[row["participant_id"]] = levels
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


def bids_anat_file(root: Path, participant_id: str, contrast: str) -> Path:
    """The subject's NIfTI of one contrast (.nii.gz or .nii), or InputError naming what is missing."""
    anat = root / participant_id / "anat"
    for ext in (".nii.gz", ".nii"):
        path = anat / f"{participant_id}_{contrast}{ext}"
        if path.exists():
            return path
    raise InputError(f"no {contrast} image for {participant_id} (looked for {participant_id}_{contrast}.nii[.gz])",
                     anat)


def _check_same_grid(volumes: dict, paths: dict) -> None:
    """The slice indices are shared by both contrasts, so their grids must agree."""
    (c1, (d1, a1)), (c2, (d2, a2)) = volumes.items()
    if d1.shape != d2.shape or not np.allclose(a1, a2, atol=1e-3):
        raise InputError(f"{c1} and {c2} are on different grids (shapes {d1.shape} and {d2.shape}; "
                         f"affines differ by up to {np.abs(a1 - a2).max():.3g} mm); "
                         f"{c2} file: {paths[c2]}", paths[c1])


def prepare_bids(bids: str | os.PathLike, levels: str | os.PathLike, out: str | os.PathLike, *,
                 overwrite: bool = False, progress: bool = True, config: PrepConfig = PrepConfig()) -> Path:
    """Prepare every participant of a BIDS folder that has slice levels; write a cache to ``out``."""
    from tqdm.auto import tqdm

    root = Path(bids)
    participants_path = root / "participants.tsv"
    participants = read_tsv(participants_path, ("participant_id",))
    columns = set(participants[0]) if participants else set()
    if participants and "age_months" not in columns and not {CHRONOLOGICAL_COLUMN, GESTATIONAL_COLUMN} <= columns:
        raise InputError(f"missing column(s) age_months (found: {', '.join(participants[0])}); give the corrected "
                         f"age in months, or {CHRONOLOGICAL_COLUMN} and {GESTATIONAL_COLUMN} to compute it",
                         participants_path)
    level_table = read_levels(levels)
    unknown = sorted(set(level_table) - {r["participant_id"] for r in participants})
    if unknown:
        raise InputError(f"levels given for participants not in {participants_path}: {unknown[:5]}", levels)
    rows = [r for r in participants if r["participant_id"] in level_table]
    if not rows:
        raise InputError(f"no participant of {participants_path} has slice levels", levels)
    ages_of = {r["participant_id"]: _age_months(r, participants_path) for r in rows}  # all checked first
    with staged_dir(out, overwrite) as tmp:
        images, ids, ages, subjects = {}, [], [], []
        for row in tqdm(rows, desc="prepare", unit="infant", disable=not progress):
            pid = row["participant_id"]
            age = ages_of[pid]
            files, volumes = {}, {}
            for contrast in CONTRASTS:
                path = bids_anat_file(root, pid, contrast)
                volumes[contrast] = load_volume(path)
                files[contrast] = {"path": str(path.relative_to(root)),
                                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            _check_same_grid(volumes, {c: root / files[c]["path"] for c in CONTRASTS})
            slices = {c: level_table[pid] for c in CONTRASTS}
            sources = {c: str(root / files[c]["path"]) for c in CONTRASTS}
            prepared = prepare_subject(volumes, slices, config, sources=sources)
            for name, img in prepared.items():
                images.setdefault(name, []).append(img)
            ids.append(pid)
            ages.append(age)
            subjects.append({"participant_id": pid, "age_months": age, "files": files, "slices": level_table[pid]})
        manifest = {"created_by": f"kerasmyelin {__version__} prepare", "prep_config": config.as_dict(),
                    "level_source": str(levels), "subjects": subjects}
        write_cache(tmp, {k: np.stack(v) for k, v in images.items()}, ids, ages, manifest)
    return Path(out).expanduser().absolute()
