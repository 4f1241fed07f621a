"""Writing a sharded ten-slice set: shards of TFRecords (``data.shard_records``), then the index
(``data.shard_index``), from an in-memory set or one infant at a time (``synth``'s workers)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from kerasmyelin.data.cache import CACHE_FILE, read_cache
from kerasmyelin.data.shard_index import ShardSummary, shard_name, write_index
from kerasmyelin.data.shard_records import FRAME_BYTES, encode_record
from kerasmyelin.errors import ConfigError
from kerasmyelin.io.atomic import atomic_path, sha256_file
from kerasmyelin.io.output_dir import OutputFolder, check_output
from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.runtime import (  # shard-writing workers import TensorFlow themselves
    import_tensorflow_quietly,
)


def split_evenly(n: int, shards: int) -> list[tuple[int, int]]:
    """(start, stop) of ``shards`` contiguous runs that cover range(n), sizes differing by at most 1.

    Raises:
        ConfigError: fewer infants than shards, or no shard.
    """
    if shards < 1:
        raise ConfigError(f"the number of shards must be at least 1, got {shards}")
    if n < shards:
        raise ConfigError(f"{n} infants cannot fill {shards} shards; use at most {n} shards")
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


class _Shard:
    """The object ``shard_writer`` yields: ``add`` appends one infant."""

    def __init__(self, write, image_shape: tuple[int, int]):
        self._write = write
        self.image_shape = tuple(image_shape)
        self.summary = ShardSummary()

    def add(self, participant_id: str, age_months: float, images: dict[str, np.ndarray],
            session_id: str = "") -> None:
        """Append one infant (images: input name -> (H, W) array of the shard's shape)."""
        shape = np.shape(images[INPUT_NAMES[0]])
        if shape != self.image_shape:
            raise ValueError(f"{participant_id}: images are {shape}, this shard holds {self.image_shape}")
        record = encode_record(participant_id, age_months, images)
        entry = {"participant_id": str(participant_id), "age_months": float(np.float32(age_months)),
                 "offset": self.summary.bytes}
        if session_id:
            entry["session_id"] = session_id
        self._write(record)
        self.summary.subjects.append(entry)
        self.summary.bytes += len(record) + FRAME_BYTES


@contextlib.contextmanager
def shard_writer(folder: str | os.PathLike, number: int, count: int, image_shape: tuple[int, int]):
    """Write shard ``number`` of ``count`` into ``folder`` under a temporary name, renamed into
    place when the block ends without error.

    Yields:
        An object with ``add(participant_id, age_months, images, session_id="")`` and, once
        the block has ended, ``summary`` (a ``ShardSummary``).
    """
    tf = import_tensorflow_quietly()

    name = shard_name(number, count)
    with atomic_path(Path(folder) / name) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            shard = _Shard(writer.write, image_shape)
            yield shard
        size = tmp.stat().st_size
        if size != shard.summary.bytes:  # the offsets would be wrong: never write such an index
            raise RuntimeError(f"{name}: TFRecordWriter wrote {size} bytes, {shard.summary.bytes} expected")
        shard.summary.file = name
        shard.summary.sha256 = sha256_file(tmp)


def write_shards(folder: str | os.PathLike, images: dict[str, np.ndarray], participant_id, age_months,
                 manifest: dict, shards: int, session_id=None) -> Path:
    """Write an in-memory ten-slice set as ``shards`` contiguous shards plus the index.

    Args:
        images: input name -> (N, H, W) images.
        participant_id: (N,) ids; age_months: (N,) corrected ages in months.
        session_id: (N,) session labels ("" for none), or None.

    Returns:
        The index file.
    """
    n = len(participant_id)
    image_shape = tuple(np.shape(images[INPUT_NAMES[0]])[1:])
    sessions = [""] * n if session_id is None else list(session_id)
    summaries = []
    for number, (start, stop) in enumerate(split_evenly(n, shards)):
        with shard_writer(folder, number, shards, image_shape) as shard:
            for i in range(start, stop):
                shard.add(participant_id[i], age_months[i], {k: images[k][i] for k in INPUT_NAMES}, sessions[i])
        summaries.append(shard.summary)
    return write_index(folder, summaries, image_shape, manifest)


def shard_cache(cache: str | os.PathLike, out: str | os.PathLike, shards: int, *, overwrite: bool = False) -> Path:
    """Convert a ``tenslice.npz`` cache (from ``prepare`` or ``synth``) into a sharded set at ``out``."""
    inputs = [("--data", cache)]
    check_output(out, "shards", overwrite=overwrite, inputs=inputs)
    data = read_cache(cache)
    split_evenly(len(data), shards)  # refuse before creating anything
    rows = data.manifest.get("subjects")
    aligned = (isinstance(rows, list) and len(rows) == len(data)
               and all(isinstance(r, dict) and r.get("participant_id") == p for r, p in zip(rows, data.participant_id)))
    # prepare --bids with sessions stores one row per session under the infant's id
    sessions = [str(r.get("session_id", "")) for r in rows] if aligned else None
    manifest = dict(data.manifest, sharded_from=str(Path(cache).expanduser().absolute() / CACHE_FILE))
    with OutputFolder(out, "shards", overwrite=overwrite, inputs=inputs, what="kerasmyelin shard") as folder:
        tmp = folder.work
        write_shards(tmp, data.images, data.participant_id, data.age_months, manifest, shards, sessions)
    return Path(out).expanduser().absolute()
