"""Figures people look at: the learning curve (like Neural Network Console's) and the paper's
Figure 4 scatter of estimated against corrected age. Each is written atomically as PNG."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from kerasmyelin.io.atomic import write_bytes_atomic


def _pyplot():
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        # Headless by default; but a notebook that has already chosen its backend keeps it
        # (switching to Agg there would stop its own figures from showing inline).
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(Path(path), buf.getvalue())


def save_learning_curve(rows: list[dict[str, float]], path: str | os.PathLike, title: str) -> Path:
    """Cost (training loss, squared months), training error and validation error (MAE, months)
    per epoch, on a log scale as Neural Network Console draws them.

    Args:
        rows: ``callbacks.read_history`` rows with "epoch", "loss" and optionally "mae", "val_mae".
    """
    plt = _pyplot()
    epochs = np.array([r["epoch"] + 1 for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    series = [("loss", "cost (squared error, months²)", "tab:blue"),
              ("mae", "training error (MAE, months)", "tab:orange"),
              ("val_mae", "validation error (MAE, months)", "tab:green")]
    for key, label, colour in series:
        values = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        if np.isfinite(values).any():
            ax.plot(epochs, values, label=label, color=colour, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _scatter_panel(ax, panel: dict, lo: float, hi: float) -> None:
    """One panel of Figure 4 on ``ax``: identity line, the infants, the title with the metrics."""
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="identity")
    ax.scatter(panel["true"], panel["predicted"], s=14, alpha=0.8, edgecolor="none")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("corrected age (months)")
    ax.set_ylabel("estimated age (months)")
    m = panel.get("metrics")
    text = panel["label"]
    if m:
        text += f"\nr = {m['spearman_r']:.2f}, RMSE {m['rmse']:.2f}, MAE {m['mae']:.2f}"
    ax.set_title(text, fontsize=9)
    ax.grid(True, alpha=0.3)


def _age_limits(panels: list[dict]) -> tuple[float, float]:
    """Axis limits that hold the paper's age range and every (finite) age shown."""
    ages = np.concatenate([np.r_[p["true"], p["predicted"]] for p in panels]).astype(np.float64)
    ages = ages[np.isfinite(ages)]
    if ages.size == 0:
        return -2.0, 26.0
    return float(min(-2.0, ages.min() - 1)), float(max(26.0, ages.max() + 1))


def save_scatter(panels: list[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """The paper's Figure 4: estimated vs corrected age with the identity line, one panel per model.

    Args:
        panels: [{"label": str, "true": (N,) months, "predicted": (N,) months, "metrics": dict
                 from ``age_metrics`` (optional)}, ...].
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    lo, hi = _age_limits(panels)
    for ax, panel in zip(axes[0], panels):
        _scatter_panel(ax, panel, lo, hi)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def scatter_image(panel: dict, inches: float = 3.6, dpi: int = 80) -> np.ndarray:
    """One Figure 4 panel as an (H, W, 4) uint8 RGBA array (for TensorBoard's image dashboard).

    Drawn on a bare Agg canvas, without pyplot: nothing global changes during a training run or
    in a notebook, and no file is written. ``panel`` is as in ``save_scatter``; a 3.6 inch,
    80 dpi panel is 288 x 288 pixels and takes ~0.1 s.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(inches, inches), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    _scatter_panel(fig.add_subplot(), panel, *_age_limits([panel]))
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def save_calibration_plot(ages, raw, held_out, path: str | os.PathLike, title: str) -> Path:
    """A site calibration: each labelled scan's estimate before correction and after it (leave-one-
    out, the figure a new scan gets) against its corrected age, with the identity line."""
    plt = _pyplot()
    ages, raw, held_out = (np.asarray(v, dtype=float) for v in (ages, raw, held_out))
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    lo = float(min(ages.min(), raw.min(), held_out.min(), 0.0)) - 1.0
    hi = float(max(ages.max(), raw.max(), held_out.max(), 24.0)) + 1.0
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="estimate = age")
    ax.scatter(ages, raw, s=22, color="tab:grey", label=f"model as is (MAE {np.mean(np.abs(raw - ages)):.2f})")
    ax.scatter(ages, held_out, s=22, color="tab:blue",
               label=f"calibrated, leave-one-out (MAE {np.mean(np.abs(held_out - ages)):.2f})")
    for a, r, h in zip(ages, raw, held_out):
        ax.plot([a, a], [r, h], color="tab:blue", lw=0.5, alpha=0.4)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("corrected age (months)")
    ax.set_ylabel("estimated myelination age (months)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
