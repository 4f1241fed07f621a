"""Training and inference speed of the paper's network, side by side, with the protocol's projection.

Usage:
    python benchmarks/bench_speed.py [--rounds 2] [--seconds 15] [--json OUT.json]
        [--nnabla-python nnabla-venv/bin/python]

Every implementation runs in its own process (TensorFlow reads its CPU settings at start-up) and
the implementations are alternated round by round, so slow drifts of the machine hit all alike:

- ``plain``: the Keras graph as a TensorFlow user gets it by default (``import tensorflow`` first:
  Eigen kernels on this CPU, TensorFlow's thread pools, Keras' Adam);
- ``+onednn``, ``+threads``: the plain graph with kerasmyelin's settings added one at a time;
- ``kerasmyelin``: the project's training (``import kerasmyelin`` first, ``compile_for_training``:
  oneDNN, one thread per branch, fused Adam) -- the same model, parameters and layer names;
- ``pytorch``: the same network in PyTorch, in its faster memory layout (``torch_worker.py``);
- ``nnabla``: Neural Network Console's engine, when a Python with nnabla is found
  (``nnabla_worker.py``; ``--nnabla-python``).

All train on random images with ``fit``-style repeated data (batch 8, 76 infants per epoch, as one
fold of the main job), timing steady epochs after a warm-up. Also printed: the machine's float32
matmul peak (numpy, a long loop), achieved GFLOP/s (``kerasmyelin.models.flops``), inference
subjects/s through ``predict_ages``, peak memory per process, and the projected wall time of the
paper's full protocol (``experiments/paper_simple.yaml`` + ``paper_ensemble.yaml``, 1000 epochs,
4 folds, the default synthetic cohort's ages) against its arithmetic minimum.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TF_VARIANTS = ("plain", "+onednn", "+threads", "kerasmyelin")
ENV_KEYS = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
TRAIN_INFANTS = 76


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _random_set(n: int, seed: int = 0):
    import numpy as np

    from kerasmyelin.data.cache import TenSliceSet
    from kerasmyelin.levels import INPUT_NAMES

    rng = np.random.default_rng(seed)
    images = {name: rng.random((n, 128, 128), dtype=np.float32) for name in INPUT_NAMES}
    return TenSliceSet(images=images, participant_id=np.array([f"sub-{i:04d}" for i in range(n)]),
                       age_months=rng.uniform(-1.7, 24, n).astype(np.float32), manifest={})


def worker_train(variant: str, seconds: float, batch: int) -> dict:
    """Samples/s of ``fit`` on the repeated dataset (one variant; see module docstring)."""
    if variant == "kerasmyelin":
        import kerasmyelin  # noqa: F401  (first: its settings apply before TensorFlow starts)
    else:
        import tensorflow  # noqa: F401  (first, so kerasmyelin's settings are not applied)
    import keras
    import numpy as np

    from kerasmyelin.data.pipeline import make_dataset, steps_per_epoch
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn
    from kerasmyelin.runtime import state
    from kerasmyelin.training.config import TrainConfig
    from kerasmyelin.training.objective import compile_for_training

    data = _random_set(TRAIN_INFANTS)
    train = TrainConfig(batch_size=batch)
    keras.utils.set_random_seed(0)
    model = build_myelin_cnn()
    if variant == "kerasmyelin":
        compile_for_training(model, train)
        optimizer = type(model.optimizer).__name__
    else:
        model.compile(optimizer=keras.optimizers.Adam(train.learning_rate, train.beta_1, train.beta_2, train.epsilon),
                      loss="mean_squared_error", metrics=["mae"])
        optimizer = "Adam"
    steps = steps_per_epoch(TRAIN_INFANTS, batch)
    ds = make_dataset(data, np.arange(TRAIN_INFANTS), batch, training=True)

    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
    first = times[0]
    start = time.perf_counter()
    epochs = 0
    while time.perf_counter() - start < seconds:
        model.fit(ds, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
        epochs += 2
    steady = statistics.median(times[1:])
    return {"samples_per_s": steps * batch / steady, "first_epoch_s": first, "epoch_s": steady,
            "epoch_times": times[1:], "samples_per_epoch": steps * batch,
            "optimizer": optimizer, "runtime": state(), "peak_rss_mb": _peak_rss_mb()}


def worker_infer(seconds: float) -> dict:
    """Subjects/s of ``predict_ages`` (batch prediction) and of batch-8 validation passes."""
    import keras
    import numpy as np

    import kerasmyelin  # noqa: F401  (settings first)
    from kerasmyelin.data.pipeline import make_dataset
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn
    from kerasmyelin.training.experiment import predict_ages

    n = 512
    data = _random_set(n, seed=1)
    keras.utils.set_random_seed(0)
    model = build_myelin_cnn()
    predict_ages(model, data, np.arange(64))
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 2:
        predict_ages(model, data, np.arange(n))
        done += n
    predict_rate = done / (time.perf_counter() - start)

    # Validation as fit runs it: a finite batch-8 dataset through a compiled model.
    model.compile(loss="mean_squared_error", metrics=["mae"])
    val = make_dataset(data, np.arange(13), 8, training=False)
    model.evaluate(val, verbose=0)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 2:
        model.evaluate(val, verbose=0)
        done += 13
    return {"predict_subjects_per_s": predict_rate, "validation_samples_per_s": done / (time.perf_counter() - start),
            "peak_rss_mb": _peak_rss_mb()}


def worker_matmul(seconds: float, size: int = 2048) -> dict:
    """float32 matmul GFLOP/s with numpy's BLAS on all of this process's cores (the FMA peak)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    c = np.empty_like(a)
    for _ in range(3):
        np.matmul(a, b, out=c)
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        rates.append(2 * size ** 3 / (time.perf_counter() - t) / 1e9)
    return {"gflops": statistics.median(rates), "best_gflops": max(rates), "numpy": np.__version__}


def _run(cmd: list[str], env: dict | None = None, timeout: float = 900) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {out.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1])


def _variant_env(variant: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    from kerasmyelin.runtime import fast_cpu_settings

    fast = fast_cpu_settings()
    if variant == "plain":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    elif variant == "+onednn":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    elif variant == "+threads":
        env.update(fast)
    return env


def _pooled_rate(runs: list[dict]) -> float:
    """Samples/s from the median of all steady epochs of all rounds (or of the rounds' own rates)."""
    if all("epoch_times" in r for r in runs):
        return runs[0]["samples_per_epoch"] / statistics.median(t for r in runs for t in r["epoch_times"])
    return statistics.median(r["samples_per_s"] for r in runs)


def _self(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _find_nnabla_python(given: str | None) -> str | None:
    candidates = [given] if given else [os.environ.get("NNABLA_PYTHON"), str(REPO / "nnabla-venv/bin/python")]
    for c in candidates:
        if c and Path(c).exists():
            probe = subprocess.run([c, "-c", "import nnabla"], capture_output=True)
            if probe.returncode == 0:
                return c
    return None


def _protocol():
    """Training and validation samples of the paper's protocol on the default cohort's ages."""
    from kerasmyelin.synth.cohort import CohortConfig, draw_cohort
    from kerasmyelin.training.config import load_experiment
    from kerasmyelin.training.protocol import Workload, experiment_workload

    infants = draw_cohort(CohortConfig())
    ids = [s.participant_id for s in infants]
    ages = [s.age_months for s in infants]
    total = Workload(0, 0, 0)
    for name in ("paper_simple", "paper_ensemble"):
        total = total + experiment_workload(load_experiment(REPO / "experiments" / f"{name}.yaml"), ids, ages)
    return total, len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (default 2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per measurement")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--nnabla-python", help="a Python with nnabla installed (default: $NNABLA_PYTHON, "
                        "then nnabla-venv/ in the repository)")
    parser.add_argument("--skip", nargs="*", default=[], help="implementations to leave out")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.worker == "matmul":
            result = worker_matmul(args.seconds)
        elif args.worker == "infer":
            result = worker_infer(args.seconds)
        else:
            result = worker_train(args.worker, args.seconds, args.batch)
        print(json.dumps(result))
        return

    import kerasmyelin  # noqa: F401
    from kerasmyelin.runtime import cpu_count

    impls: dict[str, list[str]] = {v: _self("--worker", v, "--seconds", str(args.seconds), "--batch", str(args.batch))
                                   for v in TF_VARIANTS}
    notes = []
    try:
        import torch  # noqa: F401
        impls["pytorch"] = [sys.executable, str(HERE / "torch_worker.py"), "--seconds", str(args.seconds),
                            "--batch", str(args.batch)]
    except ImportError:
        notes.append("pytorch: not installed here (pip install torch==2.13.0); left out")
    nnabla = _find_nnabla_python(args.nnabla_python)
    if nnabla:
        impls["nnabla"] = [nnabla, str(HERE / "nnabla_worker.py"), "--seconds", str(args.seconds),
                           "--batch", str(args.batch)]
    else:
        notes.append("nnabla: no Python with nnabla found (see nnabla_worker.py); left out")
    for name in args.skip:
        impls.pop(name, None)

    results: dict[str, list[dict]] = {name: [] for name in impls}
    matmul, infer = [], []
    started = time.time()
    for r in range(args.rounds):
        matmul.append(_run(_self("--worker", "matmul", "--seconds", str(max(10.0, args.seconds)))))
        print(f"round {r + 1}: matmul peak {matmul[-1]['gflops']:.0f} GFLOP/s", flush=True)
        for name, cmd in impls.items():
            results[name].append(_run(cmd, env=_variant_env(name)))
            print(f"round {r + 1}: {name:<12} {results[name][-1]['samples_per_s']:6.1f} samples/s", flush=True)
        infer.append(_run(_self("--worker", "infer", "--seconds", str(args.seconds)), env=_variant_env("kerasmyelin")))
        print(f"round {r + 1}: inference  {infer[-1]['predict_subjects_per_s']:6.1f} subjects/s", flush=True)

    import keras

    from kerasmyelin.models.flops import network_flops
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn

    flops = network_flops(build_myelin_cnn())
    peak = statistics.median(m["gflops"] for m in matmul)
    rate = {name: _pooled_rate(rs) for name, rs in results.items()}
    ours = rate.get("kerasmyelin")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass

    lines = [f"machine: {cpu}, {cpu_count()} cores; python {platform.python_version()}, "
             f"keras {keras.__version__}; batch {args.batch}; {args.rounds} alternated rounds of "
             f"{args.seconds:.0f} s; {time.time() - started:.0f} s in all",
             f"network: {flops.forward / 1e9:.3f} GFLOP forward, {flops.training / 1e9:.3f} GFLOP per training sample",
             f"float32 matmul peak (numpy, 2048^2, median): {peak:.0f} GFLOP/s", "",
             f"{'training':<13}{'samples/s':>10}{'rounds':>14}{'x plain':>9}{'x kerasmyelin':>15}{'GFLOP/s':>9}{'% peak':>8}{'peak MB':>9}  detail"]
    for name, r in rate.items():
        last = results[name][-1]
        detail = last.get("layout") or last.get("optimizer", "")
        if "runtime" in last:
            rt = last["runtime"]
            detail += f", onednn {'on' if rt['onednn'] else 'off'}, threads {rt['intra_op_threads']}/{rt['inter_op_threads']}"
        detail += f", {last.get('version', '')}" if "version" in last else ""
        gf = r * flops.training / 1e9
        mem = max(x["peak_rss_mb"] for x in results[name])
        spread = "/".join(f"{x['samples_per_s']:.0f}" for x in results[name])
        lines.append(f"{name:<13}{r:>10.1f}{spread:>14}{r / rate['plain'] if 'plain' in rate else float('nan'):>9.2f}"
                     f"{(r / ours) if ours else float('nan'):>15.2f}{gf:>9.1f}{100 * gf / peak:>7.0f}%{mem:>9.0f}  {detail}")
    predict = statistics.median(x["predict_subjects_per_s"] for x in infer)
    val_rate = statistics.median(x["validation_samples_per_s"] for x in infer)
    lines += ["", f"inference (predict_ages, batch 64): {predict:.0f} subjects/s; "
                  f"validation passes (batch 8): {val_rate:.0f} samples/s; "
                  f"peak {max(x['peak_rss_mb'] for x in infer):.0f} MB"]
    if ours:
        work, n_infants = _protocol()
        first = statistics.median(x["first_epoch_s"] - x["epoch_s"] for x in results["kerasmyelin"])
        projected = work.train_samples / ours + work.validation_samples / val_rate + work.networks * first
        minimum = (work.train_samples * flops.training + work.validation_samples * flops.forward) / (peak * 1e9)
        lines += [f"full protocol ({n_infants} infants, {work.networks} networks x 1000 epochs): "
                  f"{work.train_samples:,} training + {work.validation_samples:,} validation samples",
                  f"  projected wall time {projected / 3600:.2f} h (training {work.train_samples / ours / 3600:.2f} h, "
                  f"validation {work.validation_samples / val_rate / 3600:.2f} h, set-up {work.networks * first / 60:.1f} min); "
                  f"arithmetic minimum at the matmul peak {minimum / 3600:.2f} h; ratio {projected / minimum:.2f}x",
                  f"  the plain graph would take {work.train_samples / rate['plain'] / 3600:.1f} h of training"
                  if "plain" in rate else ""]
        if "pytorch" in rate:
            lines.append(f"kerasmyelin / pytorch ({results['pytorch'][-1]['layout']}): {ours / rate['pytorch']:.2f}x")
        if "nnabla" in rate:
            lines.append(f"kerasmyelin / nnabla: {ours / rate['nnabla']:.2f}x")
    lines += notes
    text = "\n".join(line for line in lines if line is not None)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": text, "results": results, "matmul": matmul,
                                               "inference": infer}, indent=1))


if __name__ == "__main__":
    main()
