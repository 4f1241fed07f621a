"""``kerasmyelin train --strategy mirrored|multiworker`` (issue 7): TensorFlow's own distributed
engine reaches the single-process ``model.fit`` result, writes the same files once, resumes, and
refuses a bad ``TF_CONFIG`` clearly.

Tolerances (the differences measured are printed: ``pytest -s tests/test_distributed.py``).
``mirrored`` on this machine's one CPU device runs the same kernels on the same batches as
``fit``: weights and Adam's moments come out identical (measured: 0; asserted within 1e-6), and
the logged losses differ only by the epoch mean's summation (float64 here, float32 in Keras:
measured 5.9e-8 relative; asserted 1e-6).

Two workers each take half of every global batch, and the gradient is the sum of the halves'
gradients: float32 addition in another order, ~1e-7 relative (losses: measured 7.2e-8 relative,
asserted 1e-5; Adam's first moments, the summed gradient's running mean: measured 8.8e-6 of each
variable's largest value, asserted 1e-4, where a gradient all-reduced twice or a batch not split
would be off by 100%). Adam divides each step by the root of its second moment, so a weight
whose gradient is round-off noise (a cancellation) can take a different step of up to about the
learning rate (1e-3): measured 2 of 72,241 weights more than 1e-6 apart, the largest 1.9e-5;
asserted: at most 0.1% of the weights more than 1e-6 apart and none more than 1e-3 (one step).
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.cli.main import main  # noqa: E402
from kerasmyelin.errors import ConfigError, TrainingError  # noqa: E402
from kerasmyelin.training import fit  # noqa: E402
from kerasmyelin.training.callbacks import BACKUP_DIR, read_history  # noqa: E402
from kerasmyelin.training.strategy import make_strategy, read_tf_config  # noqa: E402
from tests.conftest import REPO, SMOKE_YAML, learnable_tenslice  # noqa: E402

EPOCHS = 3
WORKER_TIMEOUT_S = 480  # two TensorFlow start-ups and six steps took 54-118 s on 2 cores shared with other jobs
KEYS = ("loss", "mae", "val_loss", "val_mae")


def _train_args(data, out, *extra):
    return ["train", "--config", str(SMOKE_YAML), "--data", str(data), "--out", str(out), "--fold", "0",
            "--set", f"train.epochs={EPOCHS}", "--quiet", *extra]


def _network(out) -> Path:
    return Path(out) / "fold-0" / "simple"


def _outcome(out):
    """History rows, final weights and Adam's first moments of a run's network."""
    import kerasmyelin.training.optimizer  # noqa: F401  (FusedAdam, to load the optimizer state)

    model = keras.models.load_model(_network(out) / "final.keras")
    moments = [np.asarray(v.numpy()) for v in model.optimizer.variables if "momentum" in v.path]
    return read_history(_network(out) / "history.csv"), model.get_weights(), moments


def _assert_same_training(a, b, *, loss_rtol, moment_tol, weights_apart=0.0, weight_max=1e-6):
    """Assert two runs' outcomes agree within the tolerances; print the differences measured
    (``pytest -s`` shows them: the figures in the module docstring)."""
    rows_a, weights_a, moments_a = a
    rows_b, weights_b, moments_b = b
    assert [int(r["epoch"]) for r in rows_b] == [int(r["epoch"]) for r in rows_a] == list(range(EPOCHS))
    for ra, rb in zip(rows_a, rows_b):
        for key in KEYS:
            assert rb[key] == pytest.approx(ra[key], rel=loss_rtol), key
    assert [w.shape for w in weights_a] == [w.shape for w in weights_b]
    weights = np.concatenate([np.abs(y - x).ravel() for x, y in zip(weights_a, weights_b)])
    assert weights.max() <= weight_max and np.mean(weights > 1e-6) <= weights_apart
    assert moments_a and len(moments_a) == len(moments_b)
    for x, y in zip(moments_a, moments_b):
        np.testing.assert_allclose(y, x, rtol=0, atol=moment_tol * max(float(np.abs(x).max()), 1e-12))
    losses = max(abs(rb[k] - ra[k]) / abs(ra[k]) for ra, rb in zip(rows_a, rows_b) for k in KEYS)
    moments = max(np.abs(y - x).max() / max(np.abs(x).max(), 1e-12) for x, y in zip(moments_a, moments_b))
    print(f"\nlosses: {losses:.2g} relative; weights: {weights.max():.2g} absolute, {(weights > 1e-6).sum()} of "
          f"{weights.size} above 1e-6; first moments: {moments:.2g} of their largest")


def _files(out):
    """Every file of a run folder but TensorBoard's (their names hold a time and a process id)."""
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*")
                  if p.is_file() and not p.name.startswith("events.out.tfevents."))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 infants: fold 0 trains 5 (2 steps of 4 an epoch) and validates on 1."""
    return learnable_tenslice(tmp_path_factory.mktemp("tenslice") / "tenslice", n=12)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The single-process run: ``model.fit`` (--strategy default)."""
    out = tmp_path_factory.mktemp("runs") / "fit"
    assert main(_train_args(data, out)) == 0
    return out


def test_mirrored_on_one_device_equals_fit(data, reference, tmp_path):
    out = tmp_path / "mirrored"
    assert main(_train_args(data, out, "--strategy", "mirrored")) == 0
    _assert_same_training(_outcome(reference), _outcome(out), loss_rtol=1e-6, moment_tol=1e-6)
    assert _files(out) == _files(reference)  # the same callbacks wrote the same files
    tensorboard = [p.relative_to(out) for p in out.rglob("events.out.tfevents.*")]
    assert sorted(str(p.parent) for p in tensorboard) == sorted(
        str(p.parent.relative_to(reference)) for p in reference.rglob("events.out.tfevents.*"))


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_run_interrupted_under_mirrored_resumes_under_fit(data, reference, tmp_path, monkeypatch):
    """The strategy is not part of the run folder: a backup the distributed loop wrote resumes
    under ``model.fit`` to fit's result (multi-worker runs resuming: the last test)."""
    out = tmp_path / "resumed"
    real = fit.make_callbacks
    monkeypatch.setattr(fit, "make_callbacks", lambda *a, **k: real(*a, **k) + [_Interrupt()])
    assert main(_train_args(data, out, "--strategy", "mirrored")) == 130
    assert json.loads((_network(out) / BACKUP_DIR / "training_metadata.json").read_text())["epoch"] == 2
    monkeypatch.setattr(fit, "make_callbacks", real)
    assert main(_train_args(data, out, "--strategy", "default")) == 0
    # epochs 0 and 1 before the interruption, 2 after: none trained twice, and the result is fit's
    lines = (_network(out) / "history.csv").read_text().strip().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]
    _assert_same_training(_outcome(reference), _outcome(out), loss_rtol=1e-6, moment_tol=1e-6)
    assert not (_network(out) / BACKUP_DIR).exists()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_workers(args, n=2):
    """``n`` worker processes of ``kerasmyelin train ... --strategy multiworker`` on 127.0.0.1,
    worker 0 the chief, as docs/cluster.md starts them."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(n)]}
    procs = []
    for index in range(n):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-m", "kerasmyelin.cli.main", *args],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def _finish(procs, timeout=WORKER_TIMEOUT_S):
    """Wait for every worker; kill them all if one is stuck. Returns (return code, stderr) each."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, err.decode(errors="replace")))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.slow  # three training processes: ~50 s
def test_two_workers_reach_the_single_process_result_and_only_the_chief_writes(data, reference, tmp_path):
    out = tmp_path / "multi"
    procs = _start_workers(_train_args(data, out, "--strategy", "multiworker"))
    for code, err in _finish(procs):
        assert code == 0, err[-3000:]
    _assert_same_training(_outcome(reference), _outcome(out), loss_rtol=1e-5, moment_tol=1e-4,
                          weights_apart=1e-3, weight_max=1e-3)
    # Only the chief wrote: the files are the single process's, each written once (one history
    # row per epoch), and every TensorBoard file is named after the chief's process.
    assert _files(out) == _files(reference)
    assert len((_network(out) / "history.csv").read_text().strip().splitlines()) == 1 + EPOCHS
    writers = {p.name.split(".")[-3] for p in out.rglob("events.out.tfevents.*")}
    assert writers == {str(procs[0].pid)}
    with open(out / "fold-0" / "predictions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6


@pytest.mark.parametrize("value, says", [
    (None, "TF_CONFIG environment variable"),
    ("{cluster: ", "TF_CONFIG is not valid JSON"),
    ('["127.0.0.1:1"]', "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster' object"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "job 'ps' is not supported"),
    ('{"cluster": {"worker": ["h"]}, "task": {"type": "worker", "index": 0}}', "list of 'host:port'"),
    ('{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}}', "h:1 is given to more"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}}', "no 'task' object"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', "task.type 'chief' is not a job"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}', "task.index 2 is not"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": "0"}}', "task.index '0' is not"),
])
def test_a_bad_tf_config_is_refused_saying_what_is_wrong(value, says):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(ConfigError, match="TF_CONFIG") as caught:
        read_tf_config(environ)
    assert says in str(caught.value)


def test_the_chief_is_worker_0_or_the_chief_task():
    two = {"worker": ["a:1", "b:1"]}
    tasks = [read_tf_config({"TF_CONFIG": json.dumps({"cluster": two, "task": {"type": "worker", "index": i}})})
             for i in (0, 1)]
    assert [(t.is_chief, t.address, t.workers) for t in tasks] == [(True, "a:1", 2), (False, "b:1", 2)]
    with_chief = {"chief": ["c:1"], **two}
    worker0, chief = (read_tf_config({"TF_CONFIG": json.dumps({"cluster": with_chief, "task": task})})
                      for task in ({"type": "worker", "index": 0}, {"type": "chief", "index": 0}))
    assert (worker0.is_chief, chief.is_chief, chief.workers) == (False, True, 3)


def test_train_multiworker_without_tf_config_fails_before_training(data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(_train_args(data, tmp_path / "x", "--strategy", "multiworker")) == 2
    assert "--strategy multiworker needs the TF_CONFIG environment variable" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_multiworker_after_tensorflow_started_is_refused_saying_why(monkeypatch):
    import tensorflow as tf

    tf.constant(1.0).numpy()  # TensorFlow has run something in this process
    cluster = {"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(TrainingError, match="before TensorFlow runs anything in this process"):
        make_strategy("multiworker")


@pytest.mark.slow
def test_killed_workers_rerun_resume_to_the_single_process_result(data, reference, tmp_path):
    """The non-chief is killed mid-run: the chief stops with a message instead of waiting for
    ever; both started again resume from the chief's backup (read by both) and end where fit
    does. Prints how long the chief took to notice."""
    out = tmp_path / "killed"
    args = _train_args(data, out, "--strategy", "multiworker")
    procs = _start_workers(args)
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        history = _network(out) / "history.csv"
        while not (history.exists() and len(history.read_text().strip().splitlines()) >= 2):
            assert time.monotonic() < deadline and procs[0].poll() is None, "the chief did not log an epoch"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        procs[0].wait(timeout=WORKER_TIMEOUT_S)
        print(f"\nthe chief stopped {time.monotonic() - killed:.1f} s after the other worker was killed")
    finally:
        (code, err), _ = _finish(procs)
    if code == 0:
        pytest.skip("the run ended before the kill reached it")
    assert code == 2 and "lost contact with another worker" in err, err[-3000:]
    assert (_network(out) / BACKUP_DIR).is_dir()
    for code, err in _finish(_start_workers(args)):
        assert code == 0, err[-3000:]
    _assert_same_training(_outcome(reference), _outcome(out), loss_rtol=1e-5, moment_tol=1e-4,
                          weights_apart=1e-3, weight_max=1e-3)
