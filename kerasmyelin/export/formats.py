"""Write a model as a TensorFlow SavedModel, an ONNX file or a portable ``.keras`` file.

Every format takes the model's named float32 inputs (the ten of ``levels.INPUT_NAMES``, or a
single-contrast network's five: ``levels.contrast_input_names``), each (batch, size, size, 1),
in ``INPUT_NAMES`` order, and gives one output, ``OUTPUT_KEY``: (batch, 1) estimated
myelination age in months.
Each export is the graph of ``portable.portable_model`` (an ensemble is one graph), written under
a temporary name, reloaded and compared with the Keras model on random images, and only then
renamed into place: a failed or inexact export never lands at ``out``.

Every export carries the model's record (``model_record``: preparation settings, image size,
inputs, trained ages, norms), since a deployer must prepare slices exactly as in training:
``assets.extra/kerasmyelin.json`` in a SavedModel (TensorFlow Serving ignores that folder),
``metadata_props["kerasmyelin"]`` (JSON text) in an ONNX file, the archive member
``kerasmyelin.json`` in a ``.keras`` file (Keras ignores it). ``read_export_record`` reads it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasmyelin.errors import ConfigError, InputError, OutputError
from kerasmyelin.io.model_files import embed_record
from kerasmyelin.levels import contrast_input_names, contrasts_of
from kerasmyelin.model_record import ONNX_KEY, RECORD_NAME

FORMATS = ("saved_model", "onnx", "keras")
OUTPUT_KEY = "age_months"
SIGNATURE = "serving_default"
# Largest accepted |export - Keras| in months. ONNX Runtime picks its own convolution kernels, so
# it gets more room than TensorFlow reading its own graph back.
TOLERANCE_MONTHS = {"saved_model": 1e-5, "onnx": 1e-4, "keras": 1e-5}
# Written inside a SavedModel folder (TensorFlow ignores it): what the folder holds. What lets
# --overwrite replace the folder is the output marker (io.output_dir), not this file.
EXPORT_INFO = "export.json"
SUFFIXES = {"onnx": ".onnx", "keras": ".keras"}
PROBE_BATCH = 4


@dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote.

    Attributes:
        path: the SavedModel folder or the ``.onnx`` / ``.keras`` file.
        format: one of ``FORMATS``.
        input_names: the input names (the ten, or one contrast's five), in ``INPUT_NAMES`` order.
        input_shape: each input's shape, (None, size, size, 1).
        output_key: the output's name.
        max_abs_diff_months: largest |export - Keras| on the check batch; None when not checked
            (ONNX without onnxruntime).
    """

    path: Path
    format: str
    input_names: tuple[str, ...]
    input_shape: tuple
    output_key: str
    max_abs_diff_months: float | None

    def describe(self) -> list[str]:
        """Lines telling a user what was written and how to call it."""
        shape = "(" + ", ".join("None" if d is None else str(d) for d in self.input_shape) + ")"
        where = f"signature '{SIGNATURE}' (tag 'serve')" if self.format == "saved_model" else "graph"
        if self.max_abs_diff_months is None:
            check = "not checked against Keras (pip install onnxruntime to check)"
        else:
            check = (f"reloaded and checked: max |export - Keras| = {self.max_abs_diff_months:.1e} months "
                     f"(limit {TOLERANCE_MONTHS[self.format]:g})")
        return [f"wrote {self.format} {self.path}",
                f"{where}:",
                f"  inputs  {', '.join(self.input_names)}: float32 {shape} each",
                f"  output  {self.output_key}: float32 (None, 1), estimated myelination age in months",
                check]


def export_model(model, out: str | os.PathLike, fmt: str, *, overwrite: bool = False,
                 source: str = "", inputs=(), record=None) -> ExportResult:
    """Write ``model`` to ``out`` in format ``fmt``.

    Args:
        model: functional ``keras.Model`` taking the ten named (batch, size, size, 1) inputs, or
            one contrast's five, and returning (batch, 1) age in months.
        out: SavedModel folder, or the ``.onnx`` / ``.keras`` file to write.
        fmt: one of ``FORMATS``.
        overwrite: replace an existing export at ``out``.
        source: where the model came from (recorded in the export's metadata).
        inputs: (label, path) pairs ``out`` must stay apart from (the model's files).
        record: the model's ``ModelRecord``, stored in the export (see the module docstring).

    Raises:
        ConfigError: unknown format, or ONNX without its packages.
        InputError: the model does not take the ten named inputs, nor one contrast's five.
        OutputError: ``out`` is occupied (without ``overwrite``) or cannot be written, or the
            reloaded export differs from the model by more than ``TOLERANCE_MONTHS``.
    """
    from kerasmyelin.export.portable import portable_model

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = check_target(out, fmt, overwrite, inputs)
    names = tuple(t.name.split(":")[0] for t in model.inputs)
    try:
        names = contrast_input_names(contrasts_of(names))
    except ValueError as exc:
        raise InputError(f"not a myelination-age model: {exc}") from None
    if record is not None and tuple(record.inputs) != names:
        raise InputError(f"the model takes {list(names)} but its record says {list(record.inputs)}")
    graph = portable_model(model)
    shape = (None, *(int(d) for d in model.inputs[0].shape[1:]))
    probe = _probe_inputs(shape, names)
    expected = np.asarray(model(probe, training=False), dtype=np.float64)
    writer = {"saved_model": _write_saved_model, "onnx": _write_onnx, "keras": _write_keras}[fmt]
    text = record.dumps() if record is not None else None
    diff = writer(graph, out, probe, expected, shape=shape, source=source, overwrite=overwrite, inputs=inputs,
                  record=text)
    return ExportResult(out, fmt, names, shape, OUTPUT_KEY, diff)


def check_target(out, fmt: str, overwrite: bool, inputs=()) -> Path:
    """``out`` as an absolute path, checked to be writable in format ``fmt`` (nothing is created).

    Raises:
        OutputError: ``out`` is occupied (without ``overwrite``), has the wrong suffix, or
            cannot be written.
    """
    from kerasmyelin.io.output_dir import check_output, check_output_file

    out = Path(out).expanduser().absolute()
    if fmt == "saved_model":
        return check_output(out, "savedmodel", overwrite=overwrite, inputs=inputs)
    suffix = SUFFIXES[fmt]
    if out.suffix != suffix:
        raise OutputError(f"{out}: a {fmt} export is a file ending in {suffix}")
    return check_output_file(out, overwrite=overwrite, inputs=inputs)


def _probe_inputs(shape, names) -> dict[str, np.ndarray]:
    """A small fixed batch of random images in [0, 1), the range of prepared slices, per input."""
    rng = np.random.default_rng(0)
    return {n: rng.random((PROBE_BATCH, *shape[1:]), dtype=np.float32) for n in names}


def _checked(fmt: str, got, expected: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= TOLERANCE_MONTHS[fmt]:
        raise OutputError(f"the reloaded {fmt} export differs from the Keras model by {diff:.3g} months "
                          f"(limit {TOLERANCE_MONTHS[fmt]:g}); nothing was written")
    return diff


def _write_saved_model(graph, out: Path, probe, expected, *, shape, source, overwrite, inputs=(), record=None) -> float:
    import keras
    import tensorflow as tf

    from kerasmyelin import __version__
    from kerasmyelin.io.atomic import sha256_file
    from kerasmyelin.io.model_files import MANIFEST
    from kerasmyelin.io.output_dir import MARKER, OutputFolder

    spec = {n: tf.TensorSpec(shape, tf.float32, name=n) for n in probe}
    # No archive.track(graph): the endpoint's variables are saved anyway, and tracking the model
    # as well stores every weight a second time (Keras 3.15; twice the size, same outputs).
    archive = keras.export.ExportArchive()
    # A dict output names the age in the signature (Keras' default would call it output_0).
    archive.add_endpoint("serve", lambda inputs: {OUTPUT_KEY: graph(inputs, training=False)},
                         input_signature=[spec])
    with OutputFolder(out, "savedmodel", overwrite=overwrite, inputs=inputs, what="kerasmyelin export") as folder:
        tmp = folder.work
        archive.write_out(str(tmp), verbose=False)
        signature = tf.saved_model.load(str(tmp)).signatures[SIGNATURE]
        diff = _checked("saved_model", signature(**probe)[OUTPUT_KEY], expected)
        info = {"written_by": f"kerasmyelin {__version__}", "format": "saved_model", "source": source,
                "signature": SIGNATURE, "inputs": list(probe), "input_shape": list(shape),
                "input_dtype": "float32", "output": OUTPUT_KEY, "output_unit": "months",
                "max_abs_diff_months": diff}
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n")
        if record is not None:
            (tmp / "assets.extra").mkdir(exist_ok=True)
            (tmp / "assets.extra" / RECORD_NAME).write_text(record)
        # `sha256sum -c SHA256SUMS` inside the folder shows that no file changed since export.
        # The output marker is not listed: it is the output folder's, and changes as the folder completes.
        lines = [f"{sha256_file(f)}  {f.relative_to(tmp).as_posix()}" for f in sorted(tmp.rglob("*"))
                 if f.is_file() and f.name != MARKER]
        (tmp / MANIFEST).write_text("\n".join(lines) + "\n")
    return diff


def _write_onnx(graph, out: Path, probe, expected, *, shape, source, overwrite, inputs=(), record=None) -> float | None:
    import tensorflow as tf

    from kerasmyelin import __version__
    from kerasmyelin.io.atomic import write_bytes_atomic

    try:
        import onnx
        import tf2onnx  # noqa: F401  (Keras converts through it)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx and tf2onnx packages ({exc}); "
                          "install them with: pip install 'kerasmyelin[onnx]'") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        converted = Path(tmp) / "model.onnx"
        spec = {n: tf.TensorSpec(shape, tf.float32, name=n) for n in probe}
        with _quiet_converter():
            graph.export(str(converted), format="onnx", verbose=False, input_signature=[spec])
        proto = onnx.load(str(converted))
    _name_onnx_graph(proto, {"written_by": f"kerasmyelin {__version__}", "source": source,
                             "output_unit": "months", **({ONNX_KEY: record} if record is not None else {})})
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = None
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        diff = _checked("onnx", session.run([OUTPUT_KEY], probe)[0], expected)
    write_bytes_atomic(out, data)
    _write_checksum(out)
    return diff


def _name_onnx_graph(proto, metadata: dict[str, str]) -> None:
    """Call the output ``OUTPUT_KEY`` (tf2onnx keeps TensorFlow's "Identity:0") and every first
    dimension "batch" (tf2onnx writes "unk__NNN"); record ``metadata`` in the file."""
    graph = proto.graph
    old = graph.output[0].name
    for node in graph.node:
        node.input[:] = [OUTPUT_KEY if name == old else name for name in node.input]
        node.output[:] = [OUTPUT_KEY if name == old else name for name in node.output]
    graph.output[0].name = OUTPUT_KEY
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


@contextlib.contextmanager
def _quiet_converter():
    """tf2onnx logs every conversion step at INFO, and Keras' numpy-2 patch for it warns about
    ``np.object``; users need the result only."""
    import logging
    import warnings

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def read_export_record(path: str | os.PathLike):
    """The ``ModelRecord`` an export carries (any of the three formats); None when it has none
    (an export from before records). InputError naming the file when it cannot be read."""
    from kerasmyelin.io.model_files import read_embedded_record
    from kerasmyelin.model_record import ModelRecord

    path = Path(path)
    if path.is_dir():
        file = path / "assets.extra" / RECORD_NAME
        return ModelRecord.loads(file.read_text(), file) if file.is_file() else None
    if path.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 -- protobuf raises several types for a damaged file
            raise InputError(f"not a readable ONNX file ({type(exc).__name__})", path) from None
        props = {p.key: p.value for p in proto.metadata_props}
        return ModelRecord.loads(props[ONNX_KEY], path) if ONNX_KEY in props else None
    text = read_embedded_record(path)
    return None if text is None else ModelRecord.loads(text, path)


def _write_keras(graph, out: Path, probe, expected, *, shape, source, overwrite, inputs=(), record=None) -> float:
    import keras

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.keras")
    try:
        graph.save(str(tmp))
        # The graph holds only Keras classes, so this load needs nothing from kerasmyelin.
        reloaded = keras.models.load_model(str(tmp), compile=False, safe_mode=True)
        diff = _checked("keras", reloaded(probe, training=False), expected)
        if record is not None:
            embed_record(tmp, record)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    _write_checksum(out)
    return diff


def _write_checksum(out: Path) -> Path:
    """``OUT.sha256`` beside a one-file export, in ``sha256sum`` format (``sha256sum -c`` reads it)."""
    from kerasmyelin.io.atomic import sha256_file, write_text_atomic

    return write_text_atomic(out.with_name(out.name + ".sha256"), f"{sha256_file(out)}  {out.name}\n")
