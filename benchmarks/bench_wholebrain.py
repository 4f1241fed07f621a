"""Speed of the whole-brain pipeline after the model is loaded: one infant with its report, and batch.

Usage: python benchmarks/bench_wholebrain.py --model RUN --cohort COHORT [--subjects 10]

Times, on the first N infants of a synthetic cohort (whole-head clinical stacks):
1. single: NIfTI pair -> levels -> ten slices -> estimate + interval + grade + integrated-gradients
   saliency -> result.json + report PNG + PDF, per infant (what ``predict --t1 --t2`` does);
2. batch: the same without saliency and report (what ``predict --bids/--csv`` does by default),
   as infants per second, once the preparing processes have started (``kerasmyelin predict``
   starts them before loading the model, so their start-up overlaps with it), and with their
   start-up counted as well.
Each stage's median seconds are printed. The first infant (graph tracing) is excluded from both.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run folder (e.g. main/e100_ensemble)")
    parser.add_argument("--cohort", required=True, help="folder written by 'kerasmyelin synth'")
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--batch", type=int, default=40, help="infants in the batch timing")
    parser.add_argument("--workers", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2],
                        help="preparing processes to time, comma-separated (default 1,2)")
    args = parser.parse_args()

    import kerasmyelin  # noqa: F401  (first: its TensorFlow settings apply before TensorFlow starts)
    from kerasmyelin.wholebrain.batch import PreparingPool, run_batch
    from kerasmyelin.wholebrain.manifest import Job
    from kerasmyelin.wholebrain.estimator import TrainedEstimator
    from kerasmyelin.wholebrain.pipeline import (
        estimate_subject,
        prepare_scan,
        write_subject_outputs,
    )

    cohort = Path(args.cohort)
    ids = sorted(p.name for p in cohort.glob("sub-*"))[: args.subjects + 1]
    t = time.perf_counter()
    estimator = TrainedEstimator.from_path(args.model)
    print(f"model: {estimator.version}; loaded in {time.perf_counter() - t:.1f} s")
    prep = estimator.prep_config
    files = {p: (cohort / p / "anat" / f"{p}_T1w.nii.gz", cohort / p / "anat" / f"{p}_T2w.nii.gz") for p in ids}
    with tempfile.TemporaryDirectory() as tmp:
        totals, stages = [], {}
        for i, pid in enumerate(ids):
            t = time.perf_counter()
            scan = prepare_scan(*files[pid], prep=prep)
            result, attribution = estimate_subject(estimator, scan, subject=pid, age_months=6.0)
            write_subject_outputs(Path(tmp) / pid, result, scan, attribution, estimator)
            if i:
                totals.append(time.perf_counter() - t)
                for k, v in scan.seconds.items():
                    stages.setdefault(k, []).append(v)
        print(f"single infant with saliency and report: median {statistics.median(totals):.2f} s "
              f"(max {max(totals):.2f}) over {len(totals)} infants")
        print("  stages (median s): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in stages.items()))
        batch_ids = sorted(p.name for p in cohort.glob("sub-*"))[: args.batch]
        jobs = [Job(p, cohort / p / "anat" / f"{p}_T1w.nii.gz", cohort / p / "anat" / f"{p}_T2w.nii.gz", 6.0)
                for p in batch_ids]
        estimator.warm_up()  # trace the plain forward graph outside the timing, as the CLI does at loading
        for workers in args.workers:
            t = time.perf_counter()
            pool = PreparingPool(workers) if workers > 1 else None
            if pool is not None:
                _wait_until_started(pool)
            started = time.perf_counter() - t
            t = time.perf_counter()
            rows = run_batch(jobs, estimator, Path(tmp) / f"batch{workers}", progress=False, log=lambda *_: None,
                             workers=pool or 1)
            seconds = time.perf_counter() - t
            if pool is not None:
                pool.close()
            ok = sum(r["status"] == "ok" for r in rows)
            print(f"batch (no saliency, no report), {workers} preparing process(es): {ok}/{len(jobs)} infants "
                  f"in {seconds:.1f} s = {len(jobs) / seconds:.2f} infants/s; the processes' start-up took "
                  f"{started:.1f} s before that ({len(jobs) / (seconds + started):.2f} infants/s counting it)")


def _wait_until_started(pool) -> None:
    """Return once every preparing process has run its initializer (each has answered a task)."""
    seen: set[int] = set()
    while len(seen) < pool.workers:
        seen |= {f.result() for f in [pool.executor.submit(_pid_after, 0.05) for _ in range(pool.workers)]}


def _pid_after(seconds: float) -> int:
    import os

    time.sleep(seconds)
    return os.getpid()

if __name__ == "__main__":
    main()
