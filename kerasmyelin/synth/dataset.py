"""Write a synthetic cohort as a BIDS raw data set, its ground truth and its ten-slice cache.

Layout (``OUT``)::

    dataset_description.json, participants.tsv, participants.json, README
    sub-001/anat/sub-001_T1w.nii.gz (+ .json sidecar), sub-001_T2w.nii.gz (+ .json)
    derivatives/synth_truth/   truth.tsv (myelination age, level slice indices, ...),
                               sub-001_truth.json (everything drawn for that infant)
    derivatives/tenslice/      tenslice.npz + manifest.json (the paper's 10 images per infant)

The whole folder is built in a temporary sibling and renamed into place at the end, so a
failure or an interrupt never leaves a half-written cohort.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.cache import write_cache
from kerasmyelin.data.prepare import PrepConfig, prepare_subject
from kerasmyelin.io.atomic import staged_dir, write_text_atomic
from kerasmyelin.io.nifti import write_nifti
from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS
from kerasmyelin.synth.cohort import CohortConfig, SubjectSpec, draw_cohort
from kerasmyelin.synth.simulate import simulate_subject, warm_up

PARTICIPANT_COLUMNS = ("participant_id", "sex", "gestational_age_weeks", "chronological_age_months",
                       "age_months", "field_strength", "manufacturer")
TRUTH_DIR = Path("derivatives") / "synth_truth"
TENSLICE_DIR = Path("derivatives") / "tenslice"

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


def _make_subject(spec: SubjectSpec, root: str, prep: PrepConfig, res_mm: float) -> dict:
    """Simulate, write and prepare one infant (runs in a worker process)."""
    root = Path(root)
    scan = simulate_subject(spec, res_mm=res_mm)
    anat = root / spec.participant_id / "anat"
    files = {}
    for contrast, data in zip(CONTRASTS, (scan.t1w, scan.t2w)):
        stem = anat / f"{spec.participant_id}_{contrast}"
        path, digest = write_nifti(stem.with_suffix(".nii.gz"), data, scan.affine)
        write_text_atomic(stem.with_suffix(".json"), _json(_sidecar(spec, contrast, scan.nuisance)))
        files[contrast] = {"path": str(path.relative_to(root)), "sha256": digest}
    # The same preparation real scans get: from the written voxels and affine.
    volumes = {"T1w": (scan.t1w, scan.affine), "T2w": (scan.t2w, scan.affine)}
    slices = {c: scan.level_slices for c in CONTRASTS}
    images = prepare_subject(volumes, slices, prep, sources={c: files[c]["path"] for c in CONTRASTS})
    truth = {"subject": asdict(spec), "level_slices": scan.level_slices, "acquisition": scan.nuisance}
    write_text_atomic(root / TRUTH_DIR / f"{spec.participant_id}_truth.json", _json(truth))
    return {"spec": spec, "levels": scan.level_slices, "files": files, "images": images,
            "nuisance": scan.nuisance}


def _tsv(rows: list[dict], columns) -> str:
    def fmt(v):
        return "n/a" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    lines = ["\t".join(columns)] + ["\t".join(fmt(r[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def build_cohort(out: str | os.PathLike, config: CohortConfig = CohortConfig(), *, jobs: int | None = None,
                 overwrite: bool = False, progress: bool = True, res_mm: float = 1.5,
                 prep: PrepConfig = PrepConfig()) -> Path:
    """Generate a synthetic cohort into ``out``.

    Args:
        out: output folder; must be empty or absent unless ``overwrite``.
        config: who is in the cohort.
        jobs: worker processes (default: all cores).
        overwrite: replace an existing non-empty ``out``.
        progress: show a progress bar.
        res_mm: resolution of the reference anatomy (adult MNI mm).
        prep: ten-slice preparation parameters.

    Returns:
        The output folder.
    """
    specs = draw_cohort(config)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    with staged_dir(out, overwrite) as tmp:
        warm_up(res_mm)  # built once here, inherited by forked workers
        results = _run(specs, tmp, prep, res_mm, jobs, progress)
        results.sort(key=lambda r: r["spec"].participant_id)
        _write_tables(tmp, config, results, prep)
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


def _run(specs, tmp: Path, prep: PrepConfig, res_mm: float, jobs: int, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(specs), desc="synth", unit="infant", disable=not progress)
    results = []
    try:
        if jobs == 1:
            for spec in specs:
                results.append(_make_subject(spec, str(tmp), prep, res_mm))
                bar.update()
        else:
            ctx = multiprocessing.get_context("fork")
            with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_keep_freed_memory) as pool:
                futures = [pool.submit(_make_subject, s, str(tmp), prep, res_mm) for s in specs]
                try:
                    for fut in cf.as_completed(futures):
                        results.append(fut.result())
                        bar.update()
                except BaseException:
                    # Do not simulate the rest of the cohort before reporting the failure.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return results


def _write_tables(root: Path, config: CohortConfig, results: list[dict], prep: PrepConfig):
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
                      "No real person is depicted. See derivatives/synth_truth for ground truth.\n")
    truth_rows = []
    for r in results:
        s = r["spec"]
        row = {"participant_id": s.participant_id, "age_months": s.age_months,
               "myelination_age_months": s.myelination_age_months, "maturation_rate": s.maturation_rate,
               "brain_volume_ml": s.brain_volume_ml, "field_strength": s.field_strength,
               "motion": int(s.motion), "slices": r["nuisance"]["slices"], "protocol": s.protocol,
               "skull_stripped": int(s.skull_stripped), "smoothing_fwhm_mm": s.smoothing_fwhm_mm}
        row.update({f"slice_{k}": r["levels"][k] for k in LEVEL_KEYS})
        truth_rows.append(row)
    cols = list(truth_rows[0])
    write_text_atomic(root / TRUTH_DIR / "truth.tsv", _tsv(truth_rows, cols))
    write_text_atomic(root / TRUTH_DIR / "dataset_description.json", _json({
        "Name": "kerasmyelin synthetic ground truth", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": __version__}],
        "Description": "slice_a..slice_e: 0-based index (NIfTI voxel axis 2) of the slice through each "
                       "level's landmark; myelination_age_months: the age a typical infant's brain "
                       "would look like this infant's (the oracle for the age label)."}))
    names = list(results[0]["images"])
    images = {n: np.stack([r["images"][n] for r in results]) for n in names}
    manifest = {
        "created_by": f"kerasmyelin {__version__} synth",
        "prep_config": prep.as_dict(),
        "level_source": "synthetic ground truth (derivatives/synth_truth)",
        "subjects": [{"participant_id": r["spec"].participant_id, "age_months": r["spec"].age_months,
                      "files": r["files"], "slices": r["levels"]} for r in results],
    }
    write_cache(root / TENSLICE_DIR, images, [s.participant_id for s in specs],
                [s.age_months for s in specs], manifest)
    write_text_atomic(root / TENSLICE_DIR / "dataset_description.json", _json({
        "Name": "kerasmyelin ten-slice input set", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": __version__}],
        "Description": "The ten 128x128 images per infant of Wada et al. 2019 (T1w and T2w at levels a-e); "
                       "see manifest.json."}))
