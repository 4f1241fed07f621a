"""Peak memory of reading the largest scan the NIfTI reader accepts, and of preparing it (issue 20).

Writes a synthetic head-like T1w/T2w pair of the largest accepted shape (``MAX_VOXELS`` voxels,
512^3 at 0.5 mm: a 256 mm field of view) to a temporary folder with ``write_nifti``, then runs,
each in a fresh child process:

1. ``load_volume(t1)`` as the training cache reads it (float32 out), and with ``keep_integers``;
2. ``prepare_scan(t1, t2)``: the whole-brain preparation ``kerasmyelin predict`` runs per infant
   (load and check both files, find the five levels, 5 mm slabs, the ten images);
3. the same with the T2w on another grid (shifted by half a voxel), so that it is resampled onto
   the T1w's: the worst case, with a float32 copy of the T2w.

Each child reports its peak resident memory (``VmHWM`` in ``/proc/self/status``, the same as
``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after its imports and at its end; the difference
is what the step itself costs. Stored types: int16 (most MR files) and float32; ``--dtype float64``
shows the worst stored type the reader accepts (8 bytes a voxel). Usage:

    python benchmarks/bench_nifti_memory.py                       # 512^3 int16 and float32
    python benchmarks/bench_nifti_memory.py --shape 256,256,256 --voxel-mm 1.0 --dtype int16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
def hwm_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
step, t1, t2, t2_shifted = sys.argv[1:5]
import kerasmyelin  # noqa: F401  (its TensorFlow settings first, as the command line does)
from kerasmyelin.io.nifti import load_volume
from kerasmyelin.wholebrain.pipeline import prepare_scan
base = hwm_mb()
t = time.perf_counter()
if step == "load_volume":
    out = load_volume(t1)[0].dtype.name
elif step == "load_volume_keep_integers":
    out = load_volume(t1, keep_integers=True)[0].dtype.name
else:
    scan = prepare_scan(t1, t2_shifted if step == "prepare_scan_resampled" else t2)
    out = "".join(sorted(scan.levels)) + (" resampled" if scan.qc["t2_resampled"] else "")
print(json.dumps({"base_mb": base, "peak_mb": hwm_mb(), "seconds": time.perf_counter() - t, "out": str(out)}))
"""


def head_pair(shape, voxel_mm: float, dtype, seed: int = 0):
    """A head-like T1w/T2w pair: a textured ellipsoid (an infant head, ~130 x 160 x 120 mm) with
    dark CSF in the middle and a bright scalp, noise everywhere; the T2w its inverse inside the head,
    so that it passes the pipeline's contrast check (CSF and fat, ``wholebrain.contrast_order``).
    Built slice by slice to keep this process small.

    Returns:
        (t1, t2, affine): two arrays of ``shape`` in ``dtype`` and the 4x4 voxel -> mm affine.
    """
    rng = np.random.default_rng(seed)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-(n - 1) * voxel_mm / 2 for n in shape]
    x, y = (np.arange(n) * voxel_mm + affine[i, 3] for i, n in enumerate(shape[:2]))
    xy = (x[:, None] / 65.0) ** 2 + (y[None, :] / 80.0) ** 2
    t1, t2 = np.empty(shape, dtype), np.empty(shape, dtype)
    for k in range(shape[2]):
        z = k * voxel_mm + affine[2, 3]
        r = np.sqrt(xy + (z / 60.0) ** 2)
        inside = r < 1
        a = np.select([r < 0.3, r < 0.9, inside], [150.0, 450 + 120 * np.cos(12 * r), 900.0], 0.0)
        a = np.abs(a + rng.normal(0, 10, shape[:2]))
        t1[:, :, k] = a
        t2[:, :, k] = np.where(a > 50, 1000.0 - a, a)
    return t1, t2, affine


def run_child(step: str, t1: Path, t2: Path, t2_shifted: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, step, str(t1), str(t2), str(t2_shifted)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from kerasmyelin.io.nifti import MAX_VOXELS

    side = round(MAX_VOXELS ** (1 / 3))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=f"{side},{side},{side}", help="X,Y,Z (default: the largest accepted)")
    parser.add_argument("--voxel-mm", type=float, default=0.5)
    parser.add_argument("--dtype", action="append", help="stored type(s) (default int16 and float32)")
    parser.add_argument("--steps", default="load_volume,load_volume_keep_integers,prepare_scan,prepare_scan_resampled")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    from kerasmyelin.io.nifti import write_nifti

    print(f"shape {shape} at {args.voxel_mm} mm ({int(np.prod(shape)):,} voxels; MAX_VOXELS {MAX_VOXELS:,})")
    print(f"{'stored':>8} {'step':>26} {'file MB':>8} {'after imports MB':>17} {'peak MB':>8} {'step MB':>8} {'s':>6}")
    for dtype in args.dtype or ["int16", "float32"]:
        with tempfile.TemporaryDirectory() as tmp:
            t1, t2, affine = head_pair(shape, args.voxel_mm, np.dtype(dtype))
            p1, _ = write_nifti(Path(tmp) / "sub-01_T1w.nii.gz", t1, affine)
            p2, _ = write_nifti(Path(tmp) / "sub-01_T2w.nii.gz", t2, affine)
            shifted = affine.copy()
            shifted[:3, 3] += args.voxel_mm / 2
            p3, _ = write_nifti(Path(tmp) / "shifted_T2w.nii.gz", t2, shifted)
            del t1, t2
            size_mb = p1.stat().st_size / 2**20
            for step in args.steps.split(","):
                t = time.perf_counter()
                r = run_child(step, p1, p2, p3)
                if "error" in r:
                    print(f"{dtype:>8} {step:>26} {size_mb:8.0f}  error after {time.perf_counter() - t:.0f} s: "
                          f"{r['error']}")
                    continue
                print(f"{dtype:>8} {step:>26} {size_mb:8.0f} {r['base_mb']:17.0f} {r['peak_mb']:8.0f} "
                      f"{r['peak_mb'] - r['base_mb']:8.0f} {r['seconds']:6.1f}  {r['out']}")


if __name__ == "__main__":
    main()
