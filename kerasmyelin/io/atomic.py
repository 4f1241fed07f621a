"""Write files and folders so a crash never leaves a half-written result in place.

Everything is written under a temporary name in the same folder and renamed into place, which
is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from kerasmyelin.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path of ``path`` to write (by any writer, in pieces); on success
    it is renamed to ``path``, on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


# export.json: inside a SavedModel folder written by kerasmyelin export
_MARKERS = ("dataset_description.json", "manifest.json", "result.json", "export.json")


def written_by_kerasmyelin(folder: Path) -> bool:
    """Whether ``folder`` holds a top-level description file that kerasmyelin wrote."""
    for name in _MARKERS:
        try:
            if "kerasmyelin" in (folder / name).read_text(errors="replace")[:4096]:
                return True
        except OSError:
            continue
    return False


def check_output_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output folder that cannot be written or that holds files, unless overwriting.

    Raises:
        OutputError: naming the folder and what is wrong with it.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"{out}: folder is not empty; pass --overwrite to replace it")
        if not written_by_kerasmyelin(out):
            raise OutputError(f"{out}: refusing to replace a folder kerasmyelin did not write "
                              f"(no {' or '.join(_MARKERS)} naming kerasmyelin); remove it yourself")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: cannot create a folder inside {parent}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write in {parent} (permission denied)")
    return out


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` in one rename.

    On any error the temporary folder is removed and ``out`` is left exactly as it was.
    """
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
