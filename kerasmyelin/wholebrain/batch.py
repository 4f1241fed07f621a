"""Run the whole-brain pipeline over many infants: predictions.csv, one folder per infant.

Every job ends as one row of ``predictions.csv``: ``status`` is ``ok`` or ``failed`` and
``error`` says why, so no infant is dropped silently. The batch is written into its output's
work folder (``io.output_dir.OutputFolder``) and replaces ``--out`` only when every infant is
done. Until then its table is ``predictions.incomplete.csv``, rewritten (atomically) every few
seconds, so a table that says it is complete never lacks infants. An interrupted batch keeps
its work folder; ``--resume`` keeps the infants already done and runs the rest. Errors written
to the table name the input by its role (``t1w``/``t2w``), never by path: file and folder names
often hold a patient's name. Infants are estimated :data:`CHUNK` at a time in one forward pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import kerasmyelin
from kerasmyelin.errors import InputError, KerasMyelinError, OutputError
from kerasmyelin.io.atomic import (
    atomic_dir,
    write_bytes_atomic,
    write_text_atomic,
)
from kerasmyelin.io.output_dir import OutputFolder
from kerasmyelin.wholebrain.manifest import Job

PREDICTIONS_CSV = "predictions.csv"
INCOMPLETE_CSV = "predictions.incomplete.csv"  # the table's name until the batch has finished
DESCRIPTION = "dataset_description.json"
CHUNK = 8  # infants estimated in one forward pass
AHEAD = 2 * CHUNK  # infants submitted to the preparing processes ahead of the estimates
COLUMNS = ("subject", "status", "age_months", "estimate_months", "interval_lo", "interval_hi", "gap_months",
           "corrected_gap_months", "z", "grade", "grade_reason", "level_finder_dice", "warnings", "error")


# What is left of a path once the job's own files are named by role: any absolute path.
_PATH = re.compile(r"(?:~|\.{1,2})?(?:/[^/\s:;,'\"()\[\]]+)+/?")


def without_paths(message: str, job: Job) -> str:
    """``message`` as written to outputs: the job's files named by role (``<t1w>``, ``<t2w>``) and
    any other path as ``<path>``. File and folder names often carry a patient's name and birth
    date; the terminal may show them, the written outputs do not."""
    for role, path in (("t1w", job.t1w), ("t2w", job.t2w)):
        if path is None:
            continue
        p = Path(path)
        for text in sorted({os.fspath(p), str(p.expanduser().absolute()), os.path.realpath(p)}, key=len,
                           reverse=True):
            message = message.replace(text, f"<{role}>")
    message = _PATH.sub("<path>", message)
    for role, path in (("t1w", job.t1w), ("t2w", job.t2w)):  # base names quoted without their folder
        if path is not None and len(Path(path).name) > 3:
            message = message.replace(Path(path).name, f"<{role}>")
    return message


def _row(job: Job, result: dict | None, error: str | None) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(subject=job.subject, status="failed" if error else "ok",
               error="" if not error else without_paths(error, job),
               age_months="" if job.age_months is None else job.age_months)
    if result:
        interval = result.get("interval_months") or ["", ""]
        row.update(estimate_months=result["estimate_months"], interval_lo=interval[0], interval_hi=interval[1],
                   level_finder_dice=result["qc"]["level_finder"]["dice"],
                   warnings=" | ".join(result["qc"]["warnings"]))
        for key in ("gap_months", "corrected_gap_months", "z", "grade", "grade_reason"):
            row[key] = "" if result.get(key) is None else result[key]
    return row


NO_GRADE = "no grade (no corrected age or no norms)"


def grade_counts(rows: list[dict]) -> dict[str, int]:
    """Estimated infants per grade: every one of ``GRADES`` in order (zeros kept), then
    :data:`NO_GRADE` and any grade this version does not know (a resumed older table's)."""
    from collections import Counter

    from kerasmyelin.norms.model import GRADES

    tally = Counter(r.get("grade") or NO_GRADE for r in rows if r["status"] == "ok")
    return {g: tally.pop(g, 0) for g in GRADES} | dict(tally)


def grade_summary(rows: list[dict]) -> str:
    """One line for the terminal: the grades given and how many, e.g. "grades: 3 within norms, 1
    not graded: check the input (why: the grade_reason column)"."""
    from kerasmyelin.norms.model import NOT_GRADED

    counts = {g: n for g, n in grade_counts(rows).items() if n}
    if not counts:
        return "grades: none (no infant was estimated)"
    return "grades: " + ", ".join(f"{n} {g}" + (" (why: the grade_reason column)" if g == NOT_GRADED else "")
                                  for g, n in counts.items())


def write_rows(path: Path, rows: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
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


def _end_with(parent: int) -> None:
    """Exit this process as soon as ``parent`` is gone (killed with -9, it cannot stop us itself)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start_worker(references, parent: int, csf_points=None) -> None:
    """A preparing process's initializer: the parent's reference masks (and the MNI ventricles of
    the contrast check, which would cost each process ~2 s), the imports up front, and a watch
    that ends the process with its parent."""
    threading.Thread(target=_end_with, args=(parent,), daemon=True, name="end-with-parent").start()
    import kerasmyelin.wholebrain.pipeline  # noqa: F401  (numpy, scipy, nibabel: ~1.5 s, now, not at the first infant)
    from kerasmyelin.wholebrain.level_finder import install_references

    install_references(references)
    if csf_points is not None:
        from kerasmyelin.atlas.priors import install_ventricle_and_white_matter_points

        install_ventricle_and_white_matter_points(csf_points)


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
        from kerasmyelin.atlas.priors import ventricle_and_white_matter_points

        references = {kind: reference_mask(kind) for kind in REFERENCES}  # built once, not per worker
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker,
                                            initargs=(references, os.getpid(), ventricle_and_white_matter_points()))
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


def batch_folder(out: str | os.PathLike, jobs: list[Job], *, overwrite: bool = False, resume: bool = False,
                 inputs=(), bids_roots=(), settings: dict | None = None, log=print) -> OutputFolder:
    """The output folder of a batch, not yet entered: checked now, locked and built when entered.

    Args:
        jobs: the batch's infants; ``out`` must stay apart from each of their images.
        overwrite: replace an earlier batch output (only one kerasmyelin recorded as a batch).
        resume: continue an interrupted batch for ``out`` (its work folder), keeping the infants done.
        inputs, bids_roots: the batch's other inputs (the list, the model), which ``out`` must stay apart from.
        settings: what the batch is made with (:func:`batch_settings`); a resumed batch must match.
    """
    files = [f for job in jobs for f in (job.t1w, job.t2w) if f is not None]
    inputs = [*inputs, ("image of the batch", files)]
    return OutputFolder(out, "predict", overwrite=overwrite, resume=resume, inputs=inputs, bids_roots=bids_roots,
                        what="kerasmyelin predict (batch)", settings=settings, keep_interrupted=True, log=log)


def batch_settings(reports: bool, saliency: str | None) -> dict:
    """What a resumed batch must share with the interrupted one (the model is checked apart)."""
    return {"reports": bool(reports), "saliency": saliency}


def _read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"the interrupted batch's table cannot be read ({exc}); pass --overwrite to start "
                         "afresh", path) from None


def _kept_from_interrupted(work: Path, jobs: list[Job], estimator, log) -> dict[str, dict]:
    """Rows of the infants an interrupted batch finished, by subject; clears its other folders."""
    try:
        description = json.loads((work / DESCRIPTION).read_text())
    except (OSError, ValueError):
        description = {}
    if description.get("Model") not in (None, estimator.version):
        raise OutputError(f"{work}: the interrupted batch was made with model {description.get('Model')}, not "
                          f"{estimator.version}; resume with the same --model, or pass --overwrite to start afresh")
    wanted = {job.subject for job in jobs}
    rows = _read_rows(work / INCOMPLETE_CSV) if (work / INCOMPLETE_CSV).exists() else []
    kept = {r["subject"]: r for r in rows
            if r.get("status") == "ok" and r.get("subject") in wanted and (work / r["subject"] / "result.json").is_file()}
    for entry in work.iterdir():  # folders of infants the table does not record as done: run again
        if entry.is_dir() and entry.name not in kept:
            shutil.rmtree(entry)
    log(f"resuming {work}: {len(kept)} of {len(jobs)} infants already done, {len(jobs) - len(kept)} to run")
    return kept


def run_batch(jobs: list[Job], estimator, out: str | os.PathLike | OutputFolder, *, reports: bool = False,
              saliency: str | None = None, skull_stripped: bool | None = None, progress: bool = True,
              workers: int | PreparingPool = 1, overwrite: bool = False, resume: bool = False, inputs=(),
              log=print) -> list[dict]:
    """Estimate every job; write ``out/predictions.csv`` and ``out/<subject>/result.json`` (+ report).

    Args:
        out: the output folder, or a :func:`batch_folder` already entered (``kerasmyelin predict``
            takes it before loading the model, so that a second command on the same folder is
            refused at once); its owner then swaps it in.
        workers: processes preparing infants ahead of the estimates (1: all in this process), or
            a :class:`PreparingPool` already started (it is left open for the caller to close).
        overwrite: replace an earlier batch output (one kerasmyelin recorded as such); otherwise a
            non-empty ``out`` is refused. The earlier output stays in place until this batch has
            finished.
        resume: continue an interrupted batch, keeping the infants it finished.
        inputs: (label, path) pairs ``out`` must stay apart from (the job files are added).

    Returns:
        The rows written, one per job, in job order.
    """
    if isinstance(out, OutputFolder):
        return _run_into(out, jobs, estimator, reports=reports, saliency=saliency, skull_stripped=skull_stripped,
                         progress=progress, workers=workers, log=log)
    folder = batch_folder(out, jobs, overwrite=overwrite, resume=resume, log=log, inputs=inputs,
                          settings=batch_settings(reports, saliency))
    with folder:
        return _run_into(folder, jobs, estimator, reports=reports, saliency=saliency, skull_stripped=skull_stripped,
                         progress=progress, workers=workers, log=log)


def _run_into(folder: OutputFolder, jobs: list[Job], estimator, *, reports, saliency, skull_stripped, progress,
              workers, log) -> list[dict]:
    from tqdm.auto import tqdm

    from kerasmyelin.wholebrain.pipeline import estimate_subject, write_subject_files

    work = folder.work
    kept = _kept_from_interrupted(work, jobs, estimator, log) if folder.resumed else {}
    write_text_atomic(work / DESCRIPTION, json.dumps({
        "Name": "kerasmyelin predictions", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "kerasmyelin", "Version": kerasmyelin.__version__,
                         "Description": "kerasmyelin predict: one folder per infant, predictions.csv"}],
        "Model": estimator.version}, indent=1) + "\n")
    done: dict[str, dict] = dict(kept)
    state = {"written": 0.0}

    def table() -> list[dict]:
        return [done[job.subject] for job in jobs if job.subject in done]

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
                    with atomic_dir(work / job.subject) as tmp:
                        write_subject_files(tmp, result, scan, attribution, estimator, report=reports)
                except KerasMyelinError as exc:
                    error, result = str(exc), None
                except Exception as exc:  # a bug or an unforeseen file: report it, go on with the others
                    error, result = f"unexpected {type(exc).__name__}: {exc}", None
            if error:
                log(f"{job.subject}: skipped: {error}")
            done[job.subject] = _row(job, result, error)
        # The table is rewritten whole (atomically); at most every 2 s, so large batches stay linear.
        if time.monotonic() - state["written"] > 2.0:
            write_rows(work / INCOMPLETE_CSV, table())
            state["written"] = time.monotonic()

    todo = [job for job in jobs if job.subject not in kept]
    chunk = []
    own_pool = PreparingPool(workers) if isinstance(workers, int) and workers > 1 and todo else None
    pool = workers if isinstance(workers, PreparingPool) else own_pool
    prepared = _prepared_in_order(todo, pool, skull_stripped, estimator.prep_config)
    finished = False
    try:
        for item in tqdm(prepared, total=len(todo), desc="predict", unit="infant", disable=not progress):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                finish(chunk)
                chunk = []
        if chunk:
            finish(chunk)
        finished = True
    finally:  # an interrupted batch still records every finished infant, for --resume
        if finished:
            write_rows(work / PREDICTIONS_CSV, table())
            (work / INCOMPLETE_CSV).unlink(missing_ok=True)
        else:
            write_rows(work / INCOMPLETE_CSV, table())
        if own_pool is not None:
            own_pool.close()
    return table()
