"""Time and peak memory of generating the synthetic cohort (default: the paper's 119 infants).

Prints wall time, CPU seconds, peak resident memory of the whole process tree, and the ratios to
the issue's targets (60 s, 4 GB on 2 cores). Run on an idle machine:

    python benchmarks/bench_synth.py [--subjects 119] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

from kerasmyelin.synth.cohort import CohortConfig
from kerasmyelin.synth.dataset import build_cohort

TARGET_SECONDS = 60.0
TARGET_BYTES = 4 * 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=119)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_synth_")
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        out = build_cohort(os.path.join(work, "cohort"), CohortConfig(subjects=args.subjects, seed=args.seed),
                           jobs=args.jobs, progress=False)
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + children_cpu.ru_utime + children_cpu.ru_stime
    # Upper bound on the simultaneous peak: the parent plus every worker at its own peak.
    peak = self_peak + args.jobs * child_peak
    print(f"subjects            {args.subjects}")
    print(f"jobs (processes)    {args.jobs} on {os.cpu_count()} cores")
    print(f"wall time           {wall:.1f} s   ({wall / args.subjects:.2f} s per infant)")
    print(f"CPU time            {cpu:.1f} s")
    print(f"peak memory (bound) {peak / 1024**3:.2f} GB  (parent {self_peak / 1024**2:.0f} MB, "
          f"largest worker {child_peak / 1024**2:.0f} MB)")
    print(f"data written        {size / 1024**3:.2f} GB")
    print(f"time / target       {wall / TARGET_SECONDS:.2f}  (target {TARGET_SECONDS:.0f} s for 119 infants)")
    print(f"memory / target     {peak / TARGET_BYTES:.2f}  (target 4 GB)")


if __name__ == "__main__":
    main()
