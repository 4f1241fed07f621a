"""The ten-slice set as TFRecord shards, for cohorts too large to hold in memory: opening and reading one.

Layout of a sharded set (a folder)::

    tenslice-00000-of-00064.tfrecord ...  one tf.train.Example per infant (``data.shard_records``)
    manifest.json                         provenance, as beside tenslice.npz
    shards.json                           the index, written last (``data.shard_index``)

Sets are written by ``data.shard_writer``. An infant's position in the set is its record number
in the stream of all shards in order. ``data.stream`` selects infants by that position without
parsing records; ``ShardedTenSliceSet.images_at`` reads a few infants by offset.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin.data.cache import CACHE_FILE, MANIFEST_FILE, TenSliceSet, read_cache
from kerasmyelin.data.shard_index import INDEX_FILE, check_unique, load_index
from kerasmyelin.data.shard_records import parse_records
from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import sha256_file
from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.runtime import import_tensorflow_quietly


@dataclass
class ShardedTenSliceSet:
    """Index of a sharded ten-slice set; images are read from the shards when asked for.

    Attributes:
        folder: the set's folder.
        participant_id: (N,) str.
        age_months: (N,) float32 corrected age in months (the label).
        manifest: provenance.
        image_shape: (H, W) of every image, pixels.
        shard_files: path of each shard file.
        shard: (N,) int64 shard number of each infant.
        offset: (N,) int64 byte offset of each infant's record in its shard.
        shard_sha256: hex sha256 of each shard file (checked by ``verify``).
        session_id: (N,) str, "" where the cache has no sessions.
    """

    folder: Path
    participant_id: np.ndarray
    age_months: np.ndarray
    manifest: dict
    image_shape: tuple[int, int]
    shard_files: tuple[Path, ...]
    shard: np.ndarray
    offset: np.ndarray
    shard_sha256: tuple[str, ...]
    session_id: np.ndarray
    _readers: dict = field(default_factory=dict, repr=False, compare=False)
    # A reader keeps a file position: one read at a time (a tf.data generator thread and the
    # main thread may both read).
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.participant_id)

    @property
    def first_position(self) -> np.ndarray:
        """(shards,) int64 position of each shard's first record (the index is in shard order)."""
        return np.searchsorted(self.shard, np.arange(len(self.shard_files))).astype(np.int64)

    def records(self, indices) -> list[bytes]:
        """The serialised records of the infants at ``indices``, in that order, read by offset.

        Raises:
            InputError: a damaged or truncated record, naming its shard file.
        """
        tf = import_tensorflow_quietly()
        from tensorflow.python.lib.io.tf_record import tf_record_random_reader

        out = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            k = int(self.shard[i])
            path = self.shard_files[k]
            try:
                with self._lock:
                    if k not in self._readers:
                        self._readers[k] = tf_record_random_reader(str(path))
                    record, _ = self._readers[k].read(int(self.offset[i]))
            except (tf.errors.OpError, OSError, IndexError, RuntimeError) as exc:
                raise InputError(f"cannot read the record of {self.participant_id[i]} at byte {self.offset[i]} "
                                 f"(damaged or truncated shard: {str(exc).splitlines()[0]})", path) from None
            out.append(record)
        return out

    def images_at(self, indices) -> dict[str, np.ndarray]:
        """input name -> (len(indices), H, W) float32 images of the infants at ``indices``."""
        tf = import_tensorflow_quietly()

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return {name: np.zeros((0, *self.image_shape), np.float32) for name in INPUT_NAMES}
        images, _, ids = parse_records(tf.constant(self.records(idx)), self.image_shape)
        got = ids.numpy().astype(str)
        if not np.array_equal(got, self.participant_id[idx]):
            bad = int(np.flatnonzero(got != self.participant_id[idx])[0])
            raise InputError(f"the record at byte {self.offset[idx[bad]]} is {got[bad]}, the index says "
                             f"{self.participant_id[idx[bad]]}: the shard does not match {INDEX_FILE}",
                             self.shard_files[self.shard[idx[bad]]])
        return {name: images[name].numpy() for name in INPUT_NAMES}

    def verify(self) -> None:
        """Check every shard's sha256 against the index (reads the whole set).

        Raises:
            InputError: naming the first shard that differs.
        """
        for path, expected in zip(self.shard_files, self.shard_sha256):
            if sha256_file(path) != expected:
                raise InputError(f"sha256 differs from the one in {INDEX_FILE}: the shard was changed or "
                                 "damaged after it was written", path)


def read_shards(folder: str | os.PathLike) -> ShardedTenSliceSet:
    """Open a sharded set: the index, then cheap checks of every shard.

    Opening checks each shard's presence and size against the index and reads its first record
    (its CRCs, participant id and image shape): a missing, truncated, swapped or foreign shard
    fails here, in milliseconds. The sha256 of every shard is checked by ``verify`` (``kerasmyelin
    shard --verify``), not here: it means reading the whole set (3.3 GB for 10,000 infants at
    128x128), and a damaged record is caught anyway when it is read, by its CRC.

    Raises:
        InputError: naming the index or the shard file and the problem.
    """
    folder = Path(folder)
    path = folder / INDEX_FILE
    index = load_index(path)
    shards, subjects = index["shards"], index["subjects"]
    shard_of = np.array([s["shard"] for s in subjects], dtype=np.int64)
    offset = np.array([s["offset"] for s in subjects], dtype=np.int64)
    if shard_of.size and (shard_of.min() < 0 or shard_of.max() >= len(shards)):
        raise InputError(f"damaged shard index: a subject names shard {shard_of.max()} of 0-{len(shards) - 1}", path)
    if np.any(np.diff(shard_of) < 0):
        raise InputError("damaged shard index: subjects are not listed shard by shard", path)
    counts = np.bincount(shard_of, minlength=len(shards))
    for k, s in enumerate(shards):
        if counts[k] != s["records"]:
            raise InputError(f"{s['file']} holds {s['records']} records but {counts[k]} subjects name it", path)
        mine = offset[shard_of == k]
        if mine[0] != 0 or np.any(np.diff(mine) <= 0) or mine[-1] >= s["bytes"]:
            raise InputError(f"damaged shard index: the offsets of {s['file']} do not start at 0 and rise "
                             "within the file", path)
    check_unique(subjects, path)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"manifest is unreadable ({exc})", folder / MANIFEST_FILE) from None
    data = ShardedTenSliceSet(
        folder=folder, participant_id=np.array([s["participant_id"] for s in subjects], dtype=str),
        age_months=np.array([s["age_months"] for s in subjects], dtype=np.float32), manifest=manifest,
        image_shape=tuple(index["image_shape"]), shard_files=tuple(folder / s["file"] for s in shards),
        shard=shard_of, offset=offset, shard_sha256=tuple(s["sha256"] for s in shards),
        session_id=np.array([s.get("session_id", "") for s in subjects], dtype=str))
    for s, shard_path in zip(shards, data.shard_files):
        try:
            size = shard_path.stat().st_size
        except OSError:
            raise InputError(f"missing: {INDEX_FILE} lists it", shard_path) from None
        if size != s["bytes"]:
            raise InputError(f"{'truncated' if size < s['bytes'] else 'too long'}: {size} bytes, "
                             f"{INDEX_FILE} says {s['bytes']}", shard_path)
    _check_first_records(data)
    return data


def _check_first_records(data: ShardedTenSliceSet) -> None:
    """Read each shard's first record: frame CRCs, participant id and image shape as indexed."""
    tf = import_tensorflow_quietly()

    first = data.first_position
    for k, pos in enumerate(first):
        record = data.records([pos])
        parsed = tf.io.parse_single_example(record[0], {
            "participant_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "image_shape": tf.io.FixedLenFeature([2], tf.int64, default_value=[0, 0])})
        shape = tuple(parsed["image_shape"].numpy().tolist())
        pid = parsed["participant_id"].numpy().decode(errors="replace")
        if shape != data.image_shape:
            raise InputError(f"images are {shape[0]}x{shape[1]}, {INDEX_FILE} says "
                             f"{data.image_shape[0]}x{data.image_shape[1]}", data.shard_files[k])
        if pid != data.participant_id[pos]:
            raise InputError(f"first record is {pid!r}, {INDEX_FILE} says {data.participant_id[pos]!r}: "
                             "this is not the shard the index was written with", data.shard_files[k])


def tenslice_file(folder: str | os.PathLike) -> Path:
    """The file that identifies a ten-slice set: the shard index (which holds every shard's sha256)
    where there is one, else ``tenslice.npz``."""
    folder = Path(folder)
    return folder / INDEX_FILE if (folder / INDEX_FILE).exists() else folder / CACHE_FILE


def open_tenslice(folder: str | os.PathLike) -> TenSliceSet | ShardedTenSliceSet:
    """A ten-slice set, in memory (``tenslice.npz``) or sharded (``shards.json``), whichever the folder holds."""
    folder = Path(folder)
    if (folder / INDEX_FILE).exists():
        return read_shards(folder)
    if not (folder / CACHE_FILE).exists():
        raise InputError(f"no {CACHE_FILE} or {INDEX_FILE} (sharded set) here; build one with 'kerasmyelin synth' "
                         "or 'kerasmyelin prepare'", folder)
    return read_cache(folder)
