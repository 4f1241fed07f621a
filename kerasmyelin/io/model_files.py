"""Model files kerasmyelin will load: its own ``.keras`` archives, checked before Keras sees them.

A ``.keras`` archive is a zip of ``config.json`` (the graph: every layer's class and settings),
``model.weights.h5`` and ``metadata.json``. Keras rebuilds the graph from the config, so a crafted
file can name classes that run code (a ``Lambda`` layer carries marshalled Python). Three checks
run before ``keras.models.load_model`` is called, and Keras itself then runs with ``safe_mode``:

1. **Allow-list.** Every ``class_name`` in the config (layers, initialisers, dtype policies, the
   compile config's optimizer) must be one this project builds, from a module under ``keras`` or
   ``kerasmyelin``. Anything else is refused by name.
2. **Checksum manifest.** Each folder holding model files has a ``SHA256SUMS`` file (the format of
   ``sha256sum``) listing them; it is updated whenever kerasmyelin saves a model there and checked
   on every load. A model file it does not list, or one whose bytes changed, is refused.
3. **Shape of the archive.** It must be a zip holding exactly the three members Keras writes,
   plus, in files kerasmyelin wrote since it began recording them, ``kerasmyelin.json``: the
   model's record (``model_record``: its preparation settings, trained ages, norms), which Keras
   ignores. It is data only, read as JSON.

A model from an older kerasmyelin, or one copied without its manifest, can be admitted on purpose
with ``kerasmyelin trust FILE``: the allow-list check runs, the archive's CRC-32 checksums are
tested, Keras builds the model and loads its weights (in ``safe_mode``), and only then is the
file's hash recorded. A damaged copy (a changed byte, a truncated download) is refused.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path

from kerasmyelin.errors import InputError
from kerasmyelin.io.atomic import sha256_file, write_text_atomic

MANIFEST = "SHA256SUMS"
ARCHIVE_MEMBERS = frozenset({"config.json", "model.weights.h5", "metadata.json"})
RECORD_MEMBER = "kerasmyelin.json"  # optional: the model's record (model_record)
MAX_RECORD_BYTES = 4 * 1024 * 1024  # a record with norms is ~20 kB
# Everything the network, the ensemble, the fold average, the site calibration (Rescaling) and the
# training compile config use.
ALLOWED_CLASSES = frozenset({
    "Functional", "InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Concatenate", "Average",
    "EnsembleCombiner", "Rescaling", "GlorotUniform", "GlorotNormal", "Zeros", "DTypePolicy", "FloatDTypePolicy",
    "__keras_tensor__", "Adam", "FusedAdam",
})
ALLOWED_MODULES = ("keras", "kerasmyelin")
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # the paper ensemble's config is ~0.3 MB


def _walk_classes(node, found: set[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        if "class_name" in node:
            found.add((str(node["class_name"]), str(node.get("module") or "")))
        for value in node.values():
            _walk_classes(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk_classes(value, found)


def check_archive(path: str | os.PathLike) -> dict:
    """Refuse a ``.keras`` file that is not a plain archive of the project's layer types.

    Returns:
        The parsed ``config.json``.

    Raises:
        InputError: naming the file and the foreign member or class.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        try:
            with open(path, "rb") as fh:
                truncated = fh.read(4) == b"PK\x03\x04"
        except OSError as exc:
            raise InputError(f"cannot be read ({exc.strerror or exc})", path) from None
        raise InputError("not a .keras archive (not a zip file" + ("; it starts as one, so it is probably truncated "
                         "or damaged: copy it again" if truncated else "") + ")", path)
    with zipfile.ZipFile(path) as z:
        members = {i.filename for i in z.infolist()}
        if members - {RECORD_MEMBER} != ARCHIVE_MEMBERS:
            extra = sorted(members - ARCHIVE_MEMBERS - {RECORD_MEMBER})
            missing = sorted(ARCHIVE_MEMBERS - members)
            raise InputError(f"not an archive kerasmyelin writes (unexpected members {extra}, missing {missing})", path)
        if z.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
            raise InputError("config.json is implausibly large for this network", path)
        try:
            config = json.loads(z.read("config.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"config.json cannot be read ({exc})", path) from None
    found: set[tuple[str, str]] = set()
    _walk_classes(config, found)
    foreign = sorted(name for name, module in found if name not in ALLOWED_CLASSES)
    if foreign:
        hint = " (a Lambda layer carries Python code)" if "Lambda" in foreign else ""
        raise InputError(f"holds layer or object types kerasmyelin never writes: {', '.join(foreign)}{hint}; "
                         "refusing to load it", path)
    modules = sorted({m for _, m in found if m and m.split(".")[0] not in ALLOWED_MODULES})
    if modules:
        raise InputError(f"refers to code outside keras and kerasmyelin ({', '.join(modules)}); refusing to load it",
                         path)
    return config


def embed_record(path: str | os.PathLike, text: str) -> None:
    """Put (or replace) the record member in the ``.keras`` archive at ``path``, in place.

    For a file not yet in place (a temporary sibling): the checksum is taken after this."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        kept = [(i, z.read(i.filename)) for i in z.infolist() if i.filename != RECORD_MEMBER]
    tmp = path.with_name(path.name + ".record.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as out:
            for info, data in kept:
                out.writestr(info, data)
            out.writestr(RECORD_MEMBER, text, compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_embedded_record(path: str | os.PathLike) -> str | None:
    """The record member's text of the ``.keras`` archive at ``path``; None when it has none."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            if RECORD_MEMBER not in z.namelist():
                return None
            if z.getinfo(RECORD_MEMBER).file_size > MAX_RECORD_BYTES:
                raise InputError(f"{RECORD_MEMBER} is implausibly large for a model record", path)
            return z.read(RECORD_MEMBER).decode("utf-8")
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, zlib.error) as exc:
        raise InputError(f"its {RECORD_MEMBER} cannot be read ({exc})", path) from None


def read_manifest(folder: str | os.PathLike) -> dict[str, str]:
    """File name -> hex sha256 from ``folder/SHA256SUMS`` ({} when there is none)."""
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"checksum manifest cannot be read ({exc})", path) from None
    entries = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or "/" in name:
            raise InputError(f"line {n} is not '<sha256>  <file name>'", path)
        entries[name] = digest
    return entries


def record(path: str | os.PathLike) -> Path:
    """Add or update ``path``'s entry in its folder's manifest (written atomically)."""
    path = Path(path)
    entries = read_manifest(path.parent)
    entries[path.name] = sha256_file(path)
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))
    return write_text_atomic(path.parent / MANIFEST, text)


def verify(path: str | os.PathLike) -> None:
    """Refuse a model file its folder's manifest does not list, or whose bytes changed."""
    path = Path(path)
    expected = read_manifest(path.parent).get(path.name)
    if expected is None:
        raise InputError(f"not listed in {path.parent / MANIFEST}, so kerasmyelin did not write it here; "
                         f"if you trust it, run 'kerasmyelin trust {path}'", path)
    actual = sha256_file(path)
    if actual != expected:
        raise InputError(f"sha256 {actual[:12]}... differs from the {expected[:12]}... recorded in "
                         f"{MANIFEST}: the file changed after kerasmyelin wrote it", path)


def check_integrity(path: str | os.PathLike) -> None:
    """Refuse an archive whose members fail their CRC-32 checksum (bytes changed in a copy).

    Every member is read and decompressed once (``zipfile.ZipFile.testzip``).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise InputError(f"the archive is damaged ({exc}); copy it again", path) from None
    if bad is not None:
        raise InputError(f"the archive is damaged: {bad} fails its CRC-32 checksum; copy it again", path)


# Keras warns, instead of failing, when some layers' weights are not in the file: those layers
# keep their random initial weights.
_WEIGHTS_NOT_LOADED = ("could not be loaded", "freshly-initialized", "skipping variable loading")


def check_loads(path: str | os.PathLike) -> None:
    """Refuse an archive Keras cannot build in ``safe_mode``, or whose weights do not all load."""
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _keras_load(path)
    except Exception as exc:  # noqa: BLE001 -- whatever Keras or h5py raise, the file does not load
        text = " ".join(str(exc).split())
        raise InputError(f"Keras cannot load it ({type(exc).__name__}: {text[:300]}); refusing to trust it",
                         path) from None
    lost = [str(w.message) for w in caught if any(k in str(w.message).lower() for k in _WEIGHTS_NOT_LOADED)]
    if lost:
        raise InputError(f"its weights do not all load ({' '.join(lost[0].split())[:300]}); refusing to trust it",
                         path)


def trust(path: str | os.PathLike) -> str:
    """Admit a model file on purpose, then record its hash. Returns the hash.

    Checks, in order: the layer allow-list (``check_archive``), the zip's CRC-32 checksums
    (``check_integrity``) and that Keras builds the model and loads its weights (``check_loads``).
    Nothing is recorded when one fails.

    Raises:
        InputError: naming the file and the failed check.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("not found or not a file", path)
    check_archive(path)
    check_integrity(path)
    check_loads(path)
    record(path)
    return read_manifest(path.parent)[path.name]


def _keras_load(path: Path):
    """Keras ``load_model`` in ``safe_mode`` with the project's custom layers; no checks here."""
    import keras

    from kerasmyelin.models.ensemble import register_custom_objects

    register_custom_objects()
    return keras.models.load_model(str(path), compile=False, safe_mode=True)


def load_keras_model(path: str | os.PathLike):
    """A ``.keras`` file kerasmyelin wrote: manifest, allow-list, then Keras in ``safe_mode``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path)
    verify(path)
    check_archive(path)
    return _keras_load(path)
