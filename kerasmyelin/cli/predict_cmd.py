"""``kerasmyelin predict``: estimate the age of prepared ten-slice infants with a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasmyelin.errors import InputError

NAME = "predict"
HELP = "Estimate myelination age (months) for infants in a prepared ten-slice cache with a trained model."
EXAMPLES = """examples:
  kerasmyelin predict --model runs/ens --data cohort/derivatives/tenslice --out predictions.csv
  kerasmyelin predict --model runs/ens/fold-0/model.keras --data prep --subjects sub-003,sub-017
--model takes a run folder (its model trained on all infants, runs/NAME/full), a fold folder or a .keras
file written by kerasmyelin. Prepare a cache from NIfTI files with 'kerasmyelin prepare'.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run folder, fold folder or .keras file")
    p.add_argument("--data", required=True, help="ten-slice cache folder (tenslice.npz + manifest.json)")
    p.add_argument("--subjects", help="comma-separated participant ids (default: all)")
    p.add_argument("--out", help="CSV to write (default: print only)")


def resolve_model_file(path: str) -> Path:
    """A run folder, a fold folder or a .keras file -> the .keras file to load."""
    from kerasmyelin.training.experiment import FULL, MODEL_FILE

    p = Path(path).expanduser()
    for candidate in (p, p / MODEL_FILE, p / FULL / MODEL_FILE):
        if candidate.is_file() and candidate.suffix == ".keras":
            return candidate
    if p.is_dir():
        raise InputError(f"no trained model here (looked for {MODEL_FILE} and {FULL}/{MODEL_FILE}); "
                         f"train one with 'kerasmyelin train --out {p}'", p)
    raise InputError("not found or not a .keras file", p)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from kerasmyelin.data.cache import read_cache
    from kerasmyelin.training.experiment import predict_ages, write_predictions
    from kerasmyelin.training.fit import load_trained

    model_file = resolve_model_file(args.model)
    data = read_cache(args.data)
    ids = data.participant_id.tolist()
    if args.subjects:
        wanted = [s.strip() for s in args.subjects.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in ids]
        if unknown:
            raise InputError(f"no such participant(s): {', '.join(unknown)}", Path(args.data))
        positions = np.array([ids.index(s) for s in wanted])
    else:
        positions = np.arange(len(ids))
    try:
        model = load_trained(model_file)
    except Exception as exc:  # Keras raises many types for a foreign or damaged file
        raise InputError(f"cannot load this model ({type(exc).__name__}: {exc})", model_file) from None
    from kerasmyelin.levels import INPUT_NAMES
    from kerasmyelin.training.experiment import model_input_names

    names = sorted(model_input_names(model))
    if names != sorted(INPUT_NAMES) or tuple(model.outputs[0].shape[1:]) != (1,):
        raise InputError(f"not a myelination-age model (inputs {names}, output shape "
                         f"{tuple(model.outputs[0].shape)}; expected the ten inputs {list(INPUT_NAMES)} "
                         f"and one age)", model_file)
    size = model.inputs[0].shape[1]
    first = next(iter(data.images.values()))
    if first.shape[1] != size:
        raise InputError(f"the model takes {size}x{size} images but the cache holds "
                         f"{first.shape[1]}x{first.shape[2]}", Path(args.data))
    estimates = predict_ages(model, data, positions)
    columns = {"participant_id": data.participant_id[positions].tolist(),
               "age_months": data.age_months[positions].astype(np.float64),
               "predicted_months": estimates}
    for pid, age, est in zip(columns["participant_id"], columns["age_months"], estimates):
        print(f"{pid}\tage {age:6.2f}\testimated {est:6.2f} months")
    if args.out:
        write_predictions(Path(args.out), columns)
        print(f"wrote {args.out}")
    return 0
