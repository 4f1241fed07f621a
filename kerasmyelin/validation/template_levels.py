"""The five levels in the real infant templates, annotated by inspection, and the pipeline on them.

The UNC/BME-X infant templates (``../shared/data/infant_templates``: T1w and T2w at 0, 6, 9, 12
and 24 months, 3-D, 0.8 mm, skull-stripped) are the only real infant images we have. They serve
two checks of the whole-brain pipeline (docs/wholebrain.md):

* the level finder against a person's reading of where each level lies, and
* the pipeline end to end: the estimated myelination age of each template, from a model trained
  only on the synthetic cohort (the sim-to-real gap).

Their headers reverse front and back
------------------------------------
In the templates' headers, world +y points to the back of the head, not the front (RAS): the
splenium of the corpus callosum, the tectum and the hole left where the posterior fossa was cut
away all lie at +y. We read them rotated by 180 degrees about the vertical axis
(:data:`HEADER_CORRECTION`, the usual RAS/LPS mix-up; left and right cannot be told apart in a
symmetric group average, and the finder and the network are indifferent to them). The level
finder confirms it without any reading: the outline overlap is 0.87-0.89 as stored and
0.945-0.952 corrected, the synthetic infants' range (docs/wholebrain.md). World z is unchanged,
so readings in z hold either way. :func:`load_template` and :func:`corrected_template_files`
apply the correction; every check here uses them.

How the annotations were made
-----------------------------
Two readings, made independently.

* The first (:data:`ANNOTATED_Z_MM`): each T2w template drawn as a midsagittal slice beside axial
  slices every 5 mm, read on that 5 mm grid (+/-2.5 mm); b and c re-read on enlarged slices.
  Those pictures were drawn from the headers as stored, i.e. with front and back reversed,
  and labelled each voxel slice by the world z of its corner column; the affine is oblique, so
  the brain's centre lies 4.4-6.7 mm higher (:func:`reading_z` converts). Neither was noticed
  then.
* The second (:data:`SECOND_READING_Z_MM`), by a reader who had not seen the first: exact world-z
  planes every 2.5 mm, T2w and T1w, front at the top, with zoomed crops, on these criteria:

  * b, midbrain: the lowest slice with a complete midbrain: both cerebral peduncles, the
    interpeduncular fossa, the aqueduct and the tectum;
  * c, internal capsule and splenium: the basal-ganglia/thalamic slice where the splenium first
    crosses the midline as a thick band, with the posterior limbs of the internal capsules;
  * d, centrum semiovale: the first slice with no lateral-ventricle fluid left;
  * e, subcortical white matter: gyral cores joined by a thin central stem, about halfway from
    d to the vertex (the weakest landmark, +/-2.5-5 mm).

  The reader noticed the reversed headers (from the corpus callosum and the missing posterior
  fossa) and read the anatomy the right way round.

With the first reading's slices placed at their centre's z, the two readings differ by at most
3.4 mm at b, 6.9 mm at c, 4.2 mm at d and e. The second is the reference for the finder test: it
was read the right way round, on exact planes, on written criteria.

Level a (middle cerebellar peduncles / pons) is **absent**: the templates are cerebrum-only,
cut through the midbrain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasmyelin.io.infant_templates import (
    HEADER_CORRECTION,
    TEMPLATE_MONTHS,
    template_file,
)

# The first reading: months -> level -> the world z label of the chosen slice (its corner column;
# reading_z gives its centre's z); None: the level is not in the template.
ANNOTATED_Z_MM: dict[int, dict[str, float | None]] = {
    0: {"a": None, "b": 5.0, "c": 20.0, "d": 40.0, "e": 55.0},
    6: {"a": None, "b": 5.0, "c": 20.0, "d": 40.0, "e": 55.0},
    9: {"a": None, "b": 15.0, "c": 30.0, "d": 55.0, "e": 70.0},
    12: {"a": None, "b": -30.0, "c": -10.0, "d": 10.0, "e": 25.0},
    24: {"a": None, "b": -5.0, "c": 20.0, "d": 40.0, "e": 55.0},
}
# The second, independent reading (see the module docstring): on a 2.5 mm grid of exact world-z planes.
SECOND_READING_Z_MM: dict[int, dict[str, float | None]] = {
    0: {"a": None, "b": 15.0, "c": 30.0, "d": 50.0, "e": 60.0},
    6: {"a": None, "b": 12.5, "c": 30.0, "d": 50.0, "e": 65.0},
    9: {"a": None, "b": 25.0, "c": 42.5, "d": 57.5, "e": 72.5},
    12: {"a": None, "b": -20.0, "c": -2.5, "d": 15.0, "e": 30.0},
    24: {"a": None, "b": 0.0, "c": 17.5, "d": 42.5, "e": 60.0},
}
READINGS = {"first": ANNOTATED_Z_MM, "second": SECOND_READING_Z_MM}
ANNOTATION_UNCERTAINTY_MM = 2.5


def load_template(folder: str | Path, months: int, contrast: str) -> tuple[np.ndarray, np.ndarray]:
    """A template as (RAS-canonical data, affine), its header corrected (:data:`HEADER_CORRECTION`)."""
    from kerasmyelin.data.prepare import to_canonical
    from kerasmyelin.io.nifti import load_volume

    data, affine = load_volume(template_file(folder, months, contrast))
    return to_canonical(data, HEADER_CORRECTION @ affine)


def corrected_template_files(folder: str | Path, months: int, out: str | Path) -> tuple[Path, Path]:
    """(T1w, T2w) copies of a template in ``out`` with the corrected header, for the pipeline."""
    from kerasmyelin.io.nifti import write_nifti

    files = []
    for contrast in ("T1w", "T2w"):
        data, affine = load_template(folder, months, contrast)
        path, _ = write_nifti(Path(out) / f"Template-Month{months}-{contrast}.nii.gz", data, affine)
        files.append(path)
    return files[0], files[1]


def _centre_column(data: np.ndarray) -> tuple[float, float]:
    """(i, j) of the brain's centre column: the intensity-weighted mean voxel across x and y."""
    return tuple(float(np.average(np.arange(n), weights=w))
                 for n, w in zip(data.shape[:2], (data.sum(axis=(1, 2)), data.sum(axis=(0, 2)))))


def _centre_column_shift(folder: str | Path, months: int) -> float:
    """World z of a voxel slice at the brain's centre column minus its z at the corner column.

    The first reading labelled each slice by ``affine[2, 3] + affine[2, 2] * k`` of the T2w as
    stored (RAS-canonical, header uncorrected): the z of its corner column (i = j = 0). The
    affine is oblique (z rises 0.042 mm per voxel along x), so the centre of the brain lies
    4.4-6.7 mm higher than that label.
    """
    from kerasmyelin.data.prepare import to_canonical
    from kerasmyelin.io.nifti import load_volume

    d, a = to_canonical(*load_volume(template_file(folder, months, "T2w")))
    ic, jc = _centre_column(d)
    return float(a[2, 0] * ic + a[2, 1] * jc)


def reading_z(folder: str | Path, months: int, reading: str) -> dict[str, float | None]:
    """level -> world z (mm) at the brain's centre column of the ``reading`` ("first", "second")."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {sorted(READINGS)}, got {reading!r}")
    shift = _centre_column_shift(folder, months) if reading == "first" else 0.0
    return {k: None if z is None else z + shift for k, z in READINGS[reading][months].items()}


def draw_annotation_sheet(folder: str | Path, months: int, out: str | Path, contrast: str = "T2w") -> Path:
    """Both readings on one picture: the midsagittal slice with each reading's levels, and axial
    slices every 5 mm of world z plus those of the readings, front at the top, header corrected.

    The axial slices are voxel slices; the world z given is that of their centre column (the
    affine is oblique by ~3 degrees, so a slice's corners lie up to ~4 mm higher or lower).
    """
    from kerasmyelin.data.prepare import radiological
    from kerasmyelin.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    d, a = load_template(folder, months, contrast)
    ic, jc = _centre_column(d)
    zs = (a @ np.stack([np.full(d.shape[2], ic), np.full(d.shape[2], jc), np.arange(d.shape[2]),
                        np.ones(d.shape[2])]))[2]  # world z of each slice's centre column
    filled = np.nonzero(d.max(axis=(0, 1)) > 0)[0]
    z0, z1 = zs[filled[0]], zs[filled[-1]]
    colours = {"first": "orange", "second": "cyan"}
    readings = {reader: reading_z(folder, months, reader) for reader in READINGS}
    marks: dict[float, list[str]] = {}
    for reader, reading in readings.items():
        for key, z in reading.items():
            if z is not None:
                marks.setdefault(round(z, 1), []).append(f"{key} ({reader})")
    candidates = sorted(set(np.arange(np.ceil(z0 / 5) * 5, z1, 5.0).tolist()) | set(marks))
    cols, rows = 8, int(np.ceil(len(candidates) / 8))
    fig = plt.figure(figsize=(2.0 * cols, 2.0 * rows + 3.2))
    top = 3.2 / (2.0 * rows + 3.2)
    ax = fig.add_axes([0.05, 1 - top + 0.01, 0.5, top - 0.03])
    ax.imshow(d[round(ic)].T, origin="lower", cmap="gray",
              extent=[0, d.shape[1] * abs(a[1, 1]), zs[0], zs[-1]])
    for reader, reading in readings.items():
        for key, z in reading.items():
            if z is not None:
                ax.axhline(z, color=colours[reader], lw=1.0)
                ax.text(3 if reader == "first" else d.shape[1] * abs(a[1, 1]) - 3, z + 0.5, f"{key} z={z:.1f}",
                        color=colours[reader], fontsize=7, ha="left" if reader == "first" else "right")
    ax.set_ylim(z0 - 5, z1 + 5)
    ax.set_title(f"{months}-month template {contrast}, header corrected: midsagittal (front to the right); "
                 "first reading orange, second cyan", fontsize=9)
    ax.set_xticks([])
    for i, z in enumerate(candidates):
        r, c = divmod(i, cols)
        ax = fig.add_axes([c / cols, (rows - 1 - r) / rows * (1 - top), 1 / cols, (1 - top) / rows])
        ax.imshow(radiological(d[..., int(np.argmin(np.abs(zs - z)))]), cmap="gray")
        ax.set_axis_off()
        label = f"z={z:.1f}" + (f"  {', '.join(marks[z])}" if z in marks else "")
        ax.set_title(label, fontsize=6, y=0.88, color="cyan" if z in marks else "y")
    return _save(fig, out)


def finder_errors(folder: str | Path, contrast: str = "T1w", reading: str = "second"
                  ) -> dict[int, dict[str, float | None]]:
    """months -> level -> found z minus the ``reading``'s z (:func:`reading_z`; mm), None where
    the level is not annotated; and "dice" -> the alignment's outline overlap."""
    from kerasmyelin.wholebrain.level_finder import find_levels

    out = {}
    for months in TEMPLATE_MONTHS:
        fit = find_levels(*load_template(folder, months, contrast))
        out[months] = {k: None if z is None else round(fit.z_mm[k] - z, 1)
                       for k, z in reading_z(folder, months, reading).items()}
        out[months]["dice"] = round(float(fit.dice), 3)
    return out


def pipeline_on_templates(model: str | Path, folder: str | Path, out: str | Path, progress: bool = True) -> list[dict]:
    """Run ``kerasmyelin predict`` (the whole pipeline, with reports) on the five template pairs,
    from copies with the corrected header (:func:`corrected_template_files`).

    Returns:
        One dict per template: months, estimate, interval, corrected gap / grade at the template's
        age, level finder outline Dice and the pipeline's warnings.
    """
    import tempfile

    from kerasmyelin.wholebrain.estimator import TrainedEstimator
    from kerasmyelin.wholebrain.pipeline import (
        estimate_subject,
        prepare_scan,
        write_subject_outputs,
    )

    estimator = TrainedEstimator.from_path(model)
    rows = []
    for months in TEMPLATE_MONTHS:
        with tempfile.TemporaryDirectory() as tmp:
            scan = prepare_scan(*corrected_template_files(folder, months, tmp), prep=estimator.prep_config)
        result, attribution = estimate_subject(estimator, scan, subject=f"template-{months}mo", age_months=float(months))
        write_subject_outputs(Path(out) / f"template-{months}mo", result, scan, attribution, estimator)
        rows.append({"months": months, "estimate_months": result["estimate_months"],
                     "interval_months": result["interval_months"], "gap_months": result["gap_months"],
                     "corrected_gap_months": result["corrected_gap_months"], "grade": result["grade"],
                     "grade_reason": result["grade_reason"],
                     "dice": scan.fit.dice, "warnings": result["qc"]["warnings"]})
        if progress:
            print(f"{months:>2} months: estimated {result['estimate_months']:6.2f}  grade {result['grade']}  "
                  f"warnings {len(scan.qc['warnings'])}", flush=True)
    return rows
