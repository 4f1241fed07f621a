"""Time and peak memory of generating the synthetic cohort (default: the paper's 119 infants).

Prints, for each repetition, wall time, CPU seconds and peak resident memory of the process tree,
then the median and the ratios to the issue's targets (60 s and 4 GB on 2 cores). Disk writes
are part of the measurement (1.6 GB of NIfTI); pending writes are flushed before each run. Run
on an idle machine:

    python benchmarks/bench_synth.py [--subjects 119] [--jobs 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time

from kerasmyelin.synth.cohort import CohortConfig
from kerasmyelin.synth.dataset import build_cohort

TARGET_SECONDS = 60.0
TARGET_BYTES = 4 * 1024**3


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one_run(subjects: int, jobs: int, seed: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of parent and workers, bytes written) of one cohort build."""
    work = tempfile.mkdtemp(prefix="bench_synth_")
    try:
        os.sync()  # start with no other writes pending
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        out = build_cohort(os.path.join(work, "cohort"), CohortConfig(subjects=subjects, seed=seed),
                           jobs=jobs, progress=False)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0 + _children_cpu() - k0
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.sync()
    return wall, cpu, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=119)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    walls = []
    for i in range(args.repeat):
        wall, cpu, size = one_run(args.subjects, args.jobs, args.seed)
        walls.append(wall)
        print(f"run {i + 1}: wall {wall:.1f} s, CPU {cpu:.1f} s, {size / 1024**3:.2f} GB written")
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    # Upper bound on the simultaneous peak: the parent plus every worker at its own peak.
    peak = self_peak + args.jobs * child_peak
    wall = statistics.median(walls)
    print(f"subjects            {args.subjects}")
    print(f"jobs (processes)    {args.jobs} on {os.cpu_count()} cores")
    print(f"wall time (median)  {wall:.1f} s   ({wall / args.subjects:.2f} s per infant; "
          f"runs {', '.join(f'{w:.1f}' for w in walls)})")
    print(f"peak memory (bound) {peak / 1024**3:.2f} GB  (parent {self_peak / 1024**2:.0f} MB, "
          f"largest worker {child_peak / 1024**2:.0f} MB)")
    print(f"time / target       {wall / TARGET_SECONDS * 119 / args.subjects:.2f}  "
          f"(target {TARGET_SECONDS:.0f} s for 119 infants, scaled to {args.subjects})")
    print(f"memory / target     {peak / TARGET_BYTES:.2f}  (target 4 GB)")


if __name__ == "__main__":
    main()
