"""Kill and resume (issue 6 section 2): a training command killed with SIGKILL at three random
points and rerun each time ends with the same weights, predictions and best checkpoint, bit for
bit, as a run never interrupted."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("keras")

from kerasmyelin.training.callbacks import BACKUP_DIR, read_backup_state
from tests.conftest import REPO, SMOKE_YAML, learnable_tenslice

EPOCHS = 8


def _command(data, out):
    return [sys.executable, "-m", "kerasmyelin.cli.main", "train", "--config", str(SMOKE_YAML), "--data", str(data),
            "--out", str(out), "--fold", "0", "--set", f"train.epochs={EPOCHS}", "--quiet"]


def _epochs_logged(out):
    history = list(out.rglob("history.csv"))
    return len(history[0].read_text().strip().splitlines()) - 1 if history else 0


def _kill_at(command, out, epochs, delay):
    """Start the command; SIGKILL it ``delay`` s after ``epochs`` epochs are logged."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and _epochs_logged(out) < epochs:
            time.sleep(0.02)
        time.sleep(delay)
        assert proc.poll() is None, f"the run finished before the kill: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def _outcome(out):
    from kerasmyelin.training.fit import load_trained

    net = next(out.rglob("final.keras")).parent
    return {"weights": load_trained(net / "final.keras").get_weights(),
            "best_weights": load_trained(net / "best.keras").get_weights(),
            "best": json.loads((net / "best.json").read_text()),
            "predictions": next(out.rglob("predictions.csv")).read_bytes()}


@pytest.mark.slow  # four training processes: ~60 s
def test_three_sigkills_resume_to_the_uninterrupted_result(tmp_path):
    data = learnable_tenslice(tmp_path / "tenslice", n=24)
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    subprocess.run(_command(data, plain), cwd=REPO, check=True, capture_output=True)

    rng = np.random.default_rng(6)
    points = sorted(rng.choice(np.arange(1, EPOCHS - 1), size=3, replace=False))
    resumed_from = []
    for epochs in points:
        _kill_at(_command(data, killed), killed, epochs, delay=float(rng.uniform(0.0, 0.3)))
        state = read_backup_state(next(killed.rglob(BACKUP_DIR)))
        resumed_from.append(state["epoch"] if state else 0)
    assert resumed_from[-1] > 0 and resumed_from == sorted(resumed_from)  # each rerun kept the progress
    subprocess.run(_command(data, killed), cwd=REPO, check=True, capture_output=True)

    a, b = _outcome(plain), _outcome(killed)
    for x, y in zip(a["weights"] + a["best_weights"], b["weights"] + b["best_weights"]):
        np.testing.assert_array_equal(x, y)
    assert a["best"] == b["best"] and a["predictions"] == b["predictions"]
