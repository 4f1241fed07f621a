"""``kerasmyelin doctor``: what this machine gives kerasmyelin (versions, CPU settings, devices)."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys

NAME = "doctor"
HELP = "Print versions, TensorFlow's CPU settings (oneDNN, threads) and the devices TensorFlow sees."
EXAMPLES = """examples:
  kerasmyelin doctor              # paste this into a bug report
  TF_ENABLE_ONEDNN_OPTS=0 kerasmyelin doctor   # see what a setting of your own changes
kerasmyelin sets TensorFlow's CPU settings when it is imported first (docs/performance.md).
"""
PACKAGES = ("kerasmyelin", "tensorflow-cpu", "tensorflow", "keras", "numpy", "nibabel", "scipy",
            "scikit-learn", "nilearn", "matplotlib", "pillow", "pydicom", "dcm2niix")


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # no options


def report() -> list[tuple[str, str]]:
    """(name, value) rows: Python, package versions, runtime settings, TensorFlow devices."""
    import tensorflow as tf

    from kerasmyelin.runtime import state

    rows = [("python", f"{platform.python_version()} ({sys.executable})"),
            ("platform", platform.platform())]
    for package in PACKAGES:
        try:
            rows.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            continue
    info = state()
    rows += [("cores", str(info["cores"])),
             ("oneDNN kernels", "on" if info["onednn"] else "off"),
             ("threads (intra-op / inter-op)", f"{info['intra_op_threads']} / {info['inter_op_threads']}")]
    devices = tf.config.list_physical_devices()
    rows.append(("TensorFlow devices", ", ".join(d.name for d in devices) or "none"))
    rows.append(("GPU", "yes" if any(d.device_type == "GPU" for d in devices) else "not seen"))
    return rows


def run(args: argparse.Namespace) -> int:
    rows = report()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
