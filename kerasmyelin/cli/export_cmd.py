"""``kerasmyelin export``: a trained model as a TensorFlow SavedModel, an ONNX file or a portable .keras."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasmyelin.export.formats import FORMATS

NAME = "export"
HELP = "Write a trained model as a TensorFlow SavedModel, an ONNX file or a .keras file that needs no kerasmyelin."
EXAMPLES = """examples:
  kerasmyelin export main/e100_ensemble --format saved_model --out serving/myelin/1
  kerasmyelin export main/e100_simple --format onnx --out myelin.onnx
  kerasmyelin export runs/ens/fold-0 --format keras --out ens_fold0.keras
RUN is found as 'kerasmyelin predict --model' finds it: a run folder (its model trained on all
infants, RUN/full, or else the mean of its fold models), a fold folder or a .keras file. Every
format takes the ten inputs t1w_a ... t2w_e, float32 (batch, size, size, 1), and returns
age_months (batch, 1); an ensemble is one graph. The inputs are prepared slices, as in the
ten-slice cache: finding the levels and preparing the slices (kerasmyelin prepare / predict) is
not part of the exported graph. The export is reloaded and compared with the Keras model before
it is put in place. The .keras file loads with keras.models.load_model(path, safe_mode=True)
alone. ONNX needs: pip install 'kerasmyelin[onnx]'. Details: docs/export.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    # dest is not "run": main() keeps the command's function in args.run
    p.add_argument("model", metavar="RUN", help="run folder, fold folder or .keras file")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", required=True,
                   help="SavedModel folder (saved_model) or the .onnx / .keras file to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the file at --out, or a SavedModel folder kerasmyelin wrote before")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.export.formats import check_target, export_model
    from kerasmyelin.wholebrain.pipeline import TrainedEstimator

    # An occupied --out fails before the model is loaded, not after.
    inputs = [("model", args.model)]
    check_target(args.out, args.format, args.overwrite, inputs)
    estimator = TrainedEstimator.from_path(args.model)
    inputs += [("model file", list(estimator.files))]
    sources = ", ".join(str(Path(f).absolute()) for f in estimator.files)
    result = export_model(estimator.model, args.out, args.format, overwrite=args.overwrite, source=sources,
                          inputs=inputs)
    print(f"model: {estimator.name} ({', '.join(str(f) for f in estimator.files)})")
    for line in result.describe():
        print(line)
    return 0
