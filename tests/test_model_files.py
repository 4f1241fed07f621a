"""Model files are loaded only when kerasmyelin wrote them: checksum manifest, layer allow-list,
archive shape. The archives here are written by hand (no Keras), so each check is seen alone."""

import json
import zipfile

import pytest

from kerasmyelin.cli.main import main
from kerasmyelin.errors import InputError
from kerasmyelin.io.model_files import MANIFEST, check_archive, read_manifest, record, trust, verify


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


def test_trust_command_admits_a_clean_file_and_refuses_a_foreign_one(tmp_path, capsys):
    clean = _archive(tmp_path / "old.keras")
    assert main(["trust", str(clean)]) == 0
    verify(clean)
    assert "trusted" in capsys.readouterr().out
    foreign = _archive(tmp_path / "evil.keras", classes=("Lambda",))
    assert main(["trust", str(foreign)]) == 2
    assert "evil.keras" in capsys.readouterr().err and "evil.keras" not in read_manifest(tmp_path)
    with pytest.raises(InputError, match="not found"):
        trust(tmp_path / "missing.keras")
