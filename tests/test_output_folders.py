"""Never lose a user's data (issue 20): output folders, --overwrite, interruption, concurrency.

The inputs of every command stay untouched whatever ``--out`` says; an output is replaced only
when kerasmyelin marked it as an output of the same kind; replacement is atomic under kill -9;
a second writer is refused at the start; an interrupted batch is marked and resumable.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kerasmyelin.cli.main import main
from kerasmyelin.errors import OutputError
from kerasmyelin.io.output_dir import (
    MARKER,
    OutputFolder,
    check_apart,
    lock_path,
    output_kind,
    partial_path,
    read_marker,
    write_marker,
)

REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith((f"{out.name}.", f".{out.name}.")))


@pytest.fixture(scope="module")
def bids(tiny_cohort, tmp_path_factory):
    """A copy of the tiny synthetic cohort: a BIDS data set whose description mentions kerasmyelin."""
    folder = tmp_path_factory.mktemp("data") / "DATA"
    shutil.copytree(tiny_cohort, folder)
    assert "kerasmyelin" in (folder / "dataset_description.json").read_text()  # the old guard's false proof
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.conftest import tiny_model_file

    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.keras")


# --- the reported bug: --overwrite removed the input data set --------------------------------------------


@pytest.mark.parametrize("how", ["bids", "one infant"])
def test_predict_with_out_on_its_own_input_is_refused_and_the_data_stay(bids, model, how, capsys):
    before = _snapshot(bids)
    if how == "bids":
        argv = ["predict", "--model", str(model), "--bids", str(bids), "--out", str(bids), "--overwrite"]
    else:
        anat = bids / "sub-001" / "anat"
        argv = ["predict", "--model", str(model), "--t1", str(anat / "sub-001_T1w.nii.gz"),
                "--t2", str(anat / "sub-001_T2w.nii.gz"), "--out", str(bids), "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {bids}" in err and "input" in err and "Traceback" not in err
    assert _snapshot(bids) == before and _leftovers(bids) == []


def test_a_cohort_is_never_replaced_by_predictions_even_apart_from_the_inputs(bids, model, tmp_path, capsys):
    """A synth cohort is kerasmyelin's output, but of another kind: a batch may not replace it."""
    cohort = tmp_path / "cohort"
    shutil.copytree(bids, cohort)
    assert output_kind(cohort) == "cohort"
    before = _snapshot(cohort)
    assert main(["predict", "--model", str(model), "--bids", str(bids), "--out", str(cohort), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds a synthetic cohort" in err and "not a batch of predictions" in err
    assert _snapshot(cohort) == before


def test_a_folder_that_only_mentions_kerasmyelin_is_not_ours(bids, model, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "dataset_description.json").write_text('{"GeneratedBy": [{"Name": "kerasmyelin"}]}')
    (out / "notes.txt").write_text("a lab's own notes")
    before = _snapshot(out)
    assert main(["predict", "--model", str(model), "--bids", str(bids), "--out", str(out), "--overwrite"]) == 2
    assert "did not write it as an output" in capsys.readouterr().err and _snapshot(out) == before


# --- --out apart from every input, for every command ------------------------------------------------------


def test_check_apart_equal_inside_above_and_the_bids_derivatives_exception(tmp_path):
    data = tmp_path / "data"
    (data / "sub-01").mkdir(parents=True)
    for out, phrase in [(data, "is the input"), (tmp_path, "holds the input"), (data / "sub-01" / "x", "inside")]:
        with pytest.raises(OutputError, match=phrase) as err:
            check_apart(out, [("--bids", data)], bids_roots=[data])
        assert str(data) in str(err.value) and str(out) in str(err.value)
    check_apart(data / "derivatives" / "preds", [("--bids", data)], bids_roots=[data])  # BIDS's place for outputs
    with pytest.raises(OutputError, match="inside"):  # only for a BIDS root
        check_apart(data / "derivatives" / "preds", [("--data", data)])
    # Through a symbolic link, the same folder is still the same folder.
    link = tmp_path / "link"
    link.symlink_to(data)
    with pytest.raises(OutputError, match="is the input"):
        check_apart(link, [("--bids", data)])
    # A file of a list inside --out.
    with pytest.raises(OutputError, match="holds the input"):
        check_apart(tmp_path / "out", [("a file of the CSV list", [data / "a.nii.gz", tmp_path / "out" / "b.nii"])])


def _commands(s):
    """(command line, input that must survive) per command taking --out, each aimed at its input."""
    cache, run, bids, model = s["cache"], s["run"], s["bids"], s["model"]
    listing = s["listing"]
    return {
        "prepare --bids, out = the BIDS root": (["prepare", "--bids", str(bids), "--levels", str(s["levels"]),
                                                 "--out", str(bids), "--overwrite", "--quiet"], bids),
        "prepare --bids, out above the BIDS root": (["prepare", "--bids", str(bids), "--levels", str(s["levels"]),
                                                     "--out", str(bids.parent), "--overwrite", "--quiet"], bids),
        "shard, out = the cache": (["shard", "--data", str(cache), "--out", str(cache), "--shards", "2",
                                    "--overwrite"], cache),
        "shard, out inside the cache": (["shard", "--data", str(cache), "--out", str(cache / "sharded"),
                                         "--shards", "2"], cache),
        "train, out = the cache": (["train", "--data", str(cache), "--config", str(REPO / "experiments" / "smoke.yaml"),
                                    "--out", str(cache), "--quiet"], cache),
        "evaluate, out above the cache": (["evaluate", "--data", str(cache), "--config",
                                           str(REPO / "experiments" / "smoke.yaml"), "--out", str(cache.parent),
                                           "--quiet"], cache),
        "export, out = the run": (["export", str(run), "--format", "saved_model", "--out", str(run), "--overwrite"],
                                  run),
        "export, out = the model file": (["export", str(model), "--format", "keras", "--out", str(model),
                                          "--overwrite"], model.parent),
        "export-nnc, out = the cache": (["export-nnc", "--data", str(cache), "--out", str(cache), "--overwrite"],
                                        cache),
        "predict --csv, out above a listed image": (["predict", "--model", str(model), "--csv", str(listing),
                                                     "--out", str(s["images"].parent), "--overwrite"], s["images"]),
        "predict --data, out inside the cache": (["predict", "--model", str(model), "--data", str(cache),
                                                  "--out", str(cache / "p.csv")], cache),
        "predict --data, out = a file of the cache": (["predict", "--model", str(model), "--data", str(cache),
                                                       "--out", str(cache / "tenslice.npz"), "--overwrite"], cache),
    }


@pytest.fixture(scope="module")
def scene(bids, model, tiny_tenslice, tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    cache = root / "cache"
    shutil.copytree(tiny_tenslice, cache)
    run = root / "run"
    run.mkdir()
    write_marker(run, "run", complete=True)
    (run / "config.yaml").write_text("name: x\n")
    images = root / "scans" / "infant"
    images.mkdir(parents=True)
    for c in ("T1w", "T2w"):
        shutil.copy(bids / "sub-001" / "anat" / f"sub-001_{c}.nii.gz", images / f"{c}.nii.gz")
    listing = root / "list.csv"
    listing.write_text(f"subject,t1w,t2w\ninf-1,{images / 'T1w.nii.gz'},{images / 'T2w.nii.gz'}\n")
    return {"cache": cache, "run": run, "bids": bids, "model": model, "listing": listing, "images": images,
            "levels": bids / "derivatives" / "synth_truth" / "truth.tsv"}


COMMAND_CASES = list(_commands({k: Path("/x") for k in ("cache", "run", "bids", "model", "listing", "images",
                                                        "levels")}))


@pytest.mark.parametrize("case", COMMAND_CASES)
def test_every_command_refuses_an_out_on_its_inputs_before_any_work(scene, case, capsys):
    argv, kept = _commands(scene)[case]
    before = _snapshot(kept)
    assert main(argv) == 2, case
    err = capsys.readouterr().err
    out = Path(argv[argv.index("--out") + 1])
    assert "Traceback" not in err and "input" in err and str(out) in err, err
    assert _snapshot(kept) == before


# --- the marker: only an output of the same kind is replaced ----------------------------------------------


def test_overwrite_replaces_only_the_same_kind(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, "cache") as folder:
        (folder.work / "a.txt").write_text("first")
    assert output_kind(out) == "cache" and read_marker(out)["complete"] is True
    with pytest.raises(OutputError, match="pass --overwrite"):
        OutputFolder(out, "cache")
    with pytest.raises(OutputError, match="not a batch of predictions"):
        OutputFolder(out, "predict", overwrite=True)
    with OutputFolder(out, "cache", overwrite=True) as folder:
        (folder.work / "b.txt").write_text("second")
        assert (out / "a.txt").read_text() == "first"  # the old output stays until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.txt"] and _leftovers(out) == []


def test_a_failure_while_building_leaves_the_old_output_and_no_leftover(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, "cache") as folder:
        (folder.work / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), OutputFolder(out, "cache", overwrite=True) as folder:
        (folder.work / "b.txt").write_text("half")
        raise RuntimeError("disk full (simulated)")
    assert (out / "a.txt").read_text() == "first" and not (out / "b.txt").exists() and _leftovers(out) == []


def test_an_output_that_cannot_be_created_is_reported_before_the_work(model, bids, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, phrase in [(blocker / "out", "which is a file"), (Path("/proc/kerasmyelin-test/out"), "cannot write")]:
        t = time.monotonic()
        assert main(["predict", "--model", str(model), "--bids", str(bids), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert phrase in err and str(out) in err, err
        assert time.monotonic() - t < 5  # before the model is loaded or any infant read


# --- one writer at a time -----------------------------------------------------------------------------------


def test_a_second_command_on_the_same_out_is_refused_at_its_start(bids, model, tmp_path, capsys):
    out = tmp_path / "preds"
    with OutputFolder(out, "predict", what="kerasmyelin predict (batch)"):
        t = time.monotonic()
        assert main(["predict", "--model", str(model), "--bids", str(bids), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "another job is already working here" in err and f"pid {os.getpid()}" in err
        assert time.monotonic() - t < 5
    assert not lock_path(out).exists()


def test_a_dead_commands_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    lock_path(out).write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 12345, "job": "gone"}))
    with OutputFolder(out, "cache") as folder:
        (folder.work / "a.txt").write_text("x")
    assert (out / "a.txt").exists() and not lock_path(out).exists()


# --- kill -9 at any moment ------------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import kerasmyelin.io.output_dir as od

    out, die_at, exchange = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    if not exchange:
        od._exchange = lambda a, b: False  # a file system without renameat2
    steps = {"n": 0}
    real_replace, real_rmtree = os.replace, od.shutil.rmtree

    def step():
        steps["n"] += 1
        if steps["n"] == die_at:
            os._exit(9)  # what kill -9 leaves on disk: no clean-up of any kind

    def replace(a, b):
        step(); real_replace(a, b); step()

    def rmtree(path, *args, **kw):
        step(); real_rmtree(path, *args, **kw)

    od.os.replace, od.shutil.rmtree = replace, rmtree
    with od.OutputFolder(out, "cache", overwrite=True) as folder:
        for i in range(3):
            step()
            (folder.work / f"new{i}.txt").write_text("new")
    print("steps", steps["n"])
""")


def _child(out: Path, die_at: int, exchange: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _CHILD, str(out), str(die_at), "1" if exchange else "0"],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_kill_at_any_step_leaves_the_old_or_the_new_output_and_one_named_leftover(tmp_path, exchange):
    old_files, new_files = {"old.txt"}, {"new0.txt", "new1.txt", "new2.txt"}
    last = None
    for die_at in range(1, 40):
        out = tmp_path / f"k{die_at}" / "out"
        with OutputFolder(out, "cache") as folder:
            (folder.work / "old.txt").write_text("old")
        proc = _child(out, die_at, exchange)
        if proc.returncode == 0:
            last = die_at
            break
        assert proc.returncode == 9, proc.stderr
        present = {p.name for p in out.iterdir()} - {MARKER, ".kerasmyelin-previous"} if out.exists() else None
        leftovers = [n for n in _leftovers(out) if not n.endswith(".lock")]
        inside = out.exists() and (out / ".kerasmyelin-previous").exists()  # the old one, being deleted
        assert len(leftovers) + inside <= 1 and all(".kerasmyelin-" in n for n in leftovers), leftovers
        if present is None:  # between the two renames of the fallback: the next command finishes it
            assert not exchange
        else:
            assert present in (old_files, new_files), (die_at, present)
        # The next command reports and settles what was left, and leaves nothing else behind.
        notes = []
        with OutputFolder(out, "cache", overwrite=True, log=notes.append) as folder:
            (folder.work / "again.txt").write_text("x")
        assert {p.name for p in out.iterdir()} == {MARKER, "again.txt"} and _leftovers(out) == []
        assert bool(notes) == bool(leftovers or inside), notes  # what was left is reported
    assert last is not None and last > 6  # the loop reached a run that was not killed


# --- an interrupted batch says so and resumes -----------------------------------------------------------------


def test_an_interrupted_batch_is_marked_incomplete_and_resumes_keeping_the_infants_done(bids, model, tmp_path,
                                                                                         monkeypatch, capsys):
    import kerasmyelin.wholebrain.pipeline as pipeline

    out = tmp_path / "preds"
    argv = ["predict", "--model", str(model), "--bids", str(bids), "--out", str(out), "--jobs", "1"]
    real = pipeline.estimate_subject
    calls = []

    def interrupted_at_the_third(*a, **k):
        calls.append(k["subject"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "estimate_subject", interrupted_at_the_third)
    assert main(argv) == 130
    work = partial_path(out)
    assert not out.exists() and read_marker(work)["complete"] is False
    assert not (work / "predictions.csv").exists()  # no table that says it is complete
    with open(work / "predictions.incomplete.csv", newline="") as fh:
        assert [r["subject"] for r in csv.DictReader(fh)] == ["sub-001", "sub-002"]
    done = {pid: (work / pid / "result.json").read_bytes() for pid in ("sub-001", "sub-002")}
    assert "--resume" in capsys.readouterr().out
    # Without --resume the work is neither lost nor silently reused.
    assert main(argv) == 2
    assert "pass --resume" in capsys.readouterr().err and work.is_dir()
    calls.clear()
    monkeypatch.setattr(pipeline, "estimate_subject", lambda *a, **k: (calls.append(k["subject"]), real(*a, **k))[1])
    assert main(argv + ["--resume"]) == 0
    assert calls == ["sub-003", "sub-004"] and "2 of 4 infants already done" in capsys.readouterr().out
    with open(out / "predictions.csv", newline="") as fh:
        assert [r["subject"] for r in csv.DictReader(fh)] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert all((out / pid / "result.json").read_bytes() == raw for pid, raw in done.items())
    assert not (out / "predictions.incomplete.csv").exists() and read_marker(out)["complete"] is True
    assert _leftovers(out) == []


def test_resume_refuses_other_settings(bids, model, tmp_path, monkeypatch, capsys):
    import kerasmyelin.wholebrain.pipeline as pipeline

    out = tmp_path / "preds"
    argv = ["predict", "--model", str(model), "--bids", str(bids), "--out", str(out), "--jobs", "1"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "estimate_subject", interrupt)
    assert main(argv) == 130
    monkeypatch.undo()
    assert main(argv + ["--resume", "--reports"]) == 2
    assert "other settings (reports" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0  # starting afresh removes the interrupted work
    assert output_kind(out) == "predict" and _leftovers(out) == []


@pytest.mark.slow
def test_kill_9_during_an_overwriting_batch_keeps_the_earlier_batch_whole(bids, model, tmp_path):
    """The real command, killed at random moments while it replaces an earlier batch."""
    import random

    out = tmp_path / "preds"
    base = [sys.executable, "-m", "kerasmyelin.cli.main", "predict", "--model", str(model), "--bids", str(bids),
            "--out", str(out), "--jobs", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run(base, env=env, capture_output=True, timeout=300).returncode == 0
    earlier = _snapshot(out)
    rng = random.Random(0)
    for _ in range(3):
        proc = subprocess.Popen(base + ["--overwrite"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 14.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _snapshot(out)
        assert sorted(now) == sorted(earlier)  # the earlier batch whole, or the new one complete
        assert "predictions.csv" in now and "predictions.incomplete.csv" not in now
        assert len([n for n in _leftovers(out) if not n.endswith(".lock")]) <= 1
    done = subprocess.run(base + ["--overwrite"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _leftovers(out) == [] and output_kind(out) == "predict"


def test_preparing_processes_end_with_their_parent(tmp_path):
    """kill -9 of the command leaves no preparing process behind."""
    script = textwrap.dedent("""
        import sys, time
        from kerasmyelin.wholebrain.batch import PreparingPool
        pool = PreparingPool(2)
        pids = {pool.executor.submit(__import__("os").getpid).result() for _ in range(8)}
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(120)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    proc.stdout.readline()
    workers = _children(proc.pid)
    assert len(workers) >= 2  # the two preparing processes (and multiprocessing's resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in workers if _running(p)]
    assert alive == []


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
