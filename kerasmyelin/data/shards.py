"""The ten-slice set as TFRecord shards, for cohorts too large to hold in memory.

Layout of a sharded set (a folder)::

    tenslice-00000-of-00064.tfrecord ...  one tf.train.Example per infant
    manifest.json                         provenance, as beside tenslice.npz
    shards.json                           the index, written last: format version, image shape,
                                          per shard its file, sha256, record count and size;
                                          per infant participant_id (session_id where there is
                                          one), age_months, shard and the byte offset of its record

A record (``tf.train.Example``) holds ``participant_id`` (bytes), ``age_months`` (float, corrected
age in months), ``image_shape`` (int64 [H, W]) and one bytes feature per input name
(``levels.INPUT_NAMES``): that (H, W) image as little-endian float16 in C order.

The index lists infants shard by shard, and within a shard in record order: an infant's position
in the set is its record number in the stream of all shards in order. ``data.stream`` selects
infants by that position without parsing records; ``ShardedTenSliceSet.images_at`` reads a few
infants by offset. A TFRecord frame is a uint64 length, a masked crc32c of the length, the data
and a masked crc32c of the data (16 bytes around each record), so the offsets follow from the
serialised sizes at write time. TensorFlow writes and checks the frames: no fast crc32c is
importable here without it (neither ``crc32c`` nor ``google_crc32c``; ``isal`` has only crc32).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin import __version__
from kerasmyelin.data.cache import CACHE_FILE, MANIFEST_FILE, TenSliceSet, read_cache
from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.io.atomic import (
    atomic_path,
    sha256_file,
    write_text_atomic,
)
from kerasmyelin.io.output_dir import OutputFolder, check_output
from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.runtime import (  # shard-writing workers import TensorFlow themselves
    import_tensorflow_quietly,
)

INDEX_FILE = "shards.json"
INDEX_FORMAT = "kerasmyelin ten-slice shards"
INDEX_VERSION = 1
FRAME_BYTES = 16  # TFRecord framing around each record: length, its crc, the data's crc
_SHARD_NAME = re.compile(r"tenslice-(\d{5})-of-(\d{5})\.tfrecord")


def shard_name(number: int, count: int) -> str:
    """``tenslice-00003-of-00064.tfrecord`` for shard 3 of 64 (0-based)."""
    return f"tenslice-{number:05d}-of-{count:05d}.tfrecord"


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


def encode_record(participant_id: str, age_months: float, images: dict[str, np.ndarray]) -> bytes:
    """One infant as a serialised ``tf.train.Example`` (see the module docstring).

    Args:
        images: input name -> (H, W) image, stored as float16.
    """
    tf = import_tensorflow_quietly()

    def bytes_feature(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    shape = np.shape(images[INPUT_NAMES[0]])
    features = {"participant_id": bytes_feature(str(participant_id).encode()),
                "age_months": tf.train.Feature(float_list=tf.train.FloatList(value=[float(age_months)])),
                "image_shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(shape)))}
    for name in INPUT_NAMES:
        image = np.ascontiguousarray(images[name], dtype="<f2")
        if image.shape != shape:
            raise ValueError(f"{participant_id}: {name} is {image.shape}, {INPUT_NAMES[0]} is {shape}")
        features[name] = bytes_feature(image.tobytes())
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def half_to_float32(bits):
    """IEEE float16 bit patterns -> float32 values, exactly, with integer ops only.

    TensorFlow's own float16 ops would do, but with oneDNN on (``runtime``) the first of them
    logs an error-level notice on CPUs without AVX-512. Denormal halves are built as integer
    times 2^-24: TensorFlow flushes float32 denormals, which rules out the usual trick (shift,
    then multiply by 2^112).

    Args:
        bits: uint16 tensor of float16 bit patterns.

    Returns:
        float32 tensor of the same shape (every one of the 65536 patterns as numpy converts it).
    """
    tf = import_tensorflow_quietly()

    bits = tf.cast(bits, tf.int32)
    sign = tf.bitwise.left_shift(tf.bitwise.bitwise_and(bits, 0x8000), 16)
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFF)
    shifted = tf.bitwise.left_shift(magnitude, 13)
    normal = tf.bitcast(shifted + ((127 - 15) << 23), tf.float32)  # exponent bias 15 -> 127
    special = tf.bitcast(tf.bitwise.bitwise_or(shifted, 0x7F800000), tf.float32)  # inf, nan
    denormal = tf.cast(magnitude, tf.float32) * 2.0 ** -24
    value = tf.where(magnitude >= 0x7C00, special, tf.where(magnitude >= 0x0400, normal, denormal))
    return tf.bitcast(tf.bitwise.bitwise_or(tf.bitcast(value, tf.int32), sign), tf.float32)


def parse_records(serialized, image_shape: tuple[int, int]):
    """Decode a batch of records with TensorFlow ops (in a ``tf.data`` map or eagerly).

    Args:
        serialized: (B,) tf.string, serialised records.
        image_shape: (H, W) of the set's images.

    Returns:
        (input name -> (B, H, W) float32, (B,) float32 age in months, (B,) participant ids).
    """
    tf = import_tensorflow_quietly()

    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in INPUT_NAMES}
    spec.update(participant_id=tf.io.FixedLenFeature([], tf.string),
                age_months=tf.io.FixedLenFeature([], tf.float32),
                image_shape=tf.io.FixedLenFeature([2], tf.int64))
    parsed = tf.io.parse_example(serialized, spec)
    images = {name: half_to_float32(tf.reshape(tf.io.decode_raw(parsed[name], tf.uint16, little_endian=True),
                                               (-1, *image_shape)))
              for name in INPUT_NAMES}
    return images, parsed["age_months"], parsed["participant_id"]


@dataclass
class ShardSummary:
    """What the index records of one written shard.

    Attributes:
        file: the shard's file name (in the set's folder).
        sha256: hex digest of the file.
        bytes: file size.
        subjects: one dict per record, in record order: participant_id, age_months, offset
            (bytes from the start of the file to the record's frame), session_id when not "".
    """

    file: str = ""
    sha256: str = ""
    bytes: int = 0
    subjects: list[dict] = field(default_factory=list)


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


def write_index(folder: str | os.PathLike, shards: list[ShardSummary], image_shape: tuple[int, int],
                manifest: dict) -> Path:
    """Write ``manifest.json``, then the index ``shards.json`` (last: a folder with an index is complete).

    Args:
        shards: the summaries of every shard, in shard order.
        image_shape: (H, W) of every image.
        manifest: provenance (as for ``cache.write_cache``).

    Raises:
        InputError: an infant (participant id and session) twice.
    """
    folder = Path(folder)
    subjects = []
    for number, shard in enumerate(shards):
        subjects += [dict(s, shard=number) for s in shard.subjects]
    _check_unique(subjects, folder / INDEX_FILE)
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "written_by": f"kerasmyelin {__version__}",
             "image_shape": list(image_shape), "dtype": "float16", "inputs": list(INPUT_NAMES),
             "shards": [{"file": s.file, "sha256": s.sha256, "records": len(s.subjects), "bytes": s.bytes}
                        for s in shards],
             "subjects": subjects}
    manifest = dict(manifest, version=INDEX_VERSION, inputs=list(INPUT_NAMES), subjects_count=len(subjects),
                    storage=INDEX_FILE)
    write_text_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    # One infant a line: readable, and 10,000 infants stay ~1 MB.
    lines = ",\n".join(" " + json.dumps(s, sort_keys=True) for s in subjects)
    text = json.dumps({k: v for k, v in index.items() if k != "subjects"}, indent=1, sort_keys=True)
    write_text_atomic(folder / INDEX_FILE, text[:-2] + f',\n "subjects": [\n{lines}\n ]\n}}\n')
    return folder / INDEX_FILE


def _check_unique(subjects: list[dict], path: Path) -> None:
    seen = set()
    for s in subjects:
        key = (s["participant_id"], s.get("session_id", ""))
        if key in seen:
            raise InputError(f"{' '.join(filter(None, key))} is listed twice; every infant (and session) "
                             "must appear once", path)
        seen.add(key)


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


def _load_index(path: Path) -> dict:
    """``shards.json``, parsed and checked field by field (``InputError`` naming it otherwise)."""
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"shard index is unreadable ({exc})", path) from None

    def need(ok: bool, problem: str) -> None:
        if not ok:
            raise InputError(f"damaged shard index: {problem}", path)

    need(isinstance(index, dict) and index.get("format") == INDEX_FORMAT, f"format is not {INDEX_FORMAT!r}")
    if index.get("version") != INDEX_VERSION:
        raise InputError(f"shard index version {index.get('version')!r}; this kerasmyelin reads version "
                         f"{INDEX_VERSION}", path)
    shape = index.get("image_shape")
    need(isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape),
         f"image_shape {shape!r} is not two positive integers")
    need(index.get("inputs") == list(INPUT_NAMES) and index.get("dtype") == "float16",
         f"inputs must be {list(INPUT_NAMES)} stored as float16")
    shards = index.get("shards")
    need(isinstance(shards, list) and len(shards) > 0, "no shards listed")
    for k, s in enumerate(shards):
        need(isinstance(s, dict) and isinstance(s.get("file"), str) and _SHARD_NAME.fullmatch(s["file"]) is not None,
             f"shard {k} has no valid file name (tenslice-NNNNN-of-NNNNN.tfrecord)")
        need(isinstance(s.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) is not None,
             f"{s['file']}: sha256 is not 64 hex digits")
        need(all(isinstance(s.get(key), int) and s[key] > 0 for key in ("records", "bytes")),
             f"{s['file']}: records and bytes must be positive integers")
    subjects = index.get("subjects")
    need(isinstance(subjects, list), "no subjects list")
    for n, s in enumerate(subjects):
        need(isinstance(s, dict) and isinstance(s.get("participant_id"), str)
             and isinstance(s.get("age_months"), (int, float)) and isinstance(s.get("shard"), int)
             and isinstance(s.get("offset"), int) and isinstance(s.get("session_id", ""), str),
             f"subject {n} lacks participant_id, age_months, shard or offset")
    return index


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
    index = _load_index(path)
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
    _check_unique(subjects, path)
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
