"""The prepared ten-slice set on disk: one compact array file and a readable manifest.

``tenslice.npz`` holds one (N, size, size) float16 array per input name (``levels.INPUT_NAMES``)
plus ``participant_id`` and ``age_months``; ``manifest.json`` says where every image came from
(file, sha256, slice index per level) and how it was prepared, so a cache can be checked
against its sources and rebuilt.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import write_bytes_atomic, write_text_atomic
from kerasmyelin.levels import INPUT_NAMES

CACHE_FILE = "tenslice.npz"
MANIFEST_FILE = "manifest.json"
CACHE_VERSION = 1


@dataclass
class TenSliceSet:
    """Prepared images of N infants.

    Attributes:
        images: input name -> (N, size, size) float32.
        participant_id: (N,) str.
        age_months: (N,) float32, corrected age (the label).
        manifest: provenance (see module docstring).
    """

    images: dict[str, np.ndarray]
    participant_id: np.ndarray
    age_months: np.ndarray
    manifest: dict

    def __len__(self) -> int:
        return len(self.participant_id)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every image, pixels."""
        return tuple(self.images[INPUT_NAMES[0]].shape[1:])

    def images_at(self, indices) -> dict[str, np.ndarray]:
        """input name -> (len(indices), H, W) float32 images of the infants at ``indices``
        (as ``ShardedTenSliceSet.images_at``, so callers take either set)."""
        idx = np.asarray(indices, dtype=np.int64)
        return {name: self.images[name][idx] for name in INPUT_NAMES}


def write_cache(folder: str | os.PathLike, images: dict[str, np.ndarray], participant_id, age_months,
                manifest: dict) -> Path:
    """Write a ten-slice set into ``folder`` (each file atomically)."""
    folder = Path(folder)
    missing = [n for n in INPUT_NAMES if n not in images]
    if missing:
        raise ValueError(f"cache is missing input(s) {missing}")
    buf = io.BytesIO()
    arrays = {n: np.asarray(images[n], dtype=np.float16) for n in INPUT_NAMES}
    np.savez(buf, participant_id=np.asarray(participant_id, dtype=str),
             age_months=np.asarray(age_months, dtype=np.float32), **arrays)
    write_bytes_atomic(folder / CACHE_FILE, buf.getvalue())
    manifest = dict(manifest, version=CACHE_VERSION, inputs=list(INPUT_NAMES), subjects_count=len(participant_id))
    write_text_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return folder


def read_cache(folder: str | os.PathLike) -> TenSliceSet:
    """Read a ten-slice set, checking that it is complete and consistent."""
    folder = Path(folder)
    path = folder / CACHE_FILE
    if not path.exists():
        raise InputError(f"no {CACHE_FILE} here; build it with 'kerasmyelin synth' or 'kerasmyelin prepare'", folder)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated or damaged
        raise InputError(f"ten-slice cache is unreadable ({exc})", folder) from None
    missing = [n for n in INPUT_NAMES + ("participant_id", "age_months") if n not in data]
    if missing:
        raise InputError(f"ten-slice cache lacks {missing}", path)
    n = len(data["participant_id"])
    for name in INPUT_NAMES:
        if data[name].ndim != 3 or data[name].shape[0] != n:
            raise InputError(f"{name} has shape {data[name].shape}, expected ({n}, size, size)", path)
    images = {name: data[name].astype(np.float32) for name in INPUT_NAMES}
    return TenSliceSet(images, data["participant_id"], data["age_months"].astype(np.float32), manifest)
