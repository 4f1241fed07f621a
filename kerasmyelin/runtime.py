"""TensorFlow's CPU settings that make the paper's network train ~4x faster, applied on import.

Set through environment variables, which TensorFlow reads when it starts, so they must be in place
before ``import tensorflow``; ``import kerasmyelin`` sets them (first) unless the user already has:

- ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow's x86 wheels switch oneDNN's kernels on only for some
  Intel CPUs; elsewhere (the AMD EPYC machines this project is measured on) convolutions run on
  Eigen's generic kernels, several times slower (docs/performance.md). Same arithmetic, different
  summation order (results agree to float32 round-off, tested).
- ``TF_NUM_INTRAOP_THREADS=1``, ``TF_NUM_INTEROP_THREADS=<cores>`` on machines with up to 4 cores:
  the ten branches are independent, and running them side by side, one thread each, beats
  splitting each small convolution across the cores (+19-21% on 2 cores in the recorded runs). Larger machines keep
  TensorFlow's defaults.

``benchmarks/bench_speed.py`` measures all of it against the plain settings; ``docs/performance.md``
has the figures. ``state()`` reports what the running process got.
"""

from __future__ import annotations

import os
import sys

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
INTRA = "TF_NUM_INTRAOP_THREADS"
INTER = "TF_NUM_INTEROP_THREADS"
SMALL_MACHINE_CORES = 4


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fast_cpu_settings(cores: int | None = None) -> dict[str, str]:
    """The environment variables kerasmyelin sets for a machine with ``cores`` cores."""
    cores = cpu_count() if cores is None else cores
    settings = {ONEDNN: "1"}
    if cores <= SMALL_MACHINE_CORES:
        settings.update({INTRA: "1", INTER: str(cores)})
    return settings


def apply_fast_cpu_settings(environ=None) -> dict[str, str]:
    """Put the settings in ``environ`` (default ``os.environ``) where the user has not set them.

    Returns the variables that were set. Once TensorFlow is imported they no longer matter.
    """
    environ = os.environ if environ is None else environ
    if "tensorflow" in sys.modules:
        return {}
    applied = {}
    for key, value in fast_cpu_settings().items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


def state() -> dict[str, object]:
    """The settings in effect: oneDNN on or off, thread pools, cores."""
    onednn = os.environ.get(ONEDNN, "")
    info: dict[str, object] = {
        "cores": cpu_count(),
        "onednn": onednn.strip().lower() in ("1", "true", "yes", "on"),
        "intra_op_threads": os.environ.get(INTRA, "default"),
        "inter_op_threads": os.environ.get(INTER, "default"),
    }
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        try:  # what the running TensorFlow decided at import, which the environment may not tell
            from tensorflow.python.util import _pywrap_util_port

            info["onednn"] = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):  # private API: keep the environment's answer
            pass
        # The API reports 0 unless it set the pools itself; then the environment's value holds.
        info["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads() or info["intra_op_threads"]
        info["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads() or info["inter_op_threads"]
    return info


_START_UP_NOISE = ("All log messages before absl::InitializeLog", "oneDNN custom operations are on",
                   "cpu_feature_guard", "To enable the following instructions", "rebuild TensorFlow with")


def import_tensorflow_quietly():
    """``import tensorflow`` without its C++ start-up notices (CPU features, oneDNN).

    They are printed before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so the process's stderr is
    caught while importing; any other line it printed (a real problem) is passed on.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _START_UP_NOISE):
                    sys.stderr.write(line)
    return tf
