"""The index of a sharded ten-slice set (``shards.json``, beside ``manifest.json``): shard file
names, writing the index and checking one that is read.

The index is written last: a folder with an index is complete. It holds the format version,
the image shape, per shard its file, sha256, record count and size, and per infant
participant_id (session_id where there is one), age_months, shard and the byte offset of its
record. It lists infants shard by shard, and within a shard in record order.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kerasmyelin import __version__
from kerasmyelin.data.cache import MANIFEST_FILE
from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import write_text_atomic
from kerasmyelin.levels import INPUT_NAMES

INDEX_FILE = "shards.json"
INDEX_FORMAT = "kerasmyelin ten-slice shards"
INDEX_VERSION = 1
_SHARD_NAME = re.compile(r"tenslice-(\d{5})-of-(\d{5})\.tfrecord")


def shard_name(number: int, count: int) -> str:
    """``tenslice-00003-of-00064.tfrecord`` for shard 3 of 64 (0-based)."""
    return f"tenslice-{number:05d}-of-{count:05d}.tfrecord"


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
    check_unique(subjects, folder / INDEX_FILE)
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


def check_unique(subjects: list[dict], path: Path) -> None:
    """Refuse an infant (participant id and session) listed twice (``InputError`` naming ``path``)."""
    seen = set()
    for s in subjects:
        key = (s["participant_id"], s.get("session_id", ""))
        if key in seen:
            raise InputError(f"{' '.join(filter(None, key))} is listed twice; every infant (and session) "
                             "must appear once", path)
        seen.add(key)


def load_index(path: Path) -> dict:
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
