"""Write a synthetic cohort as a BIDS raw data set, its ground truth and its ten-slice cache.

Layout (``OUT``)::

    dataset_description.json, participants.tsv, participants.json, README
    sub-001/anat/sub-001_T1w.nii.gz (+ .json sidecar), sub-001_T2w.nii.gz (+ .json)
    derivatives/synth_truth/   truth.tsv (myelination age, level slice indices, ...),
                               sub-001_truth.json (everything drawn for that infant)
    derivatives/tenslice/      tenslice.npz + manifest.json (the paper's 10 images per infant),
                               or with ``shards``: tenslice-*.tfrecord + shards.json (``data.shards``)

The whole folder is built in a temporary sibling and renamed into place at the end, so a
failure or an interrupt never leaves a half-written cohort.

A large cohort is built with ``shards`` and ``volumes=False``: each worker simulates one shard's
infants and writes that shard itself, and the parent keeps only each infant's table rows, so
memory does not grow with the number of infants. Without volumes no NIfTI files are written
(180 GB for 10,000 infants): the ten prepared slices, participants.tsv and the ground truth are,
but such a cohort cannot be prepared again from its volumes (``kerasmyelin prepare --bids``).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import multiprocessing
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.cache import write_cache
from kerasmyelin.data.prepare import PrepConfig, prepare_subject
from kerasmyelin.data.shard_index import INDEX_FILE, write_index
from kerasmyelin.data.shard_writer import shard_writer, split_evenly
from kerasmyelin.io.atomic import write_text_atomic
from kerasmyelin.io.output_dir import OutputFolder
from kerasmyelin.io.nifti import write_nifti
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.synth.cohort import CohortConfig, SubjectSpec, draw_cohort
from kerasmyelin.synth.simulate import simulate_subject
from kerasmyelin.synth.tissue_signal import warm_up

PARTICIPANT_COLUMNS = ("participant_id", "sex", "gestational_age_weeks", "chronological_age_months",
                       "age_months", "field_strength", "manufacturer")
TRUTH_DIR = Path("derivatives") / "synth_truth"
TENSLICE_DIR = Path("derivatives") / "tenslice"
SLICES_ONLY_NOTE = ("Built without NIfTI volumes (kerasmyelin synth --slices-only): only the prepared ten-slice "
                    "set, the tables and the ground truth exist, so it cannot be prepared again from volumes.\n")

_PARTICIPANTS_JSON = {
    "sex": {"Description": "sex of the infant", "Levels": {"M": "male", "F": "female"}},
    "gestational_age_weeks": {"Description": "gestational age at birth", "Units": "weeks"},
    "chronological_age_months": {"Description": "age at scan since birth", "Units": "months"},
    "age_months": {"Description": "corrected age at scan (the label): chronological age minus "
                                  "(40 - gestational_age_weeks) weeks, so post-term births add time",
                   "Units": "months"},
    "field_strength": {"Description": "scanner field strength", "Units": "T"},
    "manufacturer": {"Description": "scanner manufacturer (synthetic protocol after Wada et al. 2019)"},
}


def _sidecar(spec: SubjectSpec, contrast: str, nuisance: dict) -> dict:
    scanner = spec.scanner
    seq = scanner.t1w if contrast == "T1w" else scanner.t2w
    extra = {}
    if spec.skull_stripped:
        extra["SkullStripped"] = True
    if spec.smoothing_fwhm_mm:
        extra["SmoothingFWHMmm"] = spec.smoothing_fwhm_mm
    return {
        "Manufacturer": scanner.manufacturer,
        "ManufacturersModelName": scanner.model,
        "MagneticFieldStrength": scanner.field_strength,
        "MRAcquisitionType": scanner.acquisition,
        "SliceThickness": scanner.slice_thickness_mm,
        "SpacingBetweenSlices": scanner.slice_thickness_mm + scanner.slice_gap_mm,
        "AcquisitionMatrixPE": scanner.acquired_matrix,
        "ReconMatrixPE": scanner.recon_matrix,
        "PhaseEncodingDirection": "j",
        "FieldOfView": nuisance["field_of_view_mm"],
        "SyntheticData": True,
        **seq.sidecar(),
        **extra,
    }


def _json(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def _make_subject(spec: SubjectSpec, root: str, prep: PrepConfig, res_mm: float, volumes: bool = True) -> dict:
    """Simulate, write and prepare one infant (runs in a worker process); ``volumes``: write its NIfTI files."""
    root = Path(root)
    scan = simulate_subject(spec, res_mm=res_mm)
    anat = root / spec.participant_id / "anat"
    files = {}
    if volumes:
        for contrast, data in zip(CONTRASTS, (scan.t1w, scan.t2w)):
            stem = anat / f"{spec.participant_id}_{contrast}"
            path, digest = write_nifti(stem.with_suffix(".nii.gz"), data, scan.affine)
            write_text_atomic(stem.with_suffix(".json"), _json(_sidecar(spec, contrast, scan.nuisance)))
            files[contrast] = {"path": str(path.relative_to(root)), "sha256": digest}
    # The same preparation real scans get: from the written voxels and affine.
    scans = {"T1w": (scan.t1w, scan.affine), "T2w": (scan.t2w, scan.affine)}
    slices = {c: scan.level_slices for c in CONTRASTS}
    images = prepare_subject(scans, slices, prep, sources={c: f["path"] for c, f in files.items()})
    truth = {"subject": asdict(spec), "level_slices": scan.level_slices, "acquisition": scan.nuisance}
    write_text_atomic(root / TRUTH_DIR / f"{spec.participant_id}_truth.json", _json(truth))
    _infant_done()
    return {"spec": spec, "levels": scan.level_slices, "files": files, "images": images,
            "nuisance": scan.nuisance}


def _make_shard(number: int, count: int, specs: list[SubjectSpec], root: str, prep: PrepConfig, res_mm: float,
                volumes: bool) -> tuple:
    """Simulate one shard's infants and write the shard (runs in a worker process).

    Returns:
        (``ShardSummary``, the infants' results without their images).
    """
    results = []
    shape = (prep.image_size, prep.image_size)
    with shard_writer(Path(root) / TENSLICE_DIR, number, count, shape) as shard:
        for spec in specs:
            if _cancelled():
                raise RuntimeError(f"shard {number} cancelled: another task failed")
            result = _make_subject(spec, root, prep, res_mm, volumes)
            shard.add(spec.participant_id, spec.age_months, result.pop("images"))
            results.append(result)
    return shard.summary, results


def _tsv(rows: list[dict], columns) -> str:
    def fmt(v):
        return "n/a" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    lines = ["\t".join(columns)] + ["\t".join(fmt(r[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def build_cohort(out: str | os.PathLike, config: CohortConfig = CohortConfig(), *, jobs: int | None = None,
                 overwrite: bool = False, progress: bool = True, res_mm: float = 1.5,
                 prep: PrepConfig = PrepConfig(), shards: int | None = None, volumes: bool = True) -> Path:
    """Generate a synthetic cohort into ``out``.

    Args:
        out: output folder; must be empty or absent unless ``overwrite``.
        config: who is in the cohort.
        jobs: worker processes (default: all cores).
        overwrite: replace an existing non-empty ``out``.
        progress: show a progress bar (counting infants).
        res_mm: resolution of the reference anatomy (adult MNI mm).
        prep: ten-slice preparation parameters.
        shards: write the ten-slice set as this many TFRecord shards (``data.shards``), one task
            per shard, instead of ``tenslice.npz``; None for the npz cache.
        volumes: write the NIfTI volumes; False writes only the prepared slices, tables and truth.

    Returns:
        The output folder.
    """
    specs = draw_cohort(config)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs), shards or len(specs)))
    if shards is not None:
        chunks = [specs[start:stop] for start, stop in split_evenly(len(specs), shards)]
    with OutputFolder(out, "cohort", overwrite=overwrite, what="kerasmyelin synth") as folder:
        tmp = folder.work
        anatomies = sorted({(s.anatomy, s.template_root) for s in specs})
        if progress and any(name != "mni" for name, _ in anatomies):
            print(f"anatomy: {', '.join(name for name, _ in anatomies)} (a scaffold is segmented once, "
                  f"then read from the cache)", file=sys.stderr, flush=True)
        warm_up(res_mm, anatomies)  # built once here, inherited by forked workers
        if shards is None:
            tasks = [(_make_subject, (s, str(tmp), prep, res_mm, volumes)) for s in specs]
            results = _run(tasks, len(specs), jobs, progress)
        else:
            tasks = [(_make_shard, (k, shards, chunk, str(tmp), prep, res_mm, volumes))
                     for k, chunk in enumerate(chunks)]
            summaries, parts = zip(*sorted(_run(tasks, len(specs), jobs, progress), key=lambda r: r[0].file))
            results = [r for part in parts for r in part]
        results.sort(key=lambda r: r["spec"].participant_id)
        _write_tables(tmp, config, results, volumes)
        manifest = _manifest(results, prep)
        if shards is None:
            names = list(results[0]["images"])
            images = {n: np.stack([r["images"][n] for r in results]) for n in names}
            write_cache(tmp / TENSLICE_DIR, images, [r["spec"].participant_id for r in results],
                        [r["spec"].age_months for r in results], manifest)
        else:
            write_index(tmp / TENSLICE_DIR, list(summaries), (prep.image_size, prep.image_size), manifest)
        _write_tenslice_description(tmp, sharded=shards is not None)
    return Path(out).expanduser().absolute()


def _keep_freed_memory() -> None:
    """Let this worker's allocator reuse freed memory instead of returning it to the system.

    Each infant allocates and frees the same few hundred MB of large arrays; by default glibc
    maps and unmaps every one of them, and the page faults cost about a tenth of the run.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4  # glibc mallopt parameters
        # No mmap for large blocks (glibc caps the mmap threshold at 32 MB, below our arrays)
        # and no returning of the heap's top: freed arrays are reused, not faulted in again.
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    except (OSError, AttributeError):  # not glibc: keep the default allocator
        pass


def _not_counted() -> None:
    pass


def _never() -> bool:
    return False


# _infant_done: how a finished infant is counted: the progress bar's update in this process, a
# message to the parent in a worker (set by _start_worker). _cancelled: whether the parent has
# given up (another task failed), checked before each infant of a shard, so a failure is
# reported after at most one more infant per worker, not after whole shards.
_infant_done, _cancelled = _not_counted, _never


def _start_worker(queue, stop) -> None:
    global _infant_done, _cancelled
    _keep_freed_memory()
    _infant_done, _cancelled = functools.partial(queue.put, 1), stop.is_set


def _run(tasks: list[tuple], infants: int, jobs: int, progress: bool) -> list:
    """``fn(*args)`` for every (fn, args) task, in ``jobs`` forked workers; results in completion
    order. The progress bar counts infants (``_infant_done``), not tasks: a shard task holds many."""
    global _infant_done
    from tqdm.auto import tqdm

    bar = tqdm(total=infants, desc="synth", unit="infant", disable=not progress)
    results = []
    try:
        if jobs == 1:
            _infant_done = bar.update
            results = [fn(*args) for fn, args in tasks]
        else:
            ctx = multiprocessing.get_context("fork")
            queue, stop = ctx.SimpleQueue(), ctx.Event()
            with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_worker,
                                        initargs=(queue, stop)) as pool:
                pending = {pool.submit(fn, *args) for fn, args in tasks}
                try:
                    while pending:
                        done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                        while not queue.empty():
                            bar.update(queue.get())
                        results += [fut.result() for fut in done]
                except BaseException:
                    # Do not simulate the rest of the cohort before reporting the failure.
                    stop.set()
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        _infant_done = _not_counted
        bar.close()
    return results


def _write_tables(root: Path, config: CohortConfig, results: list[dict], volumes: bool = True) -> None:
    """participants.tsv/json, dataset_description.json, README and the ground-truth tables."""
    specs = [r["spec"] for r in results]
    rows = [dict(asdict(s), manufacturer=s.manufacturer) for s in specs]
    write_text_atomic(root / "participants.tsv", _tsv(rows, PARTICIPANT_COLUMNS))
    write_text_atomic(root / "participants.json", _json(_PARTICIPANTS_JSON))
    write_text_atomic(root / "dataset_description.json", _json({
        "Name": "kerasmyelin synthetic infant cohort",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": __version__,
                         "Description": "kerasmyelin synth: MNI152 anatomy, Barkovich 1988 milestones, "
                                        "signal equations of the Wada et al. 2019 protocols"}],
        "SyntheticData": True,
        "CohortConfig": asdict(config),
    }))
    write_text_atomic(root / "README", "Synthetic infant brain MRI generated by kerasmyelin. "
                      "No real person is depicted. See derivatives/synth_truth for ground truth.\n"
                      + ("" if volumes else SLICES_ONLY_NOTE))
    truth_rows = []
    for r in results:
        s = r["spec"]
        row = {"participant_id": s.participant_id, "age_months": s.age_months,
               "myelination_age_months": s.myelination_age_months, "maturation_rate": s.maturation_rate,
               "brain_volume_ml": s.brain_volume_ml, "field_strength": s.field_strength,
               "motion": int(s.motion), "slices": r["nuisance"]["slices"], "protocol": s.protocol,
               "skull_stripped": int(s.skull_stripped), "smoothing_fwhm_mm": s.smoothing_fwhm_mm,
               "anatomy": s.anatomy}
        row.update({f"slice_{k}": r["levels"][k] for k in LEVEL_KEYS})
        truth_rows.append(row)
    cols = list(truth_rows[0])
    write_text_atomic(root / TRUTH_DIR / "truth.tsv", _tsv(truth_rows, cols))
    write_text_atomic(root / TRUTH_DIR / "dataset_description.json", _json({
        "Name": "kerasmyelin synthetic ground truth", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": __version__}],
        "Description": "slice_a..slice_e: 0-based index (NIfTI voxel axis 2) of the slice through each "
                       "level's landmark; myelination_age_months: the age a typical infant's brain "
                       "would look like this infant's (the oracle for the age label); anatomy: what "
                       "the infant was built on, mni (the scaled adult MNI152 brain) or template-{m}mo "
                       "(a scaffold segmented from the real infant template of m months, whose folder "
                       "sub-*_truth.json names)."}))


def _manifest(results: list[dict], prep: PrepConfig) -> dict:
    """The ten-slice set's provenance: preparation settings, and each infant's files and levels."""
    return {
        "created_by": f"kerasmyelin {__version__} synth",
        "prep_config": prep.as_dict(),
        "level_source": "synthetic ground truth (derivatives/synth_truth)",
        "subjects": [{"participant_id": r["spec"].participant_id, "age_months": r["spec"].age_months,
                      "files": r["files"], "slices": r["levels"]} for r in results],
    }


def _write_tenslice_description(root: Path, sharded: bool) -> None:
    write_text_atomic(root / TENSLICE_DIR / "dataset_description.json", _json({
        "Name": "kerasmyelin ten-slice input set", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": __version__}],
        "Description": "The ten 128x128 images per infant of Wada et al. 2019 (T1w and T2w at levels a-e); "
                       f"see manifest.json{f' and {INDEX_FILE}' if sharded else ''}."}))
