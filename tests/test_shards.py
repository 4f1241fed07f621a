"""The sharded ten-slice set: round trip, streaming, resume, per-worker shards, errors, the parallel
builder and training on it through the command line, on tiny shapes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from kerasmyelin.cli.main import main  # noqa: E402
from kerasmyelin.data.cache import TenSliceSet, read_cache  # noqa: E402
from kerasmyelin.data.pipeline import make_dataset  # noqa: E402
from kerasmyelin.data.shard_index import INDEX_FILE  # noqa: E402
from kerasmyelin.data.shard_writer import shard_cache, write_shards  # noqa: E402
from kerasmyelin.data.shards import ShardedTenSliceSet, open_tenslice, read_shards  # noqa: E402
from kerasmyelin.errors import ConfigError, InputError  # noqa: E402
from kerasmyelin.io.atomic import sha256_file  # noqa: E402
from kerasmyelin.levels import INPUT_NAMES  # noqa: E402
from tests.conftest import REPO, SMOKE_YAML  # noqa: E402


def _sharded(folder, n=11, size=16, shards=3):
    """A sharded set of ``n`` random infants whose age is their position (so labels name them)."""
    rng = np.random.default_rng(1)
    images = {name: rng.random((n, size, size), dtype=np.float32) for name in INPUT_NAMES}
    write_shards(folder, images, [f"sub-{i:03d}" for i in range(n)], np.arange(n, dtype=np.float32),
                 {"created_by": "kerasmyelin tests"}, shards)
    return read_shards(folder)


def _labels(ds, batches):
    """The ages (= positions) of the first ``batches`` batches, as one int array."""
    return np.concatenate([y.numpy().ravel() for _, y in ds.take(batches)]).astype(int)


@pytest.fixture(scope="module")
def sharded_cache(tiny_tenslice, tmp_path_factory):
    """``tiny_tenslice`` (16 infants, 32x32) converted into 4 shards."""
    return shard_cache(tiny_tenslice, tmp_path_factory.mktemp("sharded") / "s", 4)


def test_sharded_set_holds_the_npz_cache_exactly(tiny_tenslice, sharded_cache):
    npz, sharded = read_cache(tiny_tenslice), open_tenslice(sharded_cache)
    assert isinstance(sharded, ShardedTenSliceSet) and isinstance(open_tenslice(tiny_tenslice), TenSliceSet)
    assert sorted(p.name for p in sharded_cache.glob("*.tfrecord")) == [
        f"tenslice-0000{k}-of-00004.tfrecord" for k in range(4)]
    np.testing.assert_array_equal(sharded.participant_id, npz.participant_id)
    np.testing.assert_array_equal(sharded.age_months, npz.age_months)
    assert sharded.image_shape == npz.image_shape == (32, 32)
    order = [9, 0, 15, 3]
    for name, image in sharded.images_at(order).items():
        np.testing.assert_array_equal(image, npz.images[name][order])
    # evaluation datasets: the same batches, in the order asked for, bit for bit
    for (xs, ys), (xn, yn) in zip(make_dataset(sharded, order, 3, training=False),
                                  make_dataset(npz, order, 3, training=False), strict=True):
        np.testing.assert_array_equal(ys.numpy(), yn.numpy())
        for name in INPUT_NAMES:
            np.testing.assert_array_equal(xs[name].numpy(), xn[name].numpy())


def test_float16_patterns_decode_exactly_as_numpy_converts_them():
    from kerasmyelin.data.shard_records import half_to_float32

    bits = np.arange(1 << 16, dtype=np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(half_to_float32(bits).numpy().view(np.uint32), expected.view(np.uint32))


def test_streamed_training_is_seeded_covers_each_epoch_and_resumes_exactly(tmp_path):
    data = _sharded(tmp_path / "s")
    chosen = np.array([0, 2, 3, 5, 6, 8, 9, 10])  # 8 infants in all three shards
    stream = _labels(make_dataset(data, chosen, 3, training=True, seed=5, shuffle_buffer=4), 8)
    for epoch in range(3):  # every selected infant once per epoch, none other
        assert sorted(stream[8 * epoch: 8 * epoch + 8]) == chosen.tolist()
    np.testing.assert_array_equal(
        stream, _labels(make_dataset(data, chosen, 3, training=True, seed=5, shuffle_buffer=4), 8))
    assert not np.array_equal(stream, _labels(make_dataset(data, chosen, 3, training=True, seed=6,
                                                           shuffle_buffer=4), 8))
    # a resumed run (5 batches = 15 samples: one epoch and 7) continues the same stream
    resumed = _labels(make_dataset(data, chosen, 3, training=True, seed=5, shuffle_buffer=4, skip_batches=5), 3)
    np.testing.assert_array_equal(resumed, stream[15:24])


def test_augmented_stream_resumes_exactly(tmp_path):
    data = _sharded(tmp_path / "s", n=5, shards=2)
    full = list(make_dataset(data, range(5), 2, training=True, seed=1, augment=True).take(6))
    resumed = list(make_dataset(data, range(5), 2, training=True, seed=1, augment=True, skip_batches=4).take(2))
    assert not np.allclose(full[0][0]["t1w_a"].numpy()[0, ..., 0], data.images_at([int(full[0][1][0, 0])])["t1w_a"][0])
    for (xa, ya), (xb, yb) in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_array_equal(xa["t2w_e"].numpy(), xb["t2w_e"].numpy())


def test_workers_get_disjoint_shards_that_cover_every_infant(tmp_path):
    data = _sharded(tmp_path / "s", n=13, shards=5)
    chosen = np.arange(13)
    seen = []
    for w in range(2):
        evaluated = _labels(make_dataset(data, chosen, 4, training=False, worker=(w, 2)), 99)
        first_epoch = _labels(make_dataset(data, chosen, 1, training=True, worker=(w, 2)), evaluated.size)
        assert sorted(first_epoch) == sorted(evaluated)
        assert set(data.shard[evaluated]) == set(range(5)[w::2])  # whole shard files, every other one
        seen.append(evaluated)
    assert not set(seen[0]) & set(seen[1]) and sorted(np.concatenate(seen)) == chosen.tolist()
    with pytest.raises(ConfigError, match="5 shard.*6 workers.*reshard"):
        make_dataset(data, chosen, 4, training=True, worker=(0, 6))
    # the in-memory set divides infants instead
    npz = TenSliceSet({n: np.zeros((7, 4, 4), np.float32) for n in INPUT_NAMES}, np.arange(7).astype(str),
                      np.arange(7, dtype=np.float32), {})
    parts = [_labels(make_dataset(npz, range(7), 7, training=False, worker=(w, 3)), 1) for w in range(3)]
    assert sorted(np.concatenate(parts)) == list(range(7)) and [p.size for p in parts] == [3, 2, 2]


def test_predict_ages_and_monitor_set_read_only_the_infants_asked_for(tiny_tenslice, sharded_cache, monkeypatch):
    import keras

    from kerasmyelin.training.experiment import predict_ages
    from kerasmyelin.training.summaries import MonitorSet

    inputs = {n: keras.Input((32, 32, 1), name=n) for n in INPUT_NAMES}
    brightness = keras.layers.GlobalAveragePooling2D()(inputs["t1w_c"])  # (batch, 1): one number per infant
    model = keras.Model(inputs, brightness)
    npz, sharded = read_cache(tiny_tenslice), read_shards(sharded_cache)
    order = [12, 1, 7, 7, 0]
    read = []
    real = ShardedTenSliceSet.records
    monkeypatch.setattr(ShardedTenSliceSet, "records", lambda self, idx: read.extend(idx) or real(self, idx))
    got = predict_ages(model, sharded, order, batch_size=2)
    np.testing.assert_allclose(got, npz.images["t1w_c"][order].mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(got, predict_ages(model, npz, order, batch_size=2))
    assert sorted(read) == sorted(order)
    monitor = MonitorSet.from_data(sharded, [3, 14, 5], "validation")
    np.testing.assert_array_equal(monitor.images["t2w_a"], npz.images["t2w_a"][[3, 14, 5]])
    np.testing.assert_array_equal(monitor.participant_id, npz.participant_id[[3, 14, 5]])


def _damage(path, at, length=4):
    raw = bytearray(path.read_bytes())
    raw[at:at + length] = bytes(b ^ 0xFF for b in raw[at:at + length])
    path.write_bytes(bytes(raw))


def test_damaged_truncated_or_missing_shards_are_named(tmp_path):
    good = tmp_path / "good"
    _sharded(good)
    shard = "tenslice-00001-of-00003.tfrecord"

    def broken(name, change):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder / shard)
        return folder

    with pytest.raises(InputError, match=f"{shard}.*truncated"):
        read_shards(broken("short", lambda p: p.write_bytes(p.read_bytes()[:-100])))
    with pytest.raises(InputError, match=f"{shard}.*missing"):
        read_shards(broken("gone", lambda p: p.unlink()))
    with pytest.raises(InputError, match=f"{shard}.*damaged"):  # the first record's CRC
        read_shards(broken("first", lambda p: _damage(p, 200)))
    later = read_shards(broken("later", lambda p: _damage(p, p.stat().st_size - 300)))  # opens: cheap checks pass
    last = int(np.flatnonzero(later.shard == 1)[-1])
    with pytest.raises(InputError, match=f"{shard}.*sub-{last:03d}"):
        later.images_at([0, last])
    with pytest.raises(InputError, match=f"{shard}.*sha256"):
        later.verify()
    later.images_at([0, last - 1])  # the undamaged records still read


@pytest.mark.parametrize("edit, match", [
    (lambda i: "{not json", "unreadable"),
    (lambda i: dict(i, version=99), "version 99"),
    (lambda i: dict(i, image_shape=[32, 32]), "images are 16x16"),
    (lambda i: dict(i, subjects=[dict(s, participant_id="sub-000") for s in i["subjects"]]), "sub-000 is listed twice"),
    (lambda i: dict(i, shards=[dict(s, records=9) for s in i["shards"]]), "holds 9 records"),
    (lambda i: dict(i, shards=[dict(s, file="../x.tfrecord") for s in i["shards"]]), "no valid file name"),
])
def test_a_bad_index_is_named(tmp_path, edit, match):
    _sharded(tmp_path)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    changed = edit(index)
    (tmp_path / INDEX_FILE).write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(InputError, match=f"{INDEX_FILE}|tenslice-00000") as info:
        read_shards(tmp_path)
    assert match in str(info.value)


def test_synth_builds_shards_in_parallel_workers_as_one_process_does(tmp_path):
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.synth.cohort import CohortConfig
    from kerasmyelin.synth.dataset import TENSLICE_DIR, build_cohort

    config, prep = CohortConfig(subjects=3, seed=4), PrepConfig(image_size=32)
    one = build_cohort(tmp_path / "one", config, jobs=1, shards=2, volumes=False, prep=prep, progress=False)
    two = build_cohort(tmp_path / "two", config, jobs=2, shards=2, volumes=False, prep=prep, progress=False)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    assert not list(one.rglob("*.nii.gz")) and "cannot be prepared again" in (one / "README").read_text()
    data = read_shards(one / TENSLICE_DIR)
    assert len(data) == 3 and data.image_shape == (32, 32) and len(data.shard_files) == 2
    assert float(data.images_at([2])["t2w_c"].max()) > 0.1  # a prepared head, not zeros
    # the builder forks its workers from a parent that has not started TensorFlow
    code = "import sys, kerasmyelin.synth.dataset, kerasmyelin.cli.synth_cmd; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO))).stdout.strip() == "False"


def test_a_failing_shard_stops_the_other_workers_and_leaves_nothing(tmp_path, monkeypatch):
    import time

    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.synth import dataset
    from kerasmyelin.synth.cohort import CohortConfig

    def fake(spec, root, prep, res_mm, volumes):  # runs in the forked workers
        if spec.participant_id == "sub-001":
            time.sleep(0.3)  # both shard tasks have started
            raise ValueError("simulated failure")
        time.sleep(1.5)  # the other worker is in sub-003 when sub-001 fails
        (tmp_path / spec.participant_id).touch()
        return {"spec": spec, "images": {n: np.zeros((32, 32), np.float32) for n in INPUT_NAMES}}

    monkeypatch.setattr(dataset, "_make_subject", fake)
    with pytest.raises(ValueError, match="simulated failure"):
        dataset.build_cohort(tmp_path / "c", CohortConfig(subjects=4, seed=1), jobs=2, shards=2, volumes=False,
                             prep=PrepConfig(image_size=32), progress=False)
    # the other worker stopped before sub-004 (it does not finish its shard first); no cohort is left
    assert {p.name for p in tmp_path.iterdir()} <= {"sub-003"}


def test_train_and_predict_on_a_sharded_cache_through_the_command_line(tiny_tenslice, tmp_path, capsys):
    sharded = tmp_path / "sharded"
    assert main(["shard", "--data", str(tiny_tenslice), "--out", str(sharded), "--shards", "3"]) == 0
    assert main(["shard", "--verify", str(sharded)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--config", str(SMOKE_YAML), "--data", str(sharded), "--out", str(run), "--fold", "0",
                 "--set", "train.epochs=1", "--quiet"]) == 0
    assert json.loads((run / "run.json").read_text())["sha256"] == sha256_file(sharded / INDEX_FILE)
    rows = (run / "fold-0" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 8  # header + the fold's test infants
    capsys.readouterr()
    estimates = {}
    for name, folder in (("sharded", sharded), ("npz", tiny_tenslice)):
        assert main(["predict", "--model", str(run / "fold-0"), "--data", str(folder)]) == 0
        estimates[name] = capsys.readouterr().out
    assert estimates["sharded"] == estimates["npz"] and estimates["npz"].count("estimated") == 16
