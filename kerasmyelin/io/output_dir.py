"""Output folders: which ones kerasmyelin may replace, and how it replaces them without loss.

Every command that writes an ``--out`` folder goes through :class:`OutputFolder`:

- **Apart from the inputs.** ``--out`` equal to, inside or above any input (a BIDS root, the
  files of a CSV list, ``--t1``/``--t2``, a cache, a run, a config) is refused before any work,
  naming both paths, as rsync, git and BIDS apps do. The one place inside an input that is
  allowed is a BIDS root's ``derivatives/`` folder, BIDS's own place for outputs.
- **Replaced only when it is ours, of the same kind.** A non-empty folder is replaced (with
  ``--overwrite``) only if it holds :data:`MARKER`, written by kerasmyelin for that purpose, and
  the marker names the same kind of output (a predict output is never replaced by a cache). No
  other file is taken as proof: a synthetic cohort's ``dataset_description.json`` mentions
  kerasmyelin, and a user's dataset built on it is still the user's.
- **Atomic.** The new output is built in the sibling ``<out>.kerasmyelin-partial`` and, once
  complete, exchanged with the old one in one ``renameat2(RENAME_EXCHANGE)`` (where the file
  system lacks it, two renames that put the old one inside the new one, finished by the next run
  if a kill falls between them). The old one
  is deleted only after the new one is in place. A kill at any moment leaves the old or the new
  output complete, plus at most one leftover with a ``.kerasmyelin-`` name that the next run
  reports and removes (or, for a batch, continues with ``--resume``).
- **One writer.** The first command takes the lock ``.<out>.kerasmyelin.lock`` beside the
  folder at its start; a second command on the same ``--out`` is refused at once, naming the
  first. A lock whose process died is taken over (``io.job_lock``).
- **Writable, checked first.** A folder that cannot be created is reported before the work.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kerasmyelin.errors import OutputError

MARKER = ".kerasmyelin-output.json"
PARTIAL_SUFFIX = ".kerasmyelin-partial"
OLD_SUFFIX = ".kerasmyelin-old"
PREVIOUS = ".kerasmyelin-previous"  # the old output, inside the new one, while it is deleted (no renameat2)

# The kinds of output, as the marker names them, and how messages describe them.
KINDS = {
    "predict": "batch of predictions (kerasmyelin predict --bids/--csv)",
    "subject": "result for one infant (kerasmyelin predict --t1/--t2)",
    "cohort": "synthetic cohort (kerasmyelin synth)",
    "cache": "ten-slice cache (kerasmyelin prepare)",
    "shards": "sharded ten-slice set (kerasmyelin shard)",
    "run": "run folder (kerasmyelin train/evaluate)",
    "reproduce": "reproduction folder (kerasmyelin reproduce)",
    "pretrain": "model for real scans (kerasmyelin pretrain)",
    "savedmodel": "SavedModel export (kerasmyelin export)",
    "calibrated": "site-calibrated model (kerasmyelin calibrate)",
    "nnc": "Neural Network Console data set (kerasmyelin export-nnc)",
    "dicom": "DICOM conversion (kerasmyelin convert-dicom)",
}


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def old_path(out: Path) -> Path:
    return out.with_name(out.name + OLD_SUFFIX)


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.kerasmyelin.lock")


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The output marker of ``folder`` (a dict with at least ``kind``), or None."""
    try:
        value = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("kind") in KINDS else None


def output_kind(folder: str | os.PathLike) -> str | None:
    """The kind of kerasmyelin output ``folder`` is, by its marker; None if it has none."""
    marker = read_marker(folder)
    return None if marker is None else marker["kind"]


def write_marker(folder: Path, kind: str, *, complete: bool, settings: dict | None = None) -> None:
    import kerasmyelin
    from kerasmyelin.io.atomic import write_text_atomic

    # No time stamp: the same inputs give byte-identical outputs (synth's seeded cohorts).
    marker = {"kind": kind, "written_by": f"kerasmyelin {kerasmyelin.__version__}", "complete": complete}
    if settings:
        marker["settings"] = settings
    write_text_atomic(folder / MARKER, json.dumps(marker, indent=1) + "\n")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _describe(inputs) -> list[tuple[str, Path, Path]]:
    """(label, path as given, real path) for every input given."""
    out = []
    for label, value in inputs:
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend((label, Path(v).expanduser().absolute(), _real(v)) for v in values if v is not None)
    return out


def check_apart(out: str | os.PathLike, inputs: Iterable[tuple[str, object]],
                bids_roots: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an ``out`` that is, holds or lies inside one of ``inputs``.

    Args:
        out: the output folder or file.
        inputs: (label, path or list of paths) pairs: "--bids", "a file of the CSV list", ...
        bids_roots: inputs that are BIDS roots, inside whose ``derivatives/`` folder ``out`` may lie.

    Raises:
        OutputError: naming both paths.
    """
    given = Path(out).expanduser().absolute()
    real = _real(out)
    allowed = [_real(r) / "derivatives" for r in bids_roots]
    for label, shown, path in _describe(inputs):
        if real == path:
            raise OutputError(f"--out {given} is the input {label} {shown}: choose another output folder, "
                              "outside the inputs")
        if real in path.parents:
            raise OutputError(f"--out {given} holds the input {label} {shown}: writing or replacing it could "
                              "destroy that input; choose an output folder outside the inputs")
        if path in real.parents and not any(a == real or a in real.parents for a in allowed if path in a.parents):
            hint = (f" (a BIDS folder's outputs may go in {shown / 'derivatives'})"
                    if any(path == _real(r) for r in bids_roots) else "")
            raise OutputError(f"--out {given} is inside the input {label} {shown}; choose an output folder "
                              f"outside the inputs{hint}")


def _check_writable(out: Path) -> None:
    """Try to create a file where ``out`` will be made: permissions, read-only disks, a file in the way."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: cannot create a folder inside {parent}, which is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kerasmyelin-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {parent} ({exc.strerror or exc})") from None


def check_output(out: str | os.PathLike, kind: str, *, overwrite: bool = False, inputs=(), bids_roots=(),
                 replaces: bool = True) -> Path:
    """Check, before any work, that ``out`` may receive a ``kind`` output.

    Args:
        out: the output folder.
        kind: one of :data:`KINDS`.
        overwrite: the user asked to replace an earlier output of this kind.
        inputs, bids_roots: see :func:`check_apart`.
        replaces: False for folders that are reopened rather than replaced (runs): an existing
            folder of the same kind is then accepted without ``overwrite``.

    Returns:
        The absolute output folder.

    Raises:
        OutputError: naming the folder and what is wrong with it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    check_apart(out, inputs, bids_roots)
    if out.is_dir() and any(out.iterdir()):
        found = output_kind(out)
        if found is None:
            raise OutputError(f"{out}: folder is not empty and kerasmyelin did not write it as an output "
                              f"(no {MARKER}); refusing to {'replace' if replaces else 'write into'} it: remove "
                              "it yourself or choose another --out")
        if found != kind:
            raise OutputError(f"{out}: holds a {KINDS[found]}, not a {KINDS[kind]}; refusing to "
                              f"{'replace' if replaces else 'write into'} it: choose another --out")
        if replaces and not overwrite:
            raise OutputError(f"{out}: folder is not empty (it holds an earlier {KINDS[kind]}); pass --overwrite "
                              "to replace it")
    _check_writable(out)
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


class OutputFolder:
    """The ``--out`` folder of one command, built beside the old one and swapped in when complete.

    Use as a context manager; write into :attr:`work`. On a normal exit the output is marked
    complete and replaces :attr:`path`; on an error :attr:`work` is removed (or, with
    ``keep_interrupted``, kept for ``--resume`` when the command was interrupted) and
    :attr:`path` is left as it was.

    Args:
        out: the output folder.
        kind: one of :data:`KINDS`; recorded in the marker.
        overwrite: replace an earlier output of the same kind.
        resume: continue an interrupted output of the same kind (its leftover work folder).
        inputs, bids_roots: the command's inputs (see :func:`check_apart`).
        what: what the command does, for the message of a command refused by the lock.
        settings: what the output was made with; a resumed output must have been made with the same.
        keep_interrupted: keep the work folder when the command is interrupted (Ctrl-C, SIGTERM),
            so that ``--resume`` can continue it.
        log: where notices go (leftovers removed, an interrupted replacement finished).

    Attributes:
        path: the final output folder (absolute).
        work: the folder being written.
        resumed: whether :attr:`work` holds an interrupted output being continued.
    """

    def __init__(self, out: str | os.PathLike, kind: str, *, overwrite: bool = False, resume: bool = False,
                 inputs=(), bids_roots=(), what: str | None = None, settings: dict | None = None,
                 keep_interrupted: bool = False, log=print):
        self.kind, self.overwrite, self.resume = kind, overwrite, resume
        self.inputs, self.bids_roots = list(inputs), list(bids_roots)
        self.what = what or f"writing a {KINDS[kind]}"
        self.settings = settings
        self.keep_interrupted = keep_interrupted
        self.log = log
        self.path = check_output(out, kind, overwrite=overwrite or resume, inputs=self.inputs,
                                 bids_roots=self.bids_roots)
        self.work = partial_path(self.path)
        self.resumed = False
        self._lock = None

    def __enter__(self) -> OutputFolder:
        from kerasmyelin.io.job_lock import hold_lock

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create its folder ({exc.strerror or exc})") from None
        self._lock = hold_lock(lock_path(self.path), self.what, self.path, OutputError)
        self._lock.__enter__()
        try:
            self._settle_leftovers()
            # Checked again under the lock: a command that held it may have just written here.
            check_output(self.path, self.kind, overwrite=self.overwrite or self.resume, inputs=self.inputs,
                         bids_roots=self.bids_roots)
            if not self.resumed:
                self.work.mkdir()
                write_marker(self.work, self.kind, complete=False, settings=self.settings)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def _settle_leftovers(self) -> None:
        """Finish or clear what an interrupted command left beside :attr:`path`."""
        out, work, old = self.path, self.work, old_path(self.path)
        if not out.exists():  # a kill between the two renames of the fallback swap
            marker = read_marker(work) if work.is_dir() else None
            if marker and marker.get("complete"):
                os.replace(work, out)
                self.log(f"note: finished replacing {out}, which an interrupted command had left half done")
        if old.exists():
            self.log(f"note: removing {old}, left by an interrupted replacement")
            shutil.rmtree(old)
        if (out / PREVIOUS).exists():
            self.log(f"note: removing {out / PREVIOUS}, left by an interrupted replacement")
            shutil.rmtree(out / PREVIOUS)
        if not work.exists():
            if self.resume:
                self.log(f"note: no interrupted {KINDS[self.kind]} to resume for {out}; starting a new one")
            return
        marker = read_marker(work)
        interrupted = marker is not None and marker["kind"] == self.kind and not marker.get("complete")
        if self.resume and interrupted:
            if (marker.get("settings") or None) != (self.settings or None):
                differ = sorted(k for k in set(marker.get("settings") or {}) | set(self.settings or {})
                                if (marker.get("settings") or {}).get(k) != (self.settings or {}).get(k))
                raise OutputError(f"{work}: the interrupted output was made with other settings "
                                  f"({', '.join(differ)}); resume with the same ones or pass --overwrite "
                                  "instead of --resume to start afresh")
            self.resumed = True
            return
        if interrupted and self.keep_interrupted and not self.overwrite:
            raise OutputError(f"{out}: an interrupted {KINDS[self.kind]} is in {work}; pass --resume to "
                              "continue it, or --overwrite to start afresh (it is then removed)")
        self.log(f"note: removing {work}, the leftover of an interrupted command")
        shutil.rmtree(work)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                write_marker(self.work, self.kind, complete=True, settings=self.settings)
                self._swap_in()
            elif self.keep_interrupted and issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
                self.log(f"interrupted: the work so far is kept in {self.work}; rerun with --resume to continue")
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        finally:
            self._lock.__exit__(None, None, None)

    def _swap_in(self) -> None:
        out, work, old = self.path, self.work, old_path(self.path)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            os.replace(work, out)
            return
        if _exchange(work, out):  # out is now the new output; work holds the old one
            os.replace(work, old)
            shutil.rmtree(old, ignore_errors=True)
            return
        # Without an atomic exchange the old output goes *inside* the new one first, so that a
        # kill between the two renames leaves one folder aside (complete, finished by the next
        # command), never two.
        os.replace(out, work / PREVIOUS)
        os.replace(work, out)
        shutil.rmtree(out / PREVIOUS, ignore_errors=True)


def open_reopened(out: str | os.PathLike, kind: str, *, inputs=(), legacy=None) -> Path:
    """Create, or reopen, a folder that a command resumes rather than replaces (a run, a reproduction).

    A new or empty folder gets the ``kind`` marker; a folder with that marker is reopened; a
    folder an older kerasmyelin made before markers existed (``legacy(folder)`` is true) is
    reopened and marked. Anything else that is not empty is refused: kerasmyelin does not write
    its files among a user's.

    Raises:
        OutputError: naming the folder and the problem.
    """
    out = Path(out).expanduser().absolute()
    if out.is_dir() and any(out.iterdir()) and output_kind(out) is None and legacy is not None and legacy(out):
        check_apart(out, inputs)
        write_marker(out, kind, complete=True)
        return out
    check_output(out, kind, inputs=inputs, replaces=False)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the folder ({exc.strerror or exc})") from None
    if output_kind(out) is None:
        write_marker(out, kind, complete=True)
    return out


def check_output_file(out: str | os.PathLike, *, overwrite: bool, inputs=(), looks_ours=None) -> Path:
    """Check an output *file* (a predictions table, an exported model file) before the work.

    Args:
        overwrite: replace an existing file.
        inputs: see :func:`check_apart`.
        looks_ours: callable(Path) -> bool, whether an existing file is one kerasmyelin writes at
            this place; a file that is not is never replaced.

    Raises:
        OutputError: naming the file and the problem.
    """
    out = Path(out).expanduser().absolute()
    check_apart(out, inputs)
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name")
    if out.exists():
        if not overwrite:
            raise OutputError(f"{out}: exists; pass --overwrite to replace it")
        if looks_ours is not None and not looks_ours(out):
            raise OutputError(f"{out}: exists and is not a file kerasmyelin writes here; refusing to replace "
                              "it: choose another --out")
    _check_writable(out)
    return out


__all__ = ["KINDS", "MARKER", "OutputFolder", "check_apart", "check_output", "check_output_file", "open_reopened",
           "output_kind", "read_marker"]
