"""Model files are loaded only when kerasmyelin wrote them: checksum manifest, layer allow-list,
archive shape. The archives here are written by hand (no Keras), so each check is seen alone;
``trust``, which also has Keras load the weights, gets a tiny real model."""

import json
import zipfile

import pytest

from kerasmyelin.cli.main import main
from kerasmyelin.errors import InputError
from kerasmyelin.io.model_files import (
    MANIFEST,
    check_archive,
    check_integrity,
    read_manifest,
    record,
    trust,
    verify,
)


def _archive(path, classes=("InputLayer", "Conv2D", "Dense"), module="keras.layers", members=None):
    config = {"class_name": "Functional", "module": "keras.src.models.functional",
              "config": {"layers": [{"class_name": c, "module": module, "config": {}} for c in classes]}}
    files = {"config.json": json.dumps(config), "metadata.json": "{}", "model.weights.h5": b"\x89HDF"}
    files.update(members or {})
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_recorded_file_verifies_and_a_changed_or_unlisted_one_does_not(tmp_path):
    a, b = _archive(tmp_path / "a.keras"), _archive(tmp_path / "b.keras", classes=("Dense",))
    record(a)
    record(b)
    verify(a)
    verify(b)
    assert set(read_manifest(tmp_path)) == {"a.keras", "b.keras"}
    # The manifest is sha256sum's format, so `sha256sum -c SHA256SUMS` checks it too.
    assert all(len(line.split("  ")[0]) == 64 for line in (tmp_path / MANIFEST).read_text().splitlines())
    b.write_bytes(b.read_bytes() + b"\0")
    with pytest.raises(InputError, match="changed after kerasmyelin wrote it") as err:
        verify(b)
    assert "b.keras" in str(err.value)
    c = _archive(tmp_path / "c.keras")
    with pytest.raises(InputError, match="not listed in .*kerasmyelin trust"):
        verify(c)


@pytest.mark.parametrize("kwargs,phrase", [
    ({"classes": ("Dense", "Lambda")}, "never writes: Lambda .*Python code"),
    ({"classes": ("Dense", "TFSMLayer")}, "never writes: TFSMLayer"),
    ({"module": "os.path"}, "outside keras and kerasmyelin .*os.path"),
    ({"members": {"payload.py": "import os"}}, "unexpected members \\['payload.py'\\]"),
])
def test_foreign_archives_are_refused_by_name(tmp_path, kwargs, phrase):
    path = _archive(tmp_path / "m.keras", **kwargs)
    with pytest.raises(InputError, match=phrase):
        check_archive(path)


def test_not_a_zip_and_a_broken_manifest_are_named(tmp_path):
    bad = tmp_path / "m.keras"
    bad.write_bytes(b"PK\x03\x04 but no archive")
    with pytest.raises(InputError, match="not a zip file"):
        check_archive(bad)
    (tmp_path / MANIFEST).write_text("deadbeef m.keras\n")
    with pytest.raises(InputError, match="line 1 is not") as err:
        read_manifest(tmp_path)
    assert MANIFEST in str(err.value)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real .keras file of the project's network at a tiny size (no SHA256SUMS beside it)."""
    pytest.importorskip("keras")
    from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_myelin_cnn(ModelConfig(image_size=32, conv_filters=(4, 2), branch_units=8, side_units=(8,),
                                 joint_units=(8,))).save(path)
    return path.read_bytes()


def test_trust_command_admits_a_clean_file_and_refuses_a_foreign_one(tmp_path, capsys, tiny_model):
    clean = tmp_path / "old.keras"
    clean.write_bytes(tiny_model)
    assert main(["trust", str(clean)]) == 0
    verify(clean)
    assert "trusted" in capsys.readouterr().out
    foreign = _archive(tmp_path / "evil.keras", classes=("Lambda",))
    assert main(["trust", str(foreign)]) == 2
    assert "evil.keras" in capsys.readouterr().err and "evil.keras" not in read_manifest(tmp_path)
    with pytest.raises(InputError, match="not found"):
        trust(tmp_path / "missing.keras")


def _flip_byte_in(data: bytes, member: str) -> bytes:
    """The archive with one byte of ``member``'s stored data inverted (its CRC-32 left as it was)."""
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # past the local header
    damaged = bytearray(data)
    damaged[start + info.compress_size // 2] ^= 0xFF
    return bytes(damaged)


@pytest.mark.parametrize("damage,phrase", [
    (lambda d: _flip_byte_in(d, "model.weights.h5"), "model.weights.h5 fails its CRC-32 checksum"),
    (lambda d: _flip_byte_in(d, "config.json"), "config.json"),
    (lambda d: d[: len(d) // 2], "probably truncated"),
    (lambda d: d[:-10], "not a zip file"),
])
def test_trust_refuses_a_damaged_archive_and_records_nothing(tmp_path, capsys, tiny_model, damage, phrase):
    path = tmp_path / "copied.keras"
    path.write_bytes(damage(tiny_model))
    assert main(["trust", str(path)]) == 2
    err = capsys.readouterr().err
    assert "copied.keras" in err and phrase in err, err
    assert not (tmp_path / MANIFEST).exists()


def test_trust_refuses_weights_keras_cannot_load(tmp_path, tiny_model):
    """Intact zip, right members and classes, but the weights are not the network's."""
    import io

    import keras

    with zipfile.ZipFile(io.BytesIO(tiny_model)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(1, name="age")(x)).save(tmp_path / "dense.keras")
    with zipfile.ZipFile(tmp_path / "dense.keras") as z:
        other = z.read("model.weights.h5")  # sound HDF5, another network's weights
    for name, weights in (("garbage.keras", b"\x89HDF not an HDF5 file"), ("other.keras", other)):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            for member, data in members.items():
                z.writestr(member, weights if member == "model.weights.h5" else data)
        check_integrity(path)  # the zip itself is sound
        with pytest.raises(InputError, match="Keras cannot load it|weights do not all load") as err:
            trust(path)
        assert name in str(err.value)
    assert read_manifest(tmp_path) == {}
