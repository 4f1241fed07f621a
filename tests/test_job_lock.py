"""The per-folder job lock: one job per network folder, dead jobs' locks taken over."""

import json
import socket
import subprocess
import sys

import pytest

from kerasmyelin.errors import TrainingError
from kerasmyelin.io.job_lock import LOCK_FILE, job_lock


def _plant(folder, **holder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps(holder))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_held_inside_and_released_after(tmp_path):
    with job_lock(tmp_path / "net", "training young") as lock:
        holder = json.loads(lock.read_text())
        assert holder["job"] == "training young" and holder["host"] == socket.gethostname()
        with pytest.raises(TrainingError, match="another job is already working here.*training young"):
            with job_lock(tmp_path / "net", "training young again"):
                pass
    assert not (tmp_path / "net" / LOCK_FILE).exists()
    assert [p.name for p in (tmp_path / "net").iterdir()] == []  # no temporary files left


def test_lock_released_when_the_job_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with job_lock(tmp_path, "x"):
            raise RuntimeError("training failed")
    assert not (tmp_path / LOCK_FILE).exists()


def test_live_job_on_this_host_is_respected_and_named(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _plant(tmp_path, host=socket.gethostname(), pid=sleeper.pid, job="training fold 2", since="today")
        with pytest.raises(TrainingError, match=f"pid {sleeper.pid} on .*training fold 2") as info:
            with job_lock(tmp_path, "y"):
                pass
        assert str(tmp_path / LOCK_FILE) in str(info.value)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dead_job_on_this_host_is_taken_over(tmp_path):
    _plant(tmp_path, host=socket.gethostname(), pid=_dead_pid(), job="killed with -9")
    with job_lock(tmp_path, "resumed") as lock:
        assert json.loads(lock.read_text())["job"] == "resumed"


@pytest.mark.parametrize("holder", [{"host": "node-17", "pid": 1, "job": "fold 3"}, "not json"])
def test_other_hosts_and_unreadable_locks_are_only_reported(tmp_path, holder):
    if isinstance(holder, dict):
        _plant(tmp_path, **holder)
    else:
        (tmp_path / LOCK_FILE).write_text(holder)
    with pytest.raises(TrainingError, match="delete .* if that job is dead"):
        with job_lock(tmp_path, "z"):
            pass
    assert (tmp_path / LOCK_FILE).exists()  # never removed behind another job's back
