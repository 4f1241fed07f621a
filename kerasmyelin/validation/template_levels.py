"""The five levels in the real infant templates, annotated by inspection, and the pipeline on them.

The UNC/BME-X infant templates (``../shared/data/infant_templates``: T1w and T2w at 0, 6, 9, 12
and 24 months, 3-D, 0.8 mm, skull-stripped) are the only real infant images we have. They serve
two checks of the whole-brain pipeline (docs/wholebrain.md):

* the level finder against a person's reading of where each level lies, and
* the pipeline end to end: the estimated myelination age of each template, from a model trained
  only on the synthetic cohort (the sim-to-real gap).

How the annotations were made
-----------------------------
Each T2w template was reoriented to RAS and drawn as a midsagittal slice beside axial slices
every 5 mm of world z (``docs/figures/template_levels_*.png``, made by
:func:`draw_annotation_sheet`). Reading those, we wrote down the world z (mm, the template's own
frame) of the axial slice that best shows:

* b, midbrain: the cerebral peduncles / the midbrain stub between the temporal lobes, below the
  third ventricle;
* c, internal capsule and splenium: the posterior limbs of the internal capsules with the
  splenium of the corpus callosum behind the third ventricle;
* d, centrum semiovale: the first slice above the bodies of the lateral ventricles, white
  matter confluent across each hemisphere;
* e, subcortical white matter: the high convexity, gyri and their subcortical white matter
  only, about 15 mm above d.

Level a (middle cerebellar peduncles / pons) is **absent**: the templates are cerebrum-only,
cut below the midbrain. The readings are on a 5 mm grid, so each carries about +/-2.5 mm; b and c
were re-read on enlarged slices (6-month b moved from 0 to 5 mm, 9-month c from 35 to 30 mm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasmyelin.errors import InputError

TEMPLATE_AGES = (0, 6, 9, 12, 24)
# months -> level -> annotated world z (mm); None: the level is not in the template.
ANNOTATED_Z_MM: dict[int, dict[str, float | None]] = {
    0: {"a": None, "b": 5.0, "c": 20.0, "d": 40.0, "e": 55.0},
    6: {"a": None, "b": 5.0, "c": 20.0, "d": 40.0, "e": 55.0},
    9: {"a": None, "b": 15.0, "c": 30.0, "d": 55.0, "e": 70.0},
    12: {"a": None, "b": -30.0, "c": -10.0, "d": 10.0, "e": 25.0},
    24: {"a": None, "b": -5.0, "c": 20.0, "d": 40.0, "e": 55.0},
}
ANNOTATION_UNCERTAINTY_MM = 2.5


def template_file(folder: str | Path, months: int, contrast: str) -> Path:
    path = Path(folder) / f"Template-Month{months}-{contrast}.nii.gz"
    if not path.is_file():
        raise InputError("infant template not found", path)
    return path


def draw_annotation_sheet(folder: str | Path, months: int, out: str | Path, contrast: str = "T2w") -> Path:
    """The picture the annotations were read from: midsagittal + axial slices every 5 mm, with
    the annotated levels marked."""
    import nibabel as nib

    from kerasmyelin.data.prepare import radiological, to_canonical
    from kerasmyelin.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    img = nib.load(template_file(folder, months, contrast))
    d, a = to_canonical(np.asarray(img.dataobj, np.float32), img.affine)
    zs = a[2, 3] + a[2, 2] * np.arange(d.shape[2])
    filled = np.nonzero(d.max(axis=(0, 1)) > 0)[0]
    z0, z1 = zs[filled[0]], zs[filled[-1]]
    candidates = np.arange(np.ceil(z0 / 5) * 5, z1, 5)
    marks = {z: k for k, z in ANNOTATED_Z_MM[months].items() if z is not None}
    cols, rows = 8, int(np.ceil(len(candidates) / 8))
    fig = plt.figure(figsize=(2.0 * cols, 2.0 * rows + 3.2))
    top = 3.2 / (2.0 * rows + 3.2)
    ax = fig.add_axes([0.05, 1 - top + 0.01, 0.5, top - 0.03])
    centre = int(np.rint(np.average(np.arange(d.shape[0]), weights=d.sum(axis=(1, 2)))))
    ax.imshow(d[centre].T, origin="lower", cmap="gray", extent=[0, d.shape[1] * abs(a[1, 1]), zs[0], zs[-1]])
    for z in candidates:
        ax.axhline(z, color="orange" if z in marks else "y", lw=1.2 if z in marks else 0.3)
        if z in marks:
            ax.text(3, z + 1, f"{marks[z]} (z={z:.0f})", color="orange", fontsize=7)
    ax.set_ylim(z0 - 5, z1 + 5)
    ax.set_title(f"{months}-month template {contrast}: midsagittal; axial slices every 5 mm below", fontsize=9)
    ax.set_xticks([])
    for i, z in enumerate(candidates):
        r, c = divmod(i, cols)
        ax = fig.add_axes([c / cols, (rows - 1 - r) / rows * (1 - top), 1 / cols, (1 - top) / rows])
        ax.imshow(radiological(d[..., int(np.argmin(np.abs(zs - z)))]), cmap="gray")
        ax.set_axis_off()
        label = f"z={z:.0f}" + (f"  level {marks[z]}" if z in marks else "")
        ax.set_title(label, fontsize=7, y=0.88, color="orange" if z in marks else "y")
    return _save(fig, out)


def finder_errors(folder: str | Path, contrast: str = "T1w") -> dict[int, dict[str, float | None]]:
    """months -> level -> found z minus annotated z (mm), None where the level is not annotated;
    and "dice" -> the alignment's outline overlap."""
    from kerasmyelin.data.prepare import to_canonical
    from kerasmyelin.io.nifti import load_volume
    from kerasmyelin.wholebrain.level_finder import find_levels

    out = {}
    for months in TEMPLATE_AGES:
        data, affine = to_canonical(*load_volume(template_file(folder, months, contrast)))
        fit = find_levels(data, affine)
        out[months] = {k: None if z is None else round(fit.z_mm[k] - z, 1)
                       for k, z in ANNOTATED_Z_MM[months].items()}
        out[months]["dice"] = round(float(fit.dice), 3)
    return out


def pipeline_on_templates(model: str | Path, folder: str | Path, out: str | Path, progress: bool = True) -> list[dict]:
    """Run ``kerasmyelin predict`` (the whole pipeline, with reports) on the five template pairs.

    Returns:
        One dict per template: months, estimate, interval, corrected gap / grade at the template's
        age, level finder outline Dice and the pipeline's warnings.
    """
    from kerasmyelin.wholebrain.pipeline import (
        TrainedEstimator,
        estimate_subject,
        prepare_scan,
        write_subject_outputs,
    )

    estimator = TrainedEstimator.from_path(model)
    rows = []
    for months in TEMPLATE_AGES:
        scan = prepare_scan(template_file(folder, months, "T1w"), template_file(folder, months, "T2w"),
                            prep=estimator.prep_config)
        result, attribution = estimate_subject(estimator, scan, subject=f"template-{months}mo", age_months=float(months))
        write_subject_outputs(Path(out) / f"template-{months}mo", result, scan, attribution, estimator)
        rows.append({"months": months, "estimate_months": result["estimate_months"],
                     "interval_months": result["interval_months"], "gap_months": result["gap_months"],
                     "corrected_gap_months": result["corrected_gap_months"], "grade": result["grade"],
                     "dice": scan.fit.dice, "warnings": result["qc"]["warnings"]})
        if progress:
            print(f"{months:>2} months: estimated {result['estimate_months']:6.2f}  grade {result['grade']}  "
                  f"warnings {len(scan.qc['warnings'])}", flush=True)
    return rows
