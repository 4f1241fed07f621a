"""QC contact sheets of automatically found levels: one per infant, one overview of all.

The per-infant sheet shows the ten chosen slices as the cache prepares them (T1w row, T2w row;
columns a-e titled with the level's name and slice index). The overview shows each infant's five
T2w slices as small thumbnails, several infants side by side, doubtful infants' labels in red,
so a cohort of 100+ infants fits one readable page.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from kerasmyelin.io.atomic import write_bytes_atomic
from kerasmyelin.levels import CONTRASTS, LEVELS

OVERVIEW_COLUMNS = 4  # infants side by side on the overview
OVERVIEW_THUMB = 48   # pixels per thumbnail on the overview


def _save(fig, path: Path, dpi: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return write_bytes_atomic(path, buf.getvalue())


def save_level_sheet(path: str | os.PathLike, label: str, levels: dict[str, int], thumbs: dict[str, dict],
                     note: str = "", doubtful: bool = False) -> Path:
    """One infant's contact sheet.

    Args:
        label: the infant (and session), the sheet's title.
        levels: level key -> slice index (0-based, RAS axial).
        thumbs: contrast -> level key -> (n, n) prepared image, intensities ~0-1.
        note: a line under the title (the fit's overlap, doubts).
        doubtful: title in red.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.8))
    fig.suptitle(f"{label}: levels found automatically" + (f"\n{note}" if note else ""), fontsize=9,
                 color="firebrick" if doubtful else "black")
    axes = fig.subplots(len(CONTRASTS), len(LEVELS))
    for i, contrast in enumerate(CONTRASTS):
        for j, lv in enumerate(LEVELS):
            ax = axes[i, j]
            ax.imshow(thumbs[contrast][lv.key], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{lv.key}: {lv.name}\nslice {levels[lv.key]}", fontsize=7)
            if j == 0:
                ax.set_ylabel(contrast, fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.02, top=0.80, wspace=0.05, hspace=0.05)
    return _save(fig, Path(path), dpi=80)


def _shrink(image: np.ndarray, n: int) -> np.ndarray:
    """Block-average a square image to about n x n (nearest block size), 0-1 clipped."""
    k = max(1, image.shape[0] // n)
    m = (image.shape[0] // k) * k
    small = image[:m, :m].reshape(m // k, k, m // k, k).mean(axis=(1, 3))
    out = np.zeros((n, n), np.float32)
    s = min(n, small.shape[0])
    out[:s, :s] = small[:s, :s]
    return np.clip(out, 0, 1)


def save_overview(path: str | os.PathLike, entries: list[dict], contrast: str = "T2w") -> Path:
    """All infants on one page.

    Args:
        entries: one per infant: {"label", "levels" (key -> slice or None), "thumbs" (as for
            :func:`save_level_sheet`, may be empty), "doubtful" (bool)}.
        contrast: whose slices are shown.
    """
    from matplotlib.figure import Figure

    n, gap, text_h = OVERVIEW_THUMB, 4, 14
    cell_w, cell_h = len(LEVELS) * n + 2 * gap, n + text_h
    cols = min(OVERVIEW_COLUMNS, max(1, len(entries)))
    rows = int(np.ceil(len(entries) / cols)) or 1
    mosaic = np.full((rows * cell_h, cols * cell_w), 0.5, np.float32)
    for i, e in enumerate(entries):
        r, c = divmod(i, cols)
        y, x = r * cell_h + text_h, c * cell_w + gap
        for j, lv in enumerate(LEVELS):
            img = e["thumbs"].get(contrast, {}).get(lv.key) if e["thumbs"] else None
            tile = _shrink(np.asarray(img, np.float32), n) if img is not None else np.zeros((n, n), np.float32)
            mosaic[y:y + n, x + j * n:x + (j + 1) * n] = tile
    dpi = 100
    fig = Figure(figsize=(mosaic.shape[1] / dpi, mosaic.shape[0] / dpi + 0.3))
    ax = fig.add_axes((0, 0, 1, mosaic.shape[0] / (mosaic.shape[0] + 0.3 * dpi)))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for i, e in enumerate(entries):
        r, c = divmod(i, cols)
        levels = e["levels"]
        text = e["label"] + ("  " + " ".join(f"{k}{levels[k]}" for k in levels) if levels else "  (no levels)")
        ax.text(c * cell_w + gap, r * cell_h + text_h - 3, text + ("  DOUBTFUL" if e["doubtful"] else ""),
                fontsize=6.5, color="red" if e["doubtful"] else "black", va="bottom", ha="left")
    fig.text(0.005, 0.995, f"{len(entries)} infants, {contrast} slices a-e (doubtful in red); one sheet each in "
             "this folder", fontsize=7, va="top")
    return _save(fig, Path(path), dpi=dpi)
