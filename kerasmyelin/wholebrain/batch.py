"""Run the whole-brain pipeline over many infants: predictions.csv, one folder per infant.

Every job ends as one row of ``predictions.csv``: ``status`` is ``ok`` or ``failed`` and
``error`` says why, so no infant is dropped silently. The CSV is rewritten (atomically) after
each infant, so an interrupted batch leaves a complete file for the infants done so far.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from kerasmyelin.errors import KerasMyelinError
from kerasmyelin.io.atomic import write_bytes_atomic
from kerasmyelin.wholebrain.manifest import Job

PREDICTIONS_CSV = "predictions.csv"
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


def run_batch(jobs: list[Job], estimator, out: str | os.PathLike, *, reports: bool = False,
              saliency: str | None = None, skull_stripped: bool | None = None, progress: bool = True,
              log=print) -> list[dict]:
    """Estimate every job; write ``out/predictions.csv`` and ``out/<subject>/result.json`` (+ report).

    Returns:
        The rows written, one per job, in job order.
    """
    from tqdm.auto import tqdm

    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.wholebrain.pipeline import estimate_subject, prepare_scan, write_subject_outputs

    out = Path(out)
    rows = []
    for job in tqdm(jobs, desc="predict", unit="infant", disable=not progress):
        result, error = None, job.error
        if error is None:
            try:
                scan = prepare_scan(job.t1w, job.t2w, skull_stripped=skull_stripped,
                                    prep=PrepConfig(image_size=estimator.image_size))
                result, attribution = estimate_subject(estimator, scan, subject=job.subject,
                                                       age_months=job.age_months, saliency=saliency)
                write_subject_outputs(out / job.subject, result, scan, attribution, estimator, report=reports)
            except KerasMyelinError as exc:
                error, result = str(exc), None
            except Exception as exc:  # a bug or an unforeseen file: report it, go on with the others
                error, result = f"unexpected {type(exc).__name__}: {exc}", None
        if error:
            log(f"{job.subject}: skipped: {error}")
        rows.append(_row(job, result, error))
        write_rows(out / PREDICTIONS_CSV, rows)
    return rows
