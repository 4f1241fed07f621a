"""``kerasmyelin export``: each format reloads in its own runtime and gives the Keras model's ages.

Models are smoke-sized (32x32 slices, tiny dense layers) and untrained; the ensemble's members
have their output biases set to 10 and 14 months so the gate sits inside its 8-16 month
hand-over, where both members count and a wrong rule would show.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmyelin.cli.main import main
from kerasmyelin.errors import OutputError
from kerasmyelin.export.formats import OUTPUT_KEY, check_target, export_model
from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.models.ensemble import build_ensemble
from kerasmyelin.models.myelin_cnn import ModelConfig, build_myelin_cnn
from kerasmyelin.training.callbacks import save_keras_atomic
from kerasmyelin.training.config import TrainConfig
from kerasmyelin.training.objective import compile_for_training

from .conftest import SMOKE_YAML

SIZE = 32
SMOKE_MODEL = ModelConfig(image_size=SIZE, branch_units=16, side_units=(16, 16), joint_units=(16, 8, 4))


def _member(name: str, bias_months: float, seed: int):
    keras.utils.set_random_seed(seed)
    model = build_myelin_cnn(SMOKE_MODEL, name=name)
    model.get_layer("age").bias.assign([bias_months])
    return model


@pytest.fixture(scope="module")
def models():
    """{"plain": the network, "ensemble": the gated ensemble as one graph}."""
    ensemble = build_ensemble([("younger", _member("younger", 10.0, 1)), ("older", _member("older", 14.0, 2))],
                              rule="gate", name="smoke_ensemble")
    return {"plain": _member("myelin_cnn", 6.0, 0), "ensemble": ensemble}


def images(n: int = 5, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.random((n, SIZE, SIZE, 1), dtype=np.float32) for name in INPUT_NAMES}


def ages(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False), dtype=np.float64)


@pytest.mark.parametrize("kind", ["plain", "ensemble"])
def test_saved_model_serves_the_ten_named_inputs_and_the_same_ages(models, kind, tmp_path):
    import tensorflow as tf

    model, out = models[kind], tmp_path / "saved"
    result = export_model(model, out, "saved_model")
    assert result.max_abs_diff_months <= 1e-5
    signature = tf.saved_model.load(str(out)).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    assert sorted(specs) == sorted(INPUT_NAMES)
    assert all(s.dtype == tf.float32 and s.shape.as_list() == [None, SIZE, SIZE, 1] for s in specs.values())
    assert list(signature.structured_outputs) == [OUTPUT_KEY]
    x = images()
    np.testing.assert_allclose(signature(**x)[OUTPUT_KEY].numpy(), ages(model, x), rtol=0, atol=1e-5)
    if kind == "ensemble":  # inside the hand-over: both members count
        assert np.all((ages(model, x) > 10.0) & (ages(model, x) < 14.0))
    with pytest.raises(OutputError, match="--overwrite"):
        check_target(out, "saved_model", overwrite=False)
    assert check_target(out, "saved_model", overwrite=True) == out  # the output marker says it is ours
    # Every exported file is in the folder's SHA256SUMS, with its hash (the output marker apart).
    from kerasmyelin.io.atomic import sha256_file

    listed = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(listed) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS",
                                                                                                ".kerasmyelin-output.json"}
    assert all(sha256_file(out / name) == digest for name, digest in listed.items())


@pytest.mark.slow  # tf2onnx conversion of paper-size graphs
@pytest.mark.parametrize("kind", ["plain", "ensemble"])
def test_onnx_runs_in_onnxruntime_with_the_same_ages(models, kind, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")

    model, out = models[kind], tmp_path / "model.onnx"
    export_model(model, out, "onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert session.get_inputs()[0].shape == ["batch", SIZE, SIZE, 1]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_KEY]
    x = images()
    np.testing.assert_allclose(session.run([OUTPUT_KEY], x)[0], ages(model, x), rtol=0, atol=1e-4)


# Runs in a fresh interpreter: plain Keras, safe_mode on, no custom objects, no kerasmyelin.
LOAD_WITHOUT_KERASMYELIN = """
import json, sys
import numpy as np
import keras
x = dict(np.load(sys.argv[1]))
out = {}
for path in sys.argv[2:]:
    model = keras.models.load_model(path, safe_mode=True)
    out[path] = np.asarray(model(x, training=False)).ravel().tolist()
assert not any(m.split(".")[0] == "kerasmyelin" for m in sys.modules), "kerasmyelin was imported"
print(json.dumps(out))
"""


def _fake_run(folder, fold_models: dict) -> None:
    """A run folder holding only what model resolution reads: config.yaml, run.json (its record)
    and model files."""
    from kerasmyelin.data.prepare import PrepConfig
    from kerasmyelin.model_record import ModelRecord
    from kerasmyelin.runs import RunFolder

    folder.mkdir()
    shutil.copy(SMOKE_YAML, folder / "config.yaml")
    from kerasmyelin.levels import contrast_input_names, contrasts_of
    from kerasmyelin.models.graph import model_input_names

    first = next(iter(fold_models.values()), None)
    size = int(first.inputs[0].shape[1]) if first is not None else 32
    contrasts = contrasts_of(model_input_names(first)) if first is not None else ("T1w", "T2w")
    record = ModelRecord(prep_config=PrepConfig(image_size=size).as_dict(), image_size=size,
                         inputs=contrast_input_names(contrasts), contrasts=contrasts)
    RunFolder(folder).write_info(folder / "no-cache", "0" * 64, record)
    for sub, model in fold_models.items():
        save_keras_atomic(model, folder / sub / "model.keras", record=record.dumps())


@pytest.mark.slow
def test_keras_files_load_with_safe_mode_without_kerasmyelin(models, tmp_path, capsys):
    # a run trained on all infants (the ensemble), and a run with only fold models (exported as
    # their mean: the ensemble's combiner then sits two graphs deep)
    # compiled like a final.keras: its compile config names kerasmyelin's FusedAdam
    compiled = keras.models.clone_model(models["plain"])
    compiled.set_weights(models["plain"].get_weights())
    compile_for_training(compiled, TrainConfig())
    _fake_run(tmp_path / "full_run", {"full": models["ensemble"]})
    _fake_run(tmp_path / "cv_run", {"fold-0": models["ensemble"], "fold-1": compiled})
    exports = {"full_run": tmp_path / "full.keras", "cv_run": tmp_path / "cv.keras"}
    for run, path in exports.items():
        assert main(["export", str(tmp_path / run), "--format", "keras", "--out", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"output  {OUTPUT_KEY}" in printed and "t1w_a, t1w_b" in printed

    x = images()
    np.savez(tmp_path / "x.npz", **x)
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_KERASMYELIN, str(tmp_path / "x.npz"),
                           *map(str, exports.values())], check=False, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"full_run": ages(models["ensemble"], x),
                "cv_run": (ages(models["ensemble"], x) + ages(models["plain"], x)) / 2}
    for key, path in exports.items():
        np.testing.assert_allclose(loaded[str(path)], expected[key].ravel(), rtol=0, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("case, needle", [
    ("missing_run", "not found"),
    ("run_without_model", "no trained model here"),
    ("occupied_file", "exists; pass --overwrite"),
    ("foreign_folder", "did not write"),
    ("wrong_suffix", "ending in .onnx"),
])
def test_bad_export_requests_exit_2_with_a_clear_message(models, case, needle, tmp_path, capsys):
    run = tmp_path / "run"
    if case != "missing_run":
        _fake_run(run, {} if case == "run_without_model" else {"full": models["plain"]})
    fmt, out, extra = "keras", tmp_path / "out.keras", []
    if case == "occupied_file":
        out.write_bytes(b"someone's file")
    elif case == "foreign_folder":
        fmt, out, extra = "saved_model", tmp_path / "mine", ["--overwrite"]
        out.mkdir()
        (out / "notes.txt").write_text("not an export")
    elif case == "wrong_suffix":
        fmt = "onnx"
    assert main(["export", str(run), "--format", fmt, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    if case == "occupied_file":
        assert out.read_bytes() == b"someone's file"
        assert main(["export", str(run), "--format", fmt, "--out", str(out), "--overwrite"]) == 0
        assert out.read_bytes()[:2] == b"PK"  # now a .keras zip


def test_unknown_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["export", "run", "--format", "tflite", "--out", "x"])
    assert stop.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_saved_model_of_a_single_contrast_network_signs_its_five_inputs(tmp_path, capsys):
    import tensorflow as tf

    from kerasmyelin.errors import InputError
    from kerasmyelin.export.formats import read_export_record
    from kerasmyelin.model_record import ModelRecord

    five = ("t1w_a", "t1w_b", "t1w_c", "t1w_d", "t1w_e")
    keras.utils.set_random_seed(3)
    model = build_myelin_cnn(ModelConfig(**{**SMOKE_MODEL.as_dict(), "contrasts": ("T1w",)}), name="t1w_only")
    _fake_run(tmp_path / "run", {"full": model})
    out = tmp_path / "saved"
    assert main(["export", str(tmp_path / "run"), "--format", "saved_model", "--out", str(out)]) == 0
    assert "inputs  t1w_a, t1w_b, t1w_c, t1w_d, t1w_e: float32" in capsys.readouterr().out
    signature = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == list(five)
    assert json.loads((out / "export.json").read_text())["inputs"] == list(five)
    assert read_export_record(out).contrasts == ("T1w",)
    x = {n: v for n, v in images().items() if n in five}
    np.testing.assert_allclose(signature(**x)[OUTPUT_KEY].numpy(), ages(model, x), rtol=0, atol=1e-5)
    # a record that names other inputs than the model takes is not exported
    ten = ModelRecord(prep_config={"image_size": SIZE}, image_size=SIZE)
    with pytest.raises(InputError, match="its record says"):
        export_model(model, tmp_path / "other", "saved_model", record=ten)
