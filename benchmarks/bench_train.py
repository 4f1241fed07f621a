"""Training throughput of the paper's network as kerasmyelin trains it (``fit`` on a repeated
dataset with ``steps_per_epoch``, batch 8), with and without the per-epoch validation.

Usage: python benchmarks/bench_train.py --data cohort/derivatives/tenslice [--epochs 6] [--rounds 2]

Trains on the first 76 infants and validates on the next 13, as one cross-validation fold of the
main job does; the two variants are alternated. Prints the first epoch (tracing) and the median
steady epoch time, samples/s and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ten-slice cache folder")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import kerasmyelin  # noqa: F401  (first: its TensorFlow settings apply before TensorFlow starts)
    from kerasmyelin.data.cache import read_cache
    from kerasmyelin.data.pipeline import make_dataset, steps_per_epoch
    from kerasmyelin.models.myelin_cnn import build_myelin_cnn
    from kerasmyelin.training.config import TrainConfig
    from kerasmyelin.training.objective import compile_for_training

    data = read_cache(args.data)
    train_idx, val_idx = np.arange(76), np.arange(76, 89)
    batch = TrainConfig().batch_size
    steps = steps_per_epoch(train_idx.size, batch)

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    def run(variant: str) -> list[float]:
        keras.utils.set_random_seed(0)
        model = build_myelin_cnn()
        compile_for_training(model, TrainConfig())
        clock = Clock()
        kwargs = {}
        callbacks = [clock]
        if variant == "validated":
            kwargs = {"validation_data": make_dataset(data, val_idx, batch, training=False)}
        model.fit(make_dataset(data, train_idx, batch, training=True), epochs=args.epochs,
                  steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=callbacks, **kwargs)
        return clock.times

    results = {"validated": [], "train only": []}
    first = {"validated": [], "train only": []}
    for r in range(args.rounds):
        for variant in results:
            times = run(variant)
            first[variant].append(times[0])
            results[variant] += times[1:]
            print(f"round {r + 1} {variant:>10}: epochs " + " ".join(f"{t:.2f}" for t in times) + " s", flush=True)
    print(f"\ntensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} cores, "
          f"{train_idx.size} training infants, batch {batch}")
    for variant, label in (("validated", "training + validation (as the main job)"),
                           ("train only", "training alone")):
        epoch = statistics.median(results[variant])
        print(f"{label:<40} first epoch {statistics.median(first[variant]):5.1f} s, "
              f"median epoch {epoch:5.2f} s, {train_idx.size / epoch:5.1f} samples/s")
    ratio = statistics.median(results["validated"]) / statistics.median(results["train only"])
    print(f"epoch time with validation / without: {ratio:.2f}x")


if __name__ == "__main__":
    main()
