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
not part of the exported graph, so every export carries the model's record, kerasmyelin.json:
the preparation settings to prepare slices with, the image size, the input names, the trained
ages and the run's norms (SavedModel: assets.extra/kerasmyelin.json; ONNX: metadata_props
"kerasmyelin"; .keras: a member of the archive). A model from before records is refused unless
--prep gives its settings. The export is reloaded and compared with the Keras model before
it is put in place. The .keras file loads with keras.models.load_model(path, safe_mode=True)
alone. ONNX needs: pip install 'kerasmyelin[onnx]'. Details: docs/export.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    # dest is not "run": main() keeps the command's function in args.run
    p.add_argument("model", metavar="RUN", help="run folder, fold folder or .keras file")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", required=True,
                   help="SavedModel folder (saved_model) or the .onnx / .keras file to write")
    p.add_argument("--prep", metavar="SETTINGS",
                   help="only for a model from before models carried their preparation settings (refused "
                        "otherwise): 'paper', the ten-slice cache it was trained on, or a YAML file of the settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the file at --out, or a SavedModel folder kerasmyelin wrote before")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.cli.predict_cmd import prep_argument
    from kerasmyelin.export.formats import check_target, export_model
    from kerasmyelin.wholebrain.estimator import TrainedEstimator

    # An occupied --out fails before the model is loaded, not after.
    inputs = [("model", args.model)]
    check_target(args.out, args.format, args.overwrite, inputs)
    estimator = TrainedEstimator.from_path(args.model, prep_argument(args))
    inputs += [("model file", list(estimator.files))]
    sources = ", ".join(str(Path(f).absolute()) for f in estimator.files)
    result = export_model(estimator.model, args.out, args.format, overwrite=args.overwrite, source=sources,
                          inputs=inputs, record=estimator.record)
    print(f"model: {estimator.name} ({', '.join(str(f) for f in estimator.files)})")
    r = estimator.record
    ages = r.trained_age_range_months
    print(f"record (kerasmyelin.json): preparation {r.prep_config.get('intensity_reference', 'head')} scaling, "
          f"image size {r.image_size}" + (f", trained on {ages[0]:.1f} to {ages[1]:.1f} months" if ages else "")
          + (", with the run's norms" if r.normative is not None else ", no norms (no interval or grade)"))
    for line in result.describe():
        print(line)
    return 0
