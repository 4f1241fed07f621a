"""One job at a time per output folder: a lock file naming the job that holds it.

Folds and ensemble members run as independent jobs (a cluster's job array, two terminals). Two
jobs training the same network into the same folder would overwrite each other's backups and
checkpoints, so the first takes ``.kerasmyelin.lock`` and the second stops with a message
naming the first. A job killed without cleaning up (``kill -9``, a node lost) leaves its lock
behind: on the same host a lock whose process no longer exists is taken over; a lock from
another host is only reported, since its process cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from kerasmyelin.errors import TrainingError

LOCK_FILE = ".kerasmyelin.lock"


def _holder(lock: Path) -> dict | None:
    try:
        value = json.loads(lock.read_text())
        return value if isinstance(value, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # not ours to judge: reported, never taken over


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale(holder: dict) -> bool:
    """A lock left by a dead process of this host."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


@contextlib.contextmanager
def job_lock(folder: str | os.PathLike, what: str):
    """Hold ``folder``'s lock for the duration of the ``with`` block.

    Args:
        folder: the output folder (created if absent).
        what: what the job does, for the other job's message ("training fold 2, member young").

    Raises:
        TrainingError: another live job holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(folder / LOCK_FILE, what, folder, TrainingError) as lock:
        yield lock


@contextlib.contextmanager
def hold_lock(lock: Path, what: str, place: Path, error: type[Exception] = TrainingError):
    """Hold the lock file ``lock`` (in an existing folder) for the ``with`` block.

    Args:
        lock: the lock file's path.
        what: what this job does, shown to a job refused by it.
        place: what the lock protects, named in the refusal.
        error: the exception type raised when another live job holds it.
    """
    me = {"host": socket.gethostname(), "pid": os.getpid(), "job": what,
          "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    # Written whole under a temporary name, then linked into place: link fails if the lock
    # exists, so taking it is atomic and a reader never sees half a lock.
    fd, tmp = tempfile.mkstemp(prefix=f"{lock.name}.", suffix=".tmp", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        for _attempt in range(2):
            try:
                os.link(tmp, lock)
                break
            except FileExistsError:
                holder = _holder(lock)
                if holder is not None and not _stale(holder):
                    who = (f"pid {holder.get('pid')} on {holder.get('host')}, {holder.get('job', '?')}, "
                           f"since {holder.get('since', '?')}") if holder else "an unreadable lock"
                    raise error(f"{place}: another job is already working here ({who}); wait for "
                                f"it to finish, or delete {lock} if that job is dead") from None
                lock.unlink(missing_ok=True)  # a dead job's lock (or one removed meanwhile)
        else:
            raise error(f"{place}: could not take {lock} (another job keeps taking it)")
    finally:
        os.unlink(tmp)
    try:
        yield lock
    finally:
        if _holder(lock) == me:
            lock.unlink(missing_ok=True)
