"""The five levels of every infant of a BIDS training cohort, found automatically, with the
reasons to doubt a fit.

``kerasmyelin prepare --bids DIR`` without ``--levels`` runs :func:`.level_finder.find_levels`
(the same registration ``predict`` uses) on each scan, on the volume as the cache reads it:
reoriented to RAS, no resampling and no slabs, so the slice indices are those of a levels table
(:func:`kerasmyelin.data.build.read_level_table`). Both contrasts are fitted, each on its own; the
one whose outline overlaps the reference better sets the levels of both (``predict`` has only the
T1w's fit; here the second fit is cheap and checks the first).

A scan is *doubtful* (:data:`REASONS`) when its fit cannot be trusted without a look: a low outline
overlap, an outline that fits better turned front to back (a header reversing front and back),
T1w and T2w fits that put a level in different places, a level's slice holding almost no head,
an image that looks like noise, or a fit that failed. The thresholds are below.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin.data.build import LEVEL_COLUMNS, NOT_AVAILABLE, LevelTable, bids_anat_file, check_same_grid
from kerasmyelin.data.prepare import PrepConfig, head_mask, outline_step, prepare_volume, to_canonical
from kerasmyelin.errors import InputError
from kerasmyelin.io.nifti import load_volume
from kerasmyelin.io.tables import read_tsv
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.wholebrain.level_finder import FinderConfig, find_levels, looks_skull_stripped, subject_outline

# Below this outline overlap (the better contrast's) a fit is doubtful: the value ``predict`` warns at (synthetic
# infants: median 0.957, lowest 0.917, level_finder.FinderConfig).
MIN_DICE = 0.85
# T1w and T2w fits disagree when a level differs by more than this many slices and this many mm
# (both, so that 1 mm slices of a 3-D scan are not held to 2 mm).
DISAGREE_SLICES = 2
DISAGREE_MM = 6.0
# A level's slice with less head than this share of the widest slice's (as ``predict`` warns).
MIN_LEVEL_AREA = 0.10
# Neighbouring voxels inside the head less correlated than this: noise (as ``predict`` refuses).
MIN_NEIGHBOUR_R = 0.3
# A fit whose outline overlaps better turned front to back by more than this is doubtful. Stricter
# than predict's warning (level_finder.REVERSAL_MARGIN, 0.03): a training scan costs a look, not a
# refusal, and a synthetic infant stored front to back reversed gained only 0.022 (0.926 -> 0.948)
# with its levels two slices off. The turn is tried only below FinderConfig.reversal_check_below.
REVERSED_MARGIN = 0.01
THUMB_SIZE = 96  # side of the QC thumbnails, pixels

REASONS = {
    "low_overlap": f"neither contrast's outline overlaps the aligned reference by {MIN_DICE:g} (Dice) or more",
    "reversed_header": f"the outline fits better (by more than {REVERSED_MARGIN:g} Dice) turned front to back: "
                       "the header may reverse front and back",
    "t1w_t2w_disagree": f"T1w and T2w fits differ by more than {DISAGREE_SLICES} slices and {DISAGREE_MM:g} mm "
                        "at some level",
    "level_outside_head": f"a level's slice holds less than {MIN_LEVEL_AREA:.0%} of the widest slice's head",
    "noise": f"neighbouring voxels inside the head correlate below {MIN_NEIGHBOUR_R:g}: noise, not a head",
    "finder_failed": "the level finder found no levels (no head, or a level outside the field of view)",
}


@dataclass
class ScanLevels:
    """What the finder found in one scan.

    Attributes:
        key: (participant_id, session_id or "").
        levels: level key -> 0-based axial slice of the RAS volume, used for both contrasts: the
            fit of the contrast whose outline overlaps better (``levels_from``), or None.
        t1w_levels, t2w_levels: the same from each contrast's own fit, or None.
        dice: the T1w outline overlap (None when the fit failed); t2w_dice likewise.
        levels_from: "T1w" or "T2w", whose fit gave ``levels``.
        reasons: (reason code of :data:`REASONS`, detail) for each doubt; empty when none.
        thumbs: contrast -> level key -> (THUMB_SIZE, THUMB_SIZE) prepared image, for QC.
    """

    key: tuple[str, str]
    levels: dict[str, int] | None
    t1w_levels: dict[str, int] | None = None
    t2w_levels: dict[str, int] | None = None
    dice: float | None = None
    t2w_dice: float | None = None
    levels_from: str | None = None
    reasons: list[tuple[str, str]] = field(default_factory=list)
    thumbs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " ".join(filter(None, self.key))

    @property
    def doubtful(self) -> bool:
        return bool(self.reasons)


def bids_scans(root: str | Path) -> list[tuple[str, str]]:
    """(participant_id, session_id) of every scan: participants.tsv's rows, one per ses-* folder."""
    root = Path(root)
    keys = []
    for row in read_tsv(root / "participants.tsv", ("participant_id",)):
        pid = row["participant_id"]
        sessions = sorted(p.name for p in (root / pid).glob("ses-*") if (p / "anat").is_dir())
        keys += [(pid, s) for s in sessions] or [(pid, "")]
    return keys


def _fit(volume, affine, source, config: FinderConfig):
    """(levels, fit, outline) of one RAS volume; InputError when the finder finds none."""
    skull_stripped = looks_skull_stripped(volume)
    outline = subject_outline(volume, affine, skull_stripped, config, source)
    fit = find_levels(volume, affine, skull_stripped=skull_stripped, config=config, source=source, outline=outline)
    return fit.slices(affine, volume.shape[2], source), fit, outline


def find_scan_levels(root: Path, key: tuple[str, str], config: FinderConfig = FinderConfig(),
                     prep: PrepConfig = PrepConfig()) -> ScanLevels:
    """Find and check one scan's levels (see the module docstring). Unreadable files raise."""
    from kerasmyelin.wholebrain.plausibility import neighbour_correlation

    loaded, paths = {}, {}
    for contrast in CONTRASTS:
        paths[contrast] = bids_anat_file(root, key[0], contrast, key[1])
        loaded[contrast] = load_volume(paths[contrast])
    check_same_grid(loaded, paths)  # the levels are shared by both contrasts, as prepare_bids requires
    volumes = {c: (*to_canonical(*loaded[c]), str(paths[c])) for c in CONTRASTS}
    out = ScanLevels(key, None)
    fits = {}
    for contrast, (data, affine, source) in volumes.items():
        try:
            levels, fit, outline = _fit(data, affine, source, config)
        except InputError as exc:
            out.reasons.append(("finder_failed", f"{contrast}: {exc.problem}"))
            continue
        fits[contrast] = fit
        r = neighbour_correlation(data, outline)
        if not r >= MIN_NEIGHBOUR_R:
            out.reasons.append(("noise", f"{contrast}: neighbour correlation {r:.2f}"))
        if contrast == "T1w":
            out.t1w_levels, out.dice = levels, float(fit.dice)
        else:
            out.t2w_levels, out.t2w_dice = levels, float(fit.dice)
    if fits:
        # The better-fitting contrast sets the levels: the outline of a T1w whose brain is as dark
        # as its CSF (or of a newborn's T2w) can fit poorly while the other contrast's fits well.
        best = max(fits, key=lambda c: fits[c].dice)
        out.levels_from, out.levels = best, out.t1w_levels if best == "T1w" else out.t2w_levels
        turned = {c: f for c, f in fits.items() if f.reversed_dice is not None
                  and f.reversed_dice > f.dice + REVERSED_MARGIN}
        if turned:
            out.reasons.append(("reversed_header", "; ".join(f"{c}: Dice {f.reversed_dice:.2f} turned against "
                                                             f"{f.dice:.2f}" for c, f in turned.items())))
        elif fits[best].dice < MIN_DICE:
            out.reasons.append(("low_overlap", ", ".join(f"{c} Dice {f.dice:.2f}" for c, f in fits.items())))
    if out.t1w_levels is not None and out.t2w_levels is not None:
        slice_mm = abs(float(volumes["T1w"][1][2, 2])) or 1.0
        diff = {k: out.t2w_levels[k] - out.t1w_levels[k] for k in LEVEL_KEYS}
        far = {k: d for k, d in diff.items() if abs(d) > DISAGREE_SLICES and abs(d) * slice_mm > DISAGREE_MM}
        if far:
            out.reasons.append(("t1w_t2w_disagree", "T2w - T1w slices " + ", ".join(f"{k}: {d:+d}"
                                                                                 for k, d in far.items())))
    if out.levels is not None:
        data = volumes["T1w"][0]
        area = head_mask(data, prep.head_threshold, outline_step(data.shape)).sum(axis=(0, 1)).astype(float)
        area /= max(area.max(), 1.0)
        low = {k: round(float(area[v]), 2) for k, v in out.levels.items() if area[v] < MIN_LEVEL_AREA}
        if low:
            out.reasons.append(("level_outside_head", "head area " + ", ".join(f"{k}: {v:.0%}" for k, v in low.items())))
        small = PrepConfig(**{**prep.as_dict(), "image_size": THUMB_SIZE})
        for contrast, (data, affine, source) in volumes.items():
            out.thumbs[contrast] = prepare_volume(data, affine, out.levels, small, source)
    return out


def _task(args) -> ScanLevels:
    return find_scan_levels(*args)


def find_cohort_levels(root: str | Path, keys: list[tuple[str, str]], *, jobs: int = 1, progress: bool = True,
                       config: FinderConfig = FinderConfig(), prep: PrepConfig = PrepConfig()) -> list[ScanLevels]:
    """:func:`find_scan_levels` for each scan, in order, on ``jobs`` forked processes."""
    from tqdm.auto import tqdm

    root = Path(root)
    tasks = [(root, key, config, prep) for key in keys]
    if jobs > 1 and len(keys) > 1:
        from kerasmyelin.wholebrain.level_finder import REFERENCES, reference_mask

        for kind in REFERENCES:  # built once here; the forked workers share them
            reference_mask(kind)
        with cf.ProcessPoolExecutor(min(jobs, len(keys)), mp_context=multiprocessing.get_context("fork")) as pool:
            return list(tqdm(pool.map(_task, tasks), total=len(tasks), desc="find levels", unit="scan",
                             disable=not progress))
    return [_task(t) for t in tqdm(tasks, desc="find levels", unit="scan", disable=not progress)]


def level_table(found: list[ScanLevels], keep_doubtful: bool, source: str) -> LevelTable:
    """The levels the cache is prepared from: doubtful scans' rows n/a (left out) unless kept."""
    rows = {s.key: (s.levels if (keep_doubtful or not s.doubtful) else None) for s in found}
    return LevelTable(rows, {s.key: n for n, s in enumerate(found, 2)}, source,
                      any(s.key[1] for s in found))


def levels_tsv(table: LevelTable) -> str:
    """The text of levels.tsv, in the format ``--levels`` reads (n/a for scans left out)."""
    sessions = table.session_column
    lines = ["\t".join(["participant_id"] + (["session_id"] if sessions else []) + list(LEVEL_COLUMNS))]
    for key, levels in table.rows.items():
        cells = [str(levels[k]) for k in LEVEL_KEYS] if levels else [NOT_AVAILABLE] * len(LEVEL_KEYS)
        lines.append("\t".join([key[0]] + ([key[1]] if sessions else []) + cells))
    return "\n".join(lines) + "\n"


def doubtful_tsv(found: list[ScanLevels], kept: bool) -> str:
    """The text of doubtful.tsv: each doubtful scan, what was found, why it is doubted."""
    head = ["participant_id", "session_id", "in_cache", "reasons", "details", "t1w_dice", "t2w_dice", "levels_from"]
    head += list(LEVEL_COLUMNS) + [f"{c}_{col}" for c in ("t1w", "t2w") for col in LEVEL_COLUMNS]
    lines = ["\t".join(head)]
    for s in found:
        if not s.doubtful:
            continue
        kept_here = kept and s.levels is not None

        def cells(levels):
            return [str(levels[k]) if levels else NOT_AVAILABLE for k in LEVEL_KEYS]

        lines.append("\t".join([s.key[0], s.key[1] or NOT_AVAILABLE, "yes" if kept_here else "no",
                                ",".join(r for r, _ in s.reasons), "; ".join(d for _, d in s.reasons),
                                NOT_AVAILABLE if s.dice is None else f"{s.dice:.3f}",
                                NOT_AVAILABLE if s.t2w_dice is None else f"{s.t2w_dice:.3f}",
                                s.levels_from or NOT_AVAILABLE]
                               + cells(s.levels) + cells(s.t1w_levels) + cells(s.t2w_levels)))
    return "\n".join(lines) + "\n"


def summary(s: ScanLevels) -> dict:
    """One scan's fit for the manifest."""
    return {"participant_id": s.key[0], **({"session_id": s.key[1]} if s.key[1] else {}),
            "slices": s.levels, "levels_from": s.levels_from, "t1w_slices": s.t1w_levels,
            "t2w_slices": s.t2w_levels,
            "dice": None if s.dice is None else round(s.dice, 4),
            "t2w_dice": None if s.t2w_dice is None else round(s.t2w_dice, 4),
            "reasons": [r for r, _ in s.reasons]}


LEVELS_FILE = "levels.tsv"
DOUBTFUL_FILE = "doubtful.tsv"
QC_FOLDER = "qc"
OVERVIEW_FILE = "overview.png"


def write_qc(folder: Path, found: list[ScanLevels]) -> None:
    """``folder``/qc: one contact sheet per scan with levels (not those the finder failed on), and
    overview.png of all."""
    from kerasmyelin.evaluation.level_sheets import save_level_sheet, save_overview

    qc = folder / QC_FOLDER
    qc.mkdir()
    for s in found:
        if s.levels is None:
            continue
        note = f"levels from the {s.levels_from} fit; outline overlap " + ", ".join(
            f"{c} {d:.2f}" for c, d in (("T1w", s.dice), ("T2w", s.t2w_dice)) if d is not None)
        if s.reasons:
            note += "; DOUBTFUL: " + "; ".join(f"{r} ({d})" for r, d in s.reasons)
        save_level_sheet(qc / f"{'_'.join(filter(None, s.key))}.png", s.label, s.levels, s.thumbs, note, s.doubtful)
    save_overview(qc / OVERVIEW_FILE, [{"label": s.label, "levels": s.levels, "thumbs": s.thumbs,
                                        "doubtful": s.doubtful} for s in found])


def prepare_bids_auto(bids: str | Path, out: str | Path, *, keep_doubtful: bool = False, overwrite: bool = False,
                      progress: bool = True, config: PrepConfig = PrepConfig(), jobs: int = 1,
                      finder: FinderConfig = FinderConfig(), log=print) -> tuple[Path, list[ScanLevels]]:
    """``prepare --bids`` without ``--levels``: find every scan's levels, then prepare the cache.

    Writes, with the cache and only if it is written: ``levels.tsv`` (the levels used, ``--levels``
    format; doubtful scans left out are n/a there, their found levels are in doubtful.tsv),
    ``doubtful.tsv`` (each doubtful scan, its reasons and found levels) and ``qc/``.

    Returns:
        (the cache folder, what was found for each scan).
    """
    from kerasmyelin.data.build import prepare_bids
    from kerasmyelin.io.output_dir import check_output

    root = Path(bids)
    check_output(out, "cache", overwrite=overwrite, inputs=[("--bids", root)], bids_roots=[root])  # before the work
    keys = bids_scans(root)
    if not keys:
        raise InputError("no participants", root / "participants.tsv")
    found = find_cohort_levels(root, keys, jobs=jobs, progress=progress, config=finder, prep=config)
    final = Path(out).expanduser().absolute()
    table = level_table(found, keep_doubtful, str(final / LEVELS_FILE))
    doubtful = [s for s in found if s.doubtful]
    for s in doubtful:
        log(f"doubtful: {s.label}: " + "; ".join(f"{REASONS[r]} ({d})" for r, d in s.reasons))
    left_out = [s for s in doubtful if table.rows[s.key] is None]
    if doubtful:
        what = (f"left out {len(left_out)} of {len(found)} scans" if left_out
                else f"kept all {len(doubtful)} (--keep-doubtful)")
        log(f"{len(doubtful)} doubtful scan(s): {what}; the list is {final / DOUBTFUL_FILE}"
            + (" (correct their levels in levels.tsv and rerun with --levels, or pass --keep-doubtful)"
               if left_out else ""))

    if all(v is None for v in table.rows.values()):
        raise InputError(f"every one of the {len(found)} scans is doubtful (listed above), so none is left to "
                         "prepare: look at them, then pass --keep-doubtful or give --levels", root)

    def extra(work: Path) -> None:
        (work / LEVELS_FILE).write_text(levels_tsv(table))
        (work / DOUBTFUL_FILE).write_text(doubtful_tsv(found, keep_doubtful))
        write_qc(work, found)

    manifest = {"level_source": "automatic", "levels_file": LEVELS_FILE,
                "automatic_levels": {"keep_doubtful": keep_doubtful, "finder": {"min_dice": MIN_DICE,
                                     "disagree_slices": DISAGREE_SLICES, "disagree_mm": DISAGREE_MM,
                                     "min_level_area": MIN_LEVEL_AREA,
                                     "reversed_margin": REVERSED_MARGIN, "min_neighbour_r": MIN_NEIGHBOUR_R},
                                     "doubtful_excluded": [summary(s) for s in left_out],
                                     "doubtful_kept": [summary(s) for s in doubtful if s not in left_out],
                                     "scans": [summary(s) for s in found]}}
    path = prepare_bids(root, table, out, overwrite=overwrite, progress=progress, config=config, jobs=jobs,
                        extra=extra, manifest_extra=manifest)
    return path, found
