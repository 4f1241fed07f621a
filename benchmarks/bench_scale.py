"""Build a large sharded synthetic cohort and train one epoch on it, within 4 GB (issue 7).

Runs the real commands as child processes, exactly as a user would:

    kerasmyelin synth --out WORK/cohort --subjects N --shards S --slices-only --jobs J --quiet
    kerasmyelin train --data WORK/cohort/derivatives/tenslice --out WORK/run --fold full --set train.epochs=1 --quiet

(the paper's simple network, 128x128, batch 8; ``--fold full`` with the final weights keeps every
infant for training). While each runs, a sampler thread sums VmRSS (``/proc/PID/status``) over
this process and all its descendants (the command and its worker processes) every 0.1 s; the
peak of that sum is reported. Pages that forked workers share with their parent are counted in
each, so the figure is an upper bound. Prints build time, training samples/s (from the epoch's
own time in history.csv) and the two peaks against the 4096 MB target. The first epoch includes
tracing the model (~10 s); at small N pass ``--epochs 2`` to see the steady rate. Usage:

    python benchmarks/bench_scale.py                       # 10,000 infants: ~1 h of 2 cores
    python benchmarks/bench_scale.py --subjects 200 --shards 8 --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET_MB = 4096


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):  # the process ended between listing and reading
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and every live descendant, from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # after "(comm)": state, ppid
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


class PeakMemory:
    """Samples the summed VmRSS of this process tree in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s = interval_s
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in _tree(os.getpid())))
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def _run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak MB of the process tree) of one kerasmyelin command; exits on failure."""
    print("$ kerasmyelin " + " ".join(command), flush=True)
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kerasmyelin.cli.main", *command], check=False)
        wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"the command failed (exit status {done.returncode})")
    return wall, memory.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=10000)
    parser.add_argument("--shards", type=int, default=64, help="shard files (default 64, at most --subjects)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="synth worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    parser.add_argument("--work", help="folder for the cohort and the run (default: a temporary one, removed)")
    args = parser.parse_args()
    shards = min(args.shards, args.subjects)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    cohort, run = work / "cohort", work / "run"
    try:
        build_s, build_mb = _run(["synth", "--out", str(cohort), "--subjects", str(args.subjects), "--seed",
                                  str(args.seed), "--shards", str(shards), "--slices-only", "--jobs",
                                  str(args.jobs), "--quiet"])
        data = cohort / "derivatives" / "tenslice"
        shard_bytes = sum(p.stat().st_size for p in data.glob("*.tfrecord"))
        train_s, train_mb = _run(["train", "--data", str(data), "--out", str(run), "--fold", "full",
                                  "--set", f"train.epochs={args.epochs}", "--quiet"])
        with open(run / "full" / "simple" / "history.csv", newline="") as fh:
            epoch_s = [float(row["epoch_seconds"]) for row in csv.DictReader(fh)]
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    batch = 8  # TrainConfig().batch_size: the paper configuration's
    samples = math.ceil(args.subjects / batch) * batch
    print(f"\ninfants             {args.subjects} in {shards} shards ({shard_bytes / 1024**2:.0f} MB), "
          f"{args.jobs} synth workers, {os.cpu_count()} cores")
    print(f"build               {build_s:.1f} s ({build_s / args.subjects:.2f} s per infant), "
          f"peak {build_mb:.0f} MB ({build_mb / TARGET_MB:.2f} of {TARGET_MB} MB)")
    print(f"train, {args.epochs} epoch(s)  {train_s:.1f} s for the command, "
          f"peak {train_mb:.0f} MB ({train_mb / TARGET_MB:.2f} of {TARGET_MB} MB)")
    print(f"  first epoch       {epoch_s[0]:.1f} s, {samples / epoch_s[0]:.1f} samples/s (includes tracing)")
    if len(epoch_s) > 1:
        later = statistics.median(epoch_s[1:])
        print(f"  later epochs      {later:.1f} s (median), {samples / later:.1f} samples/s")


if __name__ == "__main__":
    main()
