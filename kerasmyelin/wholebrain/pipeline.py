"""The whole-brain pipeline: a T1w/T2w NIfTI pair -> ten slices -> age, interval, delay grade.

:func:`prepare_scan` loads and checks the pair (:mod:`.volumes`), finds the five levels
(:mod:`.level_finder`), makes 3-D scans into 5 mm slabs and prepares the paper's ten images
(:mod:`kerasmyelin.data.prepare`, the same code as for the training cohort).
:class:`.estimator.TrainedEstimator` holds a run's network(s), its record and its normative model
(:mod:`kerasmyelin.norms`); :func:`estimate_subject` puts the two together, and
:func:`write_subject_outputs` writes ``result.json``, the slices and the one-page report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasmyelin.data.prepare import PrepConfig, head_mask, outline_step, prepare_volume
from kerasmyelin.errors import InputError
from kerasmyelin.levels import CONTRASTS, INPUT_NAMES, LEVEL_KEYS, LEVELS, input_name
from kerasmyelin.wholebrain.level_finder import (
    FinderConfig,
    LevelFit,
    find_levels,
    looks_skull_stripped,
)
from kerasmyelin.io.ages import AGE_RANGE_MONTHS
from kerasmyelin.wholebrain.estimator import TrainedEstimator
from kerasmyelin.wholebrain.volumes import SLAB_MM, ScanPair, make_pair, slab_stack

# A level's slice with less head than this share of the widest slice's is reported: the scan
# (or a skull-stripped template) may not contain that level.
MIN_LEVEL_AREA = 0.10
RESULT_FILE = "result.json"
REPORT_PNG = "report.png"
REPORT_PDF = "report.pdf"
SLICES_FILE = "slices.npz"
# Integrated-gradients steps: 16 keeps the saliency of a 4-fold ensemble (8 networks) at ~2.3 s on 2
# cores (benchmarks/bench_wholebrain.py); the quadrature error goes to result.json
# (completeness_error_months).
IG_STEPS = 16
# The ages warned about when the model has neither norms nor a recorded training range; with norms,
# the run's own ages are used, the same ones that withhold the grade (norms).
TRAINED_RANGE_MONTHS = (-2.0, 24.0)


@dataclass
class PreparedScan:
    """One infant's scan made ready for the network.

    Attributes:
        images: input name -> (size, size) float32 prepared slice.
        levels: level key -> {"T1w": slice, "T2w": slice, "z_mm": world z of the landmark,
            "area": head area of the slice relative to the widest slice}.
        fit: the level finder's alignment.
        qc: checks and facts: skull_stripped, is_3d, t2_resampled, same_head (dice, nmi), noise
            (neighbour correlation per image), contrast_order (``contrast_order.ContrastOrder``),
            contrasts_swapped_on_request, brain_volume_ml, grade_withheld ({"reason", "text"}
            when an input check withholds the grade, else None), warnings (list of str).
        seconds: wall time of each step.
    """

    images: dict[str, np.ndarray]
    levels: dict[str, dict]
    fit: LevelFit
    qc: dict
    seconds: dict[str, float] = field(default_factory=dict)


def _skull_stripped_margin(prep: PrepConfig) -> PrepConfig:
    """Frame a skull-stripped brain as the model saw heads: widen the crop by head/brain width."""
    from dataclasses import replace

    from kerasmyelin.wholebrain.level_finder import reference_mask

    widths = []
    for kind in ("head", "cerebrum"):
        mask, affine = reference_mask(kind)
        xy = mask.any(axis=2)
        widths.append(max(np.ptp(np.nonzero(xy.any(1))[0]) * abs(affine[0, 0]),
                          np.ptp(np.nonzero(xy.any(0))[0]) * abs(affine[1, 1])))
    return replace(prep, crop_margin=prep.crop_margin * widths[0] / widths[1])


def prepare_pair(pair: ScanPair, *, skull_stripped: bool | None = None, finder: FinderConfig = FinderConfig(),
                 prep: PrepConfig = PrepConfig(), check_contrasts: bool = True) -> PreparedScan:
    """Find the levels in a pair and prepare its ten images (see the module docstring).

    ``check_contrasts``: refuse a pair whose T1w and T2w look swapped or show no infant tissue
    contrast (:func:`.contrast_order.check_contrast_order`); the brain's size is always measured,
    and a brain far outside infant sizes withholds the grade (:mod:`.plausibility`).
    """
    from kerasmyelin.norms.model import BRAIN_SIZE
    from kerasmyelin.wholebrain.contrast_order import check_contrast_order
    from kerasmyelin.wholebrain.plausibility import brain_size_warning, brain_volume_ml

    seconds = {}
    t = time.perf_counter()
    if skull_stripped is None:
        skull_stripped = pair.skull_stripped if pair.skull_stripped is not None else looks_skull_stripped(pair.t1)
    src = pair.sources.get("T1w")
    fit = find_levels(pair.t1, pair.affine, skull_stripped=skull_stripped, config=finder, source=src,
                      outline=pair.t1_outline)
    seconds["find_levels"] = time.perf_counter() - t
    t = time.perf_counter()
    order = check_contrast_order(pair, fit, finder) if check_contrasts else None
    volume_ml = brain_volume_ml(fit)
    too_big_or_small = brain_size_warning(volume_ml)
    seconds["check_contrasts"] = time.perf_counter() - t
    t = time.perf_counter()
    volumes = {"T1w": pair.t1, "T2w": pair.t2}
    affine = pair.affine
    if pair.is_3d:
        stacks = {c: slab_stack(v, pair.affine, fit.landmarks_mm["c"]) for c, v in volumes.items()}
        volumes = {c: s[0] for c, s in stacks.items()}
        affine = stacks["T1w"][1]
    slices = fit.slices(affine, volumes["T1w"].shape[2], src)
    if skull_stripped:
        prep = _skull_stripped_margin(prep)
    # The T1w outline serves its slice preparation and the per-level head area below.
    step = outline_step(volumes["T1w"].shape)
    t1_mask = head_mask(volumes["T1w"], prep.head_threshold, step)
    images = {}
    for contrast in CONTRASTS:
        out = prepare_volume(volumes[contrast], affine, slices, prep, pair.sources.get(contrast),
                             mask=t1_mask if contrast == "T1w" else None)
        for key, img in out.items():
            images[input_name(contrast, key)] = img
    # How much head each level's slice holds, against the widest slice.
    if skull_stripped:
        mask = np.asarray(volumes["T1w"][::step, ::step, :]) > volumes["T1w"].min()
    else:
        mask = t1_mask
    area = mask.sum(axis=(0, 1)).astype(np.float64)
    area /= max(area.max(), 1.0)
    warnings = []
    levels = {}
    for lv in LEVELS:
        k = slices[lv.key]
        levels[lv.key] = {"T1w": k, "T2w": k, "z_mm": round(fit.z_mm[lv.key], 1), "area": round(float(area[k]), 3)}
        if area[k] < MIN_LEVEL_AREA:
            warnings.append(f"level {lv.key} ({lv.name}): slice {k} holds almost no "
                            f"{'brain' if skull_stripped else 'head'} ({area[k]:.0%} of the widest slice); "
                            "the scan may not contain this level")
    if fit.looks_reversed:
        warnings.append(f"the head outline fits much better turned front to back ({fit.reversed_dice:.2f} against "
                        f"{fit.dice:.2f} as the header has it): the header may reverse front and back; check the "
                        "orientation of the slices in the report before trusting the estimate")
    elif fit.dice < 0.85:
        warnings.append(f"the level finder's outline overlap is low ({fit.dice:.2f}); check the levels in the report")
    if order is not None and not order.measured:
        warnings.append("the lateral ventricles lie mostly outside the field of view, so which image is the T1w "
                        "was not checked (CSF is dark on a T1w, bright on a T2w): check the slices in the report")
    if too_big_or_small:
        warnings.append(f"{too_big_or_small}: not graded")
    seconds["prepare"] = time.perf_counter() - t
    qc = {"skull_stripped": bool(skull_stripped), "is_3d": pair.is_3d, "t2_resampled": pair.t2_resampled,
          "slab_mm": SLAB_MM if pair.is_3d else round(float(abs(affine[2, 2])), 2),
          "same_head": pair.same_head, "noise": pair.noise,
          "contrast_order": None if order is None else order.as_dict(), "contrasts_swapped_on_request": False,
          "brain_volume_ml": round(volume_ml, 1),
          "grade_withheld": {"reason": BRAIN_SIZE, "text": too_big_or_small} if too_big_or_small else None,
          "level_finder": fit.as_dict(), "warnings": warnings}
    return PreparedScan(images, levels, fit, qc, seconds)


def prepare_scan(t1_path: str | os.PathLike, t2_path: str | os.PathLike, *, skull_stripped: bool | None = None,
                 finder: FinderConfig = FinderConfig(), prep: PrepConfig = PrepConfig(),
                 swap_contrasts: bool = False) -> PreparedScan:
    """Load a T1w/T2w NIfTI pair, check it, find the levels and prepare the ten images.

    ``swap_contrasts``: the files are labelled the wrong way round; use ``t2_path`` as the T1w
    and ``t1_path`` as the T2w (``predict --swap-contrasts``). The pair is then checked as used.
    """
    from kerasmyelin.io.nifti import load_volume
    from kerasmyelin.wholebrain.plausibility import check_not_the_same_file

    if swap_contrasts:
        t1_path, t2_path = t2_path, t1_path
    check_not_the_same_file(t1_path, t2_path)
    t = time.perf_counter()
    sources = {"T1w": str(t1_path), "T2w": str(t2_path)}
    pair = make_pair(load_volume(t1_path, keep_integers=True), load_volume(t2_path, keep_integers=True), sources,
                     skull_stripped=skull_stripped)
    loaded = time.perf_counter() - t
    scan = prepare_pair(pair, skull_stripped=pair.skull_stripped, finder=finder, prep=prep)
    scan.seconds = {"load": loaded, **scan.seconds}
    scan.qc["contrasts_swapped_on_request"] = bool(swap_contrasts)
    return scan


def estimate_subject(estimator: TrainedEstimator, scan: PreparedScan, *, subject: str = "subject",
                     age_months: float | None = None, saliency: str | None = "integrated_gradients",
                     estimate: float | None = None) -> tuple[dict, object]:
    """The estimate of one prepared infant, with interval, gap, grade and (optionally) saliency.

    ``estimate``: the network's output if already computed (a batch predicts many at once).

    Returns:
        (result dict for ``result.json`` and the report, the ``Attribution`` or None).
    """
    import kerasmyelin

    if scan.images[INPUT_NAMES[0]].shape[0] != estimator.image_size:
        raise InputError(f"the model takes {estimator.image_size}x{estimator.image_size} images; prepare "
                         f"with image_size={estimator.image_size}")
    if saliency not in (None, "integrated_gradients"):
        raise ValueError(f"saliency must be None or 'integrated_gradients', got {saliency!r}")
    if age_months is not None and not AGE_RANGE_MONTHS[0] <= float(age_months) <= AGE_RANGE_MONTHS[1]:
        raise InputError(f"corrected age {age_months} months is outside {AGE_RANGE_MONTHS[0]:g} to "
                         f"{AGE_RANGE_MONTHS[1]:g} months: wrong units (weeks? days?)")
    t = time.perf_counter()
    attribution = None
    if saliency == "integrated_gradients":
        from kerasmyelin.explain.saliency import integrated_gradients

        attribution = integrated_gradients(estimator.model, scan.images, steps=IG_STEPS)
        estimate = float(attribution.estimate)
    elif estimate is None:
        estimate = estimator.predict(scan.images)
    estimate = float(estimate)
    result = {"created_by": f"kerasmyelin {kerasmyelin.__version__} predict",
              "subject": subject, "estimate_months": round(estimate, 3), "age_months": age_months,
              "interval_months": None, "interval_level": None, "gap_months": None,
              "corrected_gap_months": None, "z": None, "grade": None, "grade_reason": None,
              "grade_reason_text": None, "grade_rule": None,
              "levels": scan.levels, "qc": scan.qc, "model": estimator.version,
              "calibration": getattr(getattr(estimator, "record", None), "calibration", None),
              "kerasmyelin_version": kerasmyelin.__version__}
    norm = estimator.normative
    beyond_bound = False
    if norm is not None:
        lo, hi = norm.interval(estimate)
        result.update(interval_months=[round(float(lo), 3), round(float(hi), 3)], interval_level=norm.level,
                      grade_rule=norm.grade_rule(), norms=_norms_summary(estimator.normative_report))
        if age_months is not None:
            from kerasmyelin.norms.model import GRADE_BOUND_Z

            g = norm.gap(estimate, float(age_months))
            beyond_bound = abs(g["z"]) > GRADE_BOUND_Z
            result.update(gap_months=round(g["gap_months"], 3), corrected_gap_months=round(g["corrected_gap_months"], 3),
                          z=round(g["z"], 3), grade=g["grade"], grade_reason=g["reason"],
                          grade_reason_text=g["reason_text"], extrapolated=g["extrapolated"])
    elif age_months is not None:
        result["gap_months"] = round(estimate - float(age_months), 3)
    # An input check's reason (an adult-sized brain) comes before the norms': the grade is withheld
    # with or without a corrected age, so the estimate is never shown as a typical infant's.
    withheld = scan.qc.get("grade_withheld")
    if withheld:
        from kerasmyelin.norms.model import NOT_GRADED

        result.update(grade=NOT_GRADED, grade_reason=withheld["reason"], grade_reason_text=withheld["text"])
    # Out-of-range or extreme estimates usually mean the scan is unlike the training infants; the
    # normative model withholds the grade for the same reasons (each warning is one of them).
    warnings = list(scan.qc["warnings"])
    low, high = ((norm.age_min, norm.age_max) if norm is not None
                 else getattr(estimator, "trained_age_range_months", None) or TRAINED_RANGE_MONTHS)
    if not low <= estimate <= high:
        warnings.append(f"the estimate ({estimate:.1f} months) lies outside the ages the model was trained on "
                        f"({low:.1f} to {high:.1f} months): treat it as unreliable")
    if result.get("extrapolated"):
        warnings.append(f"the corrected age ({float(age_months):.1f} months) lies outside the ages the model was "
                        f"trained on ({low:.1f} to {high:.1f} months): not graded")
    if beyond_bound:
        warnings.append(f"the corrected gap is {abs(result['z']):.1f} standard deviations from typical infants "
                        f"(more than {GRADE_BOUND_Z:g}): not graded; check the input (contrast, skull-stripping, "
                        "scanner, corrected age)")
    result["qc"] = dict(scan.qc, warnings=warnings)
    if attribution is not None:
        result["months_by_input"] = {k: round(float(v), 3) for k, v in attribution.months.items()}
        result["heat_method"] = attribution.method
        result["completeness_error_months"] = round(float(attribution.completeness_error), 4)
    scan.seconds["estimate"] = time.perf_counter() - t
    return result, attribution


def _norms_summary(report: dict) -> dict:
    """How well the run's norms held on its own held-out infants (cross-fitted by fold)."""
    keys = ("n", "coverage", "mean_width_months", "raw_gap_spearman_r", "corrected_gap_spearman_r",
            "flagged_possible_or_marked", "flagged_marked", "flagged_ahead", "not_graded",
            "not_graded_outside_ages", "not_graded_beyond_bound")
    return {k: (round(float(report[k]), 4) if isinstance(report.get(k), float) else report.get(k))
            for k in keys if k in report}


def write_subject_outputs(out: str | os.PathLike, result: dict, scan: PreparedScan, attribution,
                          estimator: TrainedEstimator, report: bool = True, overwrite: bool = False,
                          inputs=()) -> list[Path]:
    """Write result.json, slices.npz and (optionally) report.png / report.pdf into ``out``.

    ``out`` is a user's output folder (``io.output_dir.OutputFolder``): built beside, swapped in
    when complete, so a failure (a report that cannot be drawn, a full disk) leaves no folder with
    some files and not others. A non-empty ``out`` is refused unless ``overwrite`` and it holds an
    earlier infant's result; ``inputs`` are (label, path) pairs it must stay apart from.
    """
    from kerasmyelin.io.output_dir import OutputFolder

    final = Path(out).expanduser().absolute()
    with OutputFolder(final, "subject", overwrite=overwrite, inputs=inputs, what="kerasmyelin predict") as folder:
        names = write_subject_files(folder.work, result, scan, attribution, estimator, report=report)
    return [final / n for n in names]


def write_subject_files(folder: Path, result: dict, scan: PreparedScan, attribution, estimator: TrainedEstimator,
                        report: bool = True) -> list[str]:
    """Write one infant's files into the existing, empty ``folder``; returns their names."""
    import io as _io

    t = time.perf_counter()
    names = [RESULT_FILE, SLICES_FILE] + ([REPORT_PNG, REPORT_PDF] if report else [])
    buf = _io.BytesIO()
    arrays = {n: scan.images[n] for n in INPUT_NAMES}
    if attribution is not None:
        arrays.update({f"heat_{n}": heat for n, heat in attribution.heat.items()})  # the model's inputs
    # Uncompressed: prepared slices and heat maps deflate by only ~10%, at ~40 ms an infant.
    np.savez(buf, **arrays)
    (folder / SLICES_FILE).write_bytes(buf.getvalue())
    if report:
        from kerasmyelin.evaluation.subject_report import render_subject_report

        chart = estimator.normative.chart() if estimator.normative is not None else None
        render_subject_report(result, scan.images, attribution.heat if attribution else None,
                              chart, folder / REPORT_PNG, folder / REPORT_PDF)
    scan.seconds["report"] = time.perf_counter() - t
    result = dict(result, seconds={k: round(v, 3) for k, v in scan.seconds.items()})
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return names


__all__ = [
    "LEVEL_KEYS",
    "PreparedScan",
    "estimate_subject",
    "prepare_pair",
    "prepare_scan",
    "write_subject_files",
    "write_subject_outputs",
]
