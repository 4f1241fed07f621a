"""How closely each export reproduces the Keras model on real prepared slices (docs/export.md).

Usage: python experiments/export_tolerance.py --model RUN_OR_FILE [--model ...] --data CACHE --out DIR

For each model (found as ``kerasmyelin predict --model`` finds it), writes the SavedModel, ONNX
and ``.keras`` exports into DIR, reloads each in its own runtime (``tf.saved_model.load``,
onnxruntime, ``keras.models.load_model(safe_mode=True)``) and prints, as JSON, the largest
|export - reference| in months over every infant of the ten-slice cache, with the export's size
and the seconds it took. Two references: Keras' ``model.predict`` and the graph that
``kerasmyelin predict`` runs (``training.experiment.predict_ages``, batches of 64); they differ
from each other by float32 rounding. ONNX is skipped where onnx, tf2onnx or onnxruntime is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BATCH = 32


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _ages_from_export(fmt: str, path: Path, inputs: dict) -> np.ndarray:
    from kerasmyelin.export.formats import OUTPUT_KEY, SIGNATURE

    n = len(next(iter(inputs.values())))
    batches = [{k: v[i:i + BATCH] for k, v in inputs.items()} for i in range(0, n, BATCH)]
    if fmt == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
        return np.concatenate([serve(**b)[OUTPUT_KEY].numpy() for b in batches])
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run([OUTPUT_KEY], b)[0] for b in batches])
    import keras

    model = keras.models.load_model(str(path), safe_mode=True)
    return np.concatenate([np.asarray(model(b, training=False)) for b in batches])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="run folder, fold folder or .keras file")
    parser.add_argument("--data", required=True, help="ten-slice cache folder")
    parser.add_argument("--out", required=True, help="folder for the exports")
    args = parser.parse_args()

    import importlib.util

    from kerasmyelin.data.cache import read_cache
    from kerasmyelin.data.pipeline import model_inputs
    from kerasmyelin.export.formats import FORMATS, SUFFIXES, export_model
    from kerasmyelin.training.experiment import predict_ages
    from kerasmyelin.wholebrain.estimator import TrainedEstimator

    data = read_cache(args.data)
    inputs = model_inputs(data.images)
    everyone = np.arange(len(data.participant_id))
    has_onnx = all(importlib.util.find_spec(m) for m in ("onnx", "tf2onnx", "onnxruntime"))
    report = {}
    for i, source in enumerate(args.model):
        estimator = TrainedEstimator.from_path(source)
        references = {"keras_predict": np.asarray(estimator.model.predict(inputs, batch_size=BATCH, verbose=0),
                                                  dtype=np.float64).reshape(-1),
                      "kerasmyelin_predict": predict_ages(estimator.model, data, everyone)}
        rows = {}
        for fmt in FORMATS:
            if fmt == "onnx" and not has_onnx:
                rows[fmt] = "skipped: onnx, tf2onnx or onnxruntime not installed"
                continue
            path = Path(args.out) / f"model{i}{SUFFIXES.get(fmt, '')}"
            start = time.perf_counter()
            export_model(estimator.model, path, fmt, overwrite=True, source=source)
            seconds = time.perf_counter() - start
            got = _ages_from_export(fmt, path, inputs).astype(np.float64).reshape(-1)
            rows[fmt] = {**{f"max_abs_diff_months_vs_{name}": float(np.max(np.abs(got - ref)))
                            for name, ref in references.items()},
                         "export_seconds": round(seconds, 1), "megabytes": round(_directory_bytes(path) / 1e6, 1)}
        ages = references["keras_predict"]
        report[source] = {"model": estimator.model.name, "infants": int(everyone.size),
                          "estimates_months": [round(float(ages.min()), 2), round(float(ages.max()), 2)],
                          "keras_vs_kerasmyelin_predict": float(np.max(np.abs(ages - references["kerasmyelin_predict"]))),
                          **rows}
        print(json.dumps({source: report[source]}, indent=1), flush=True)


if __name__ == "__main__":
    main()
