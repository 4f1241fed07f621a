"""Run the whole-brain pipeline over many infants: predictions.csv, one folder per infant.

Every job ends as one row of ``predictions.csv``: ``status`` is ``ok`` or ``failed`` and
``error`` says why, so no infant is dropped silently. The CSV is rewritten (atomically) every
few seconds and at the end, so an interrupted batch leaves a complete file for the infants
done so far. Infants are estimated :data:`CHUNK` at a time in one forward pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import kerasmyelin
from kerasmyelin.errors import KerasMyelinError
from kerasmyelin.io.atomic import (
    check_output_dir,
    write_bytes_atomic,
    write_text_atomic,
)
from kerasmyelin.wholebrain.manifest import Job

PREDICTIONS_CSV = "predictions.csv"
CHUNK = 8  # infants estimated in one forward pass
AHEAD = 2 * CHUNK  # infants submitted to the preparing processes ahead of the estimates
COLUMNS = ("subject", "status", "age_months", "estimate_months", "interval_lo", "interval_hi", "gap_months",
           "corrected_gap_months", "z", "grade", "level_finder_dice", "warnings", "error")


def _row(job: Job, result: dict | None, error: str | None) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(subject=job.subject, status="failed" if error else "ok", error=error or "",
               age_months="" if job.age_months is None else job.age_months)
    if result:
        interval = result.get("interval_months") or ["", ""]
        row.update(estimate_months=result["estimate_months"], interval_lo=interval[0], interval_hi=interval[1],
                   level_finder_dice=result["qc"]["level_finder"]["dice"],
                   warnings=" | ".join(result["qc"]["warnings"]))
        for key in ("gap_months", "corrected_gap_months", "z", "grade"):
            row[key] = "" if result.get(key) is None else result[key]
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_bytes_atomic(path, buf.getvalue().encode())


def _prepare(job: Job, skull_stripped, prep):
    """One job's preparation (in a worker process): PreparedScan, or the error message."""
    from kerasmyelin.wholebrain.pipeline import prepare_scan

    try:
        return prepare_scan(job.t1w, job.t2w, skull_stripped=skull_stripped, prep=prep), None
    except KerasMyelinError as exc:
        return None, str(exc)
    except Exception as exc:  # a bug or an unforeseen file: report it, go on with the others
        return None, f"unexpected {type(exc).__name__}: {exc}"


def _start_worker(references) -> None:
    """A preparing process's initializer: the parent's reference masks, and the imports up front."""
    import kerasmyelin.wholebrain.pipeline  # noqa: F401  (numpy, scipy, nibabel: ~1.5 s, now, not at the first infant)
    from kerasmyelin.wholebrain.level_finder import install_references

    install_references(references)


class PreparingPool:
    """Processes that prepare infants (read, check, find levels, cut slices) for :func:`run_batch`.

    Reading, checking, level finding and slice preparation need no TensorFlow, so they run in
    worker processes (spawned: the parent may hold TensorFlow's threads) while the parent
    estimates. The workers start as soon as the pool is made; ``kerasmyelin predict`` makes it
    before loading the model, so their start-up (imports, the reference masks, which the parent
    builds once and hands over) overlaps with loading TensorFlow and the networks. Use it as a
    context manager; :func:`run_batch` also makes one itself when given a number of workers.
    """

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from kerasmyelin.wholebrain.level_finder import REFERENCES, reference_mask

        if workers < 2:
            raise ValueError(f"a preparing pool needs at least 2 processes, got {workers}")
        self.workers = workers
        references = {kind: reference_mask(kind) for kind in REFERENCES}  # built once, not per worker
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(references,))
        for _ in range(workers):  # a process is spawned per submission while none is idle
            self.executor.submit(int)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PreparingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _prepared_in_order(jobs: list[Job], pool: PreparingPool | None, skull_stripped, prep):
    """Yield (job, scan, error) in job order; with a pool, preparation runs ahead of the caller.

    At most :data:`AHEAD` infants are in flight (about 0.7 MB each once prepared), enough to keep
    the workers busy while the parent estimates a chunk; memory stays flat for any cohort.
    """
    if pool is None:
        for job in jobs:
            yield (job, *(_prepare(job, skull_stripped, prep) if job.error is None else (None, job.error)))
        return
    from collections import deque

    pending = deque()
    todo = iter(jobs)

    def submit_next() -> bool:
        job = next(todo, None)
        if job is None:
            return False
        pending.append((job, None if job.error else pool.executor.submit(_prepare, job, skull_stripped, prep)))
        return True

    for _ in range(max(AHEAD, 2 * pool.workers)):
        submit_next()
    while pending:
        job, future = pending.popleft()
        submit_next()
        if future is None:
            yield job, None, job.error
            continue
        try:
            yield (job, *future.result())
        except Exception as exc:  # a worker died (killed, out of memory): this job fails, not the batch
            yield job, None, f"the preparing process failed ({type(exc).__name__}: {exc})"


def run_batch(jobs: list[Job], estimator, out: str | os.PathLike, *, reports: bool = False,
              saliency: str | None = None, skull_stripped: bool | None = None, progress: bool = True,
              workers: int | PreparingPool = 1, overwrite: bool = False, log=print) -> list[dict]:
    """Estimate every job; write ``out/predictions.csv`` and ``out/<subject>/result.json`` (+ report).

    Args:
        workers: processes preparing infants ahead of the estimates (1: all in this process), or
            a :class:`PreparingPool` already started (it is left open for the caller to close).
        overwrite: replace an earlier batch folder (one kerasmyelin wrote); otherwise a non-empty
            ``out`` is refused. The earlier folder is kept aside until this batch has finished.

    Returns:
        The rows written, one per job, in job order.
    """
    from tqdm.auto import tqdm

    from kerasmyelin.wholebrain.pipeline import estimate_subject, write_subject_outputs

    out = check_output_dir(out, overwrite)
    earlier = None
    if out.is_dir() and any(out.iterdir()):
        earlier = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, earlier / out.name)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "dataset_description.json", json.dumps({
        "Name": "kerasmyelin predictions", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": kerasmyelin.__version__,
                         "Description": "kerasmyelin predict: one folder per infant, predictions.csv"}],
        "Model": estimator.version}, indent=1) + "\n")
    rows: list[dict] = []
    state = {"written": 0.0}

    def finish(chunk: list) -> None:
        """Estimate a chunk of prepared infants (one batched forward pass) and write their outputs."""
        ready = [i for i, (_, scan, error) in enumerate(chunk) if error is None]
        estimates = {}
        if ready and saliency is None:
            try:
                values = estimator.predict_many([chunk[i][1].images for i in ready])
                estimates = dict(zip(ready, values))
            except Exception:  # noqa: BLE001 - fall back to one infant at a time, which names the failure
                estimates = {}
        for i, (job, scan, error) in enumerate(chunk):
            result = None
            if error is None:
                try:
                    result, attribution = estimate_subject(estimator, scan, subject=job.subject,
                                                           age_months=job.age_months, saliency=saliency,
                                                           estimate=estimates.get(i))
                    write_subject_outputs(out / job.subject, result, scan, attribution, estimator, report=reports)
                except KerasMyelinError as exc:
                    error, result = str(exc), None
                except Exception as exc:  # a bug or an unforeseen file: report it, go on with the others
                    error, result = f"unexpected {type(exc).__name__}: {exc}", None
            if error:
                log(f"{job.subject}: skipped: {error}")
            rows.append(_row(job, result, error))
        # The table is rewritten whole (atomically); at most every 2 s, so large batches stay linear.
        if time.monotonic() - state["written"] > 2.0:
            write_rows(out / PREDICTIONS_CSV, rows)
            state["written"] = time.monotonic()

    chunk = []
    own_pool = PreparingPool(workers) if isinstance(workers, int) and workers > 1 else None
    pool = workers if isinstance(workers, PreparingPool) else own_pool
    prepared = _prepared_in_order(jobs, pool, skull_stripped, estimator.prep_config)
    try:
        for item in tqdm(prepared, total=len(jobs), desc="predict", unit="infant", disable=not progress):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                finish(chunk)
                chunk = []
        if chunk:
            finish(chunk)
    finally:  # an interrupted batch still leaves every finished infant in the table
        write_rows(out / PREDICTIONS_CSV, rows)
        if own_pool is not None:
            own_pool.close()
    if earlier is not None:
        shutil.rmtree(earlier, ignore_errors=True)
    return rows
