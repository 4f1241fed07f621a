"""The one-page report of one infant: the ten slices with what drove the estimate, the estimate
against a normative chart, the grade, and the model that made it. Written as PNG and PDF.

The page shows no identifier but the label the user chose for the infant (``result["subject"]``):
no file names, no header fields, no dates of birth or scan.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import numpy as np

from kerasmyelin.errors import OutputError
from kerasmyelin.norms.model import AHEAD, GRADES, MARKED, NOT_GRADED, POSSIBLE, WITHIN
from kerasmyelin.io.atomic import write_bytes_atomic
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, LEVELS, input_name

TITLE = "kerasmyelin — myelination age estimate"
DISCLAIMER = "Research use only. Not a medical device. Not for diagnosis."
# Green only for within norms; a withheld grade is grey, so it never reads as reassurance.
GRADE_COLOURS = {WITHIN: "#2e7d32", AHEAD: "#0d47a1", POSSIBLE: "#ef6c00", MARKED: "#c62828",
                 NOT_GRADED: "#757575"}
NOT_GRADED_LABEL = "NOT GRADED: check the input"
HEAT_FLOOR = 0.1  # heat below this is not drawn, so the anatomy stays readable
PAGE_INCHES = (8.27, 11.69)  # A4 portrait
PNG_DPI = 120

_REQUIRED = ("subject", "estimate_months", "interval_months", "interval_level", "grade", "model",
             "kerasmyelin_version")


def _check(result: dict, images: dict, heat: dict, normative: dict) -> None:
    missing = [k for k in _REQUIRED if k not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    if not isinstance(result["subject"], str) or not result["subject"].strip():
        raise ValueError(f"result['subject'] must be a non-empty label, got {result['subject']!r}")
    grade = result["grade"]
    if grade is not None and grade not in GRADES:
        raise ValueError(f"unknown grade {grade!r}; expected one of {GRADES} or None")
    # "Not graded" may come from an input check (a brain far outside infant sizes), with no age or norms.
    if grade not in (None, NOT_GRADED) and result.get("age_months") is None:
        raise ValueError(f"grade {grade!r} given without a corrected age (result['age_months'] is None)")
    if grade == NOT_GRADED and not (result.get("grade_reason_text") or result.get("grade_reason")):
        raise ValueError(f"grade {grade!r} given without its reason (result['grade_reason_text'])")
    if result["interval_months"] is not None:
        lo, hi = result["interval_months"]
        if not lo <= result["estimate_months"] <= hi:
            raise ValueError(f"the estimate {result['estimate_months']} lies outside its interval [{lo}, {hi}]")
    elif grade not in (None, NOT_GRADED):
        raise ValueError("a grade needs the norms, but no interval (no norms) was given")
    absent = [n for n in INPUT_NAMES if n not in images]
    if absent:
        raise ValueError(f"images lack {absent}")
    for n, h in heat.items():
        if n not in images:
            raise ValueError(f"heat map {n!r} is not one of the ten inputs")
        if np.shape(h) != np.shape(images[n]):
            raise ValueError(f"heat map {n!r} has shape {np.shape(h)}, its image {np.shape(images[n])}")
    if normative is None:
        return
    grid = np.asarray(normative.get("age_months", ()), dtype=float)
    if grid.ndim != 1 or grid.size < 2:
        raise ValueError("normative['age_months'] must be a 1-D grid of at least two ages")
    for key in ("expected", "lo", "hi") + (("lo_marked",) if normative.get("lo_marked") is not None else ()):
        if np.shape(normative.get(key)) != grid.shape:
            raise ValueError(f"normative[{key!r}] must have the shape of normative['age_months'] {grid.shape}")


def _months(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return text.replace("-", "−") + " months"


def _slices(fig, result: dict, images: dict, heat: dict) -> None:
    """Rows T1w, T2w; columns levels a-e; heat overlaid; slice index and months under each."""
    from matplotlib import colormaps

    cmap = colormaps["inferno"].with_extremes(bad=(0, 0, 0, 0))
    levels = result.get("levels") or {}
    contributions = result.get("months_by_input") or {}
    left, width, gap = 0.06, 0.172, 0.012
    side = width * PAGE_INCHES[0] / PAGE_INCHES[1]  # square axes
    tops = (0.875, 0.875 - side - 0.03)
    below = tops[1] - side - 0.03  # under the second row's labels
    overlay = None
    for col, level in enumerate(LEVELS):
        x = left + col * (width + gap)
        title = "\n".join(textwrap.wrap(f"{level.key}: {level.name}", 22)[:2])
        fig.text(x + width / 2, tops[0] + 0.008, title, ha="center", va="bottom", fontsize=7.5)
        confidence = (levels.get(level.key) or {}).get("confidence")
        if confidence is not None:
            fig.text(x + width / 2, below, f"level fit {confidence:.2f}", ha="center",
                     va="top", fontsize=6.5, color="0.35")
        for row, contrast in enumerate(CONTRASTS):
            name = input_name(contrast, level.key)
            ax = fig.add_axes((x, tops[row] - side, width, side))
            ax.imshow(np.asarray(images[name], dtype=np.float32), cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            if name in heat:
                h = np.asarray(heat[name], dtype=np.float32)
                overlay = ax.imshow(np.ma.masked_less(h, HEAT_FLOOR), cmap=cmap, vmin=0.0, vmax=1.0,
                                    alpha=0.45, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(contrast, fontsize=10)
            index = (levels.get(level.key) or {}).get(contrast)
            parts = [f"slice {index}" if index is not None else None,
                     f"{contributions[name]:+.2f} mo".replace("-", "−") if name in contributions else None]
            label = "   ".join(p for p in parts if p)
            if label:
                ax.set_xlabel(label, fontsize=7, labelpad=2)
    if overlay is not None:
        cax = fig.add_axes((0.06, below - 0.028, 0.2, 0.007))
        bar = fig.colorbar(overlay, cax=cax, orientation="horizontal", ticks=[HEAT_FLOOR, 0.5, 1.0])
        bar.ax.tick_params(labelsize=6, length=2, pad=1)
        method = str(result.get("heat_method", "")).replace("_", " ")
        fig.text(0.28, below - 0.024, f"influence on the estimate{f' ({method})' if method else ''}, "
                 "on one scale for all ten slices", fontsize=6.5, color="0.35", va="center")
    if contributions:
        total = f"{sum(contributions.values()):+.1f}".replace("-", "−")
        fig.text(0.28, below - 0.042, f"mo: months each slice added to the estimate, relative to an "
                 f"all-black input (sum {total} months)", fontsize=6.5, color="0.35", va="center")


def _chart(fig, result: dict, normative: dict) -> None:
    """Estimated myelination age against corrected age, over the normative band."""
    ax = fig.add_axes((0.09, 0.12, 0.44, 0.37))
    if normative is not None:
        grid = np.asarray(normative["age_months"], dtype=float)
        ax.fill_between(grid, normative["lo"], normative["hi"], color="#90caf9", alpha=0.5, lw=0,
                        label="typical infants")
        ax.plot(grid, normative["expected"], color="#1565c0", lw=1.2, label="expected")
        if normative.get("lo_marked") is not None:
            ax.plot(grid, normative["lo_marked"], color=GRADE_COLOURS[MARKED], lw=1, ls="--",
                    label="marked-delay threshold")
    else:  # the identity line only: without norms there is no band of typical infants to draw
        from kerasmyelin.norms.model import CHART_RANGE_MONTHS

        grid = np.array(CHART_RANGE_MONTHS[:2])
        ax.plot(grid, grid, color="0.6", lw=1, ls=":", label="estimate = age (no norms for this model)")
    estimate = float(result["estimate_months"])
    colour = GRADE_COLOURS.get(result["grade"], "black")
    if result["interval_months"] is not None:
        lo, hi = (float(v) for v in result["interval_months"])
        label = f"{result['subject']} ({float(result['interval_level']):.0%} interval)"
    else:
        lo = hi = estimate
        label = f"{result['subject']} (no interval)"
    age = result.get("age_months")
    if age is not None:
        ax.errorbar([age], [estimate], yerr=[[estimate - lo], [hi - estimate]], fmt="o", color=colour,
                    ms=6, capsize=4, lw=1.5, label=label, zorder=5)
    else:
        ax.axhspan(lo, hi, color="0.5", alpha=0.2, lw=0)
        ax.axhline(estimate, color="black", lw=1.2, label=f"{label}; corrected age not given")
    # Wide enough for the infant's own point when its corrected age lies beyond the norms' grid.
    ax.set_xlim(min(grid.min(), age if age is not None else np.inf) - 0.5,
                max(grid.max(), age if age is not None else -np.inf) + 0.5)
    ax.set_xlabel("corrected age (months)", fontsize=9)
    ax.set_ylabel("estimated myelination age (months)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)  # "best": out-of-range infants sit top left


def _summary(fig, result: dict) -> None:
    """The numbers and the grade, right of the chart."""
    x, y = 0.59, 0.49
    if result["interval_months"] is not None:
        lo, hi = result["interval_months"]
        interval = (f"{float(result['interval_level']):.0%} interval", f"{lo:.1f} – {hi:.1f} months".replace("-", "−"))
    else:
        interval = ("Interval", "none: the model has no norms")
    rows = [
        ("Estimate", _months(result["estimate_months"])),
        interval,
        ("Corrected age", _months(result.get("age_months")) if result.get("age_months") is not None
         else "not given"),
        ("Gap (estimate − age)", _months(result.get("gap_months"), signed=True)),
        ("Corrected gap", _months(result.get("corrected_gap_months"), signed=True)),
    ]
    for i, (key, value) in enumerate(rows):
        fig.text(x, y - 0.025 * i, key, fontsize=9, va="top", color="0.3")
        fig.text(x + 0.19, y - 0.025 * i, value, fontsize=9, va="top", weight="bold")
    y -= 0.025 * len(rows) + 0.012
    grade = result["grade"]
    if grade is None:
        why = "no corrected age given" if result.get("age_months") is None else "the model has no norms"
        fig.text(x, y, f"Not graded: {why}", fontsize=10, va="top", color="0.4")
    else:
        fig.text(x, y, NOT_GRADED_LABEL if grade == NOT_GRADED else grade.upper(), va="top",
                 fontsize=12 if grade == NOT_GRADED else 13, weight="bold", color="white",  # 12: fits the page
                 bbox={"boxstyle": "round,pad=0.35", "facecolor": GRADE_COLOURS[grade], "edgecolor": "none"})
        if grade == NOT_GRADED:  # which bound was crossed, under the box
            why = result.get("grade_reason_text") or result["grade_reason"]
            lines = textwrap.wrap(f"Why: {why}.", 44)
            y -= 0.042
            fig.text(x, y, "\n".join(lines), fontsize=9, va="top", color="0.2")
            y -= 0.0135 * (len(lines) - 1)
    y -= 0.04
    rule = result.get("grade_rule")
    if rule:
        fig.text(x, y, "\n".join(textwrap.wrap(f"Rule: {rule}", 52)), fontsize=7, va="top", color="0.25")


def _figure(result: dict, images: dict, heat: dict, normative: dict):
    from kerasmyelin.evaluation.plots import _pyplot

    plt = _pyplot()
    fig = plt.figure(figsize=PAGE_INCHES)
    fig.text(0.5, 0.975, TITLE, ha="center", va="top", fontsize=15, weight="bold")
    fig.text(0.5, 0.948, f"Subject: {result['subject']}", ha="center", va="top", fontsize=11)
    _slices(fig, result, images, heat)
    _chart(fig, result, normative)
    _summary(fig, result)
    fig.text(0.5, 0.055, f"Model: {result['model']}   ·   kerasmyelin {result['kerasmyelin_version']}",
             ha="center", fontsize=7.5, color="0.3")
    fig.text(0.5, 0.03, DISCLAIMER, ha="center", fontsize=9, weight="bold")
    return fig


def render_subject_report(result: dict, images: dict[str, np.ndarray], heat: dict[str, np.ndarray] | None,
                          normative: dict, png_path: str | os.PathLike,
                          pdf_path: str | os.PathLike) -> tuple[Path, Path]:
    """Draw one infant's page and write it as PNG and PDF (the same figure), each atomically.

    Args:
        result: JSON-friendly summary of the estimate:
            "subject" (str): the label the user chose, e.g. "sub-001"; the only identifier shown.
            "estimate_months" (float): estimated myelination age, months.
            "interval_months" ([lo, hi] or None): its interval, months; must contain the estimate.
                None when the model has no norms (then "grade" must be None too).
            "interval_level" (float or None): the interval's coverage, e.g. 0.9.
            "age_months" (float or None): corrected age, months; None when not given.
            "gap_months" (float or None): estimate - corrected age, months.
            "corrected_gap_months" (float or None): the gap after the caller's correction.
            "grade" (str or None): one of ``norms.model.GRADES`` ("within norms", "ahead
                of norms", "possible delay", "marked delay", "not graded: check the input"); None
                when no corrected age was given or the model has no norms.
            "grade_reason_text" (str): why the grade was withheld, shown under a grey box; needed
                (or "grade_reason") when the grade is "not graded: check the input".
            "grade_rule" (str, optional): the grading rule in a sentence.
            "levels" (dict, optional): level key "a".."e" -> {"T1w": slice index, "T2w": slice
                index, "confidence": float or None}.
            "months_by_input" (dict, optional): input name -> months that slice contributed
                (``explain.saliency.Attribution.months``).
            "heat_method" (str, optional): how ``heat`` was made, e.g. "integrated_gradients".
            "model" (str): the model's name and version, e.g. run folder and sha256 prefix.
            "kerasmyelin_version" (str).
            Other keys are ignored and never drawn.
        images: input name -> (size, size) slice, intensities in [0, 1], displayed as read
            (anterior up, patient's right on the left).
        heat: input name -> (size, size) heat in [0, 1] overlaid on its slice (drawn where at
            least 0.1); None or {} for no overlay.
        normative: the chart, or None for a model without norms (no band is drawn):
            "age_months" (G,) grid of corrected ages; "expected" (G,) expected
            estimate at that age; "lo", "hi" (G,) the band of typical infants' estimates (the
            within-norms region);
            "lo_marked" (G,), optional, the marked-delay threshold.
        png_path: where the PNG goes.
        pdf_path: where the one-page PDF goes.

    Returns:
        (png_path, pdf_path).

    Raises:
        ValueError: a missing or inconsistent field (an unknown grade, a grade without an age).
        OutputError: a path that cannot be written.
    """
    from kerasmyelin.evaluation.plots import _pyplot

    heat = heat or {}
    _check(result, images, heat, normative)
    plt = _pyplot()
    fig = _figure(result, images, heat, normative)
    title = f"{TITLE}: {result['subject']}"
    version = f"kerasmyelin {result['kerasmyelin_version']}"
    try:
        png, pdf = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=PNG_DPI, metadata={"Title": title, "Software": version},
                    pil_kwargs={"compress_level": 3})
        fig.savefig(pdf, format="pdf", metadata={"Title": title, "Creator": version, "CreationDate": None})
    finally:
        plt.close(fig)
    written = []
    for path, data in ((png_path, png), (pdf_path, pdf)):
        try:
            written.append(write_bytes_atomic(Path(path), data.getvalue()))
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the report ({exc.strerror or exc})") from exc
    return written[0], written[1]
