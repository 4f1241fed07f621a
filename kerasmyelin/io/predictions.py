"""The estimates table: one row per infant, its age and the model's estimate(s), in months.

A run's folds write it (``predictions.csv``), and ``predict --data`` writes it for a user.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import write_bytes_atomic


def write_predictions(path: Path, columns: dict[str, list]) -> Path:
    """A CSV with one row per infant (ages in months, 4 decimals), written atomically."""
    names = list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*(columns[n] for n in names)):
        writer.writerow([f"{v:.4f}" if isinstance(v, (float, np.floating)) else v for v in row])
    return write_bytes_atomic(path, buf.getvalue().encode())


def looks_like_predictions(path: Path) -> bool:
    """Whether ``path`` starts like a predictions table kerasmyelin writes (``--overwrite`` may replace it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).split(b"\n", 1)[0]
    except OSError:
        return False
    return head.startswith(b"participant_id,") and b"predicted_months" in head


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """Columns of a predictions CSV: participant_id as str, everything else as float."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read predictions ({exc.strerror or exc})", path) from None
    if not rows or "participant_id" not in rows[0]:
        raise InputError("not a predictions file (no participant_id column or no rows)", path)
    out = {"participant_id": np.array([r["participant_id"] for r in rows])}
    for key in rows[0]:
        if key != "participant_id":
            try:
                out[key] = np.array([float(r[key]) for r in rows])
            except ValueError:
                raise InputError(f"column {key} holds a non-number", path) from None
    return out
