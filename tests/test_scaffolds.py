"""Infant anatomy scaffolds (synth/scaffolds.py) and the cohort's choice of anatomy.

A phantom "template" made from the MNI152 tissue maps, shrunk to an infant's size with its own
proportions and given a newborn's contrast, has a known answer: segmented and placed back on the
anatomy grid, its white matter must land on the MNI white matter, and its proportions must come
back as the ones it was shrunk with.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from kerasmyelin.errors import InputError
from kerasmyelin.io.infant_templates import HEADER_CORRECTION, TEMPLATE_MONTHS
from kerasmyelin.synth import scaffolds
from kerasmyelin.synth.cohort import CohortConfig, draw_cohort, scaffold_for_age

SHRINK = np.array([0.78, 0.70, 0.66])  # phantom mm per MNI mm along x, y, z
VOXEL_MM = 1.6


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _phantom_labels():
    """Crisp MNI labels (0 background, 1 wm, 2 gm, 3 csf) resampled to the phantom's grid."""
    from kerasmyelin.atlas.priors import load_mni_priors

    mni = load_mni_priors()
    # Phantom voxel -> MNI voxel: phantom mm = SHRINK * MNI mm.
    step = VOXEL_MM / SHRINK  # MNI mm per phantom voxel (MNI voxels are 1 mm)
    shape = tuple(int(n) for n in np.ceil(np.array(mni.gm.shape) / step))
    wm = ndimage.affine_transform(mni.wm, step, output_shape=shape, order=1)
    gm = ndimage.affine_transform(mni.gm, step, output_shape=shape, order=1)
    cerebrum = ndimage.affine_transform(mni.cerebrum.astype(np.float32), step, output_shape=shape, order=1) > 0.5
    labels = np.where(wm > gm, 1, 2)
    labels[(wm + gm < 0.35)] = 3
    labels[~cerebrum] = 0  # cut below the midbrain, like the templates
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = SHRINK * mni.affine[:3, 3]
    return labels, affine


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    labels, affine = _phantom_labels()
    rng = np.random.default_rng(0)
    # Newborn contrast: white matter darker than cortex in T1w, brighter in T2w; CSF T1w-dark, T2w-bright.
    means = {"T1w": (0, 300, 380, 120), "T2w": (0, 900, 700, 1500)}
    folder = tmp_path_factory.mktemp("templates")
    for contrast, m in means.items():
        img = np.asarray(m, np.float32)[labels]
        img = ndimage.gaussian_filter(img, 0.5) * (labels > 0)
        img = np.where(labels > 0, img + rng.normal(0, 25, labels.shape), 0).clip(0).astype(np.uint16)
        for months in TEMPLATE_MONTHS:
            # Stored the way the real templates are: with their front-back reversed header.
            nib.save(nib.Nifti1Image(img, HEADER_CORRECTION @ affine),
                     folder / f"Template-Month{months}-{contrast}.nii.gz")
    return folder, labels, affine


def test_mixture_em_recovers_two_classes_under_a_weak_prior():
    rng = np.random.default_rng(1)
    truth = rng.random(4000) < 0.3
    x = np.where(truth[:, None], [2.0, -1.0], [0.0, 1.0]) + rng.normal(0, 0.4, (4000, 2))
    # A prior that is right only 60% of the time.
    p = np.where(truth, 0.6, 0.4)
    prior = np.stack([p, 1 - p], axis=1)
    post, means, _ = scaffolds.gaussian_mixture_em(x, prior)
    assert np.mean((post[:, 0] > 0.5) == truth) > 0.98
    np.testing.assert_allclose(means[0], [2.0, -1.0], atol=0.05)


def test_segmentation_recovers_the_phantom_tissue(phantom_folder):
    folder, labels, affine = phantom_folder
    t1 = scaffolds.corrected_image(folder / "Template-Month0-T1w.nii.gz")
    t2 = scaffolds.corrected_image(folder / "Template-Month0-T2w.nii.gz")
    seg = scaffolds.segment(np.asarray(t1.dataobj), np.asarray(t2.dataobj), t1.affine)
    assert _dice(seg.fractions["wm"] > 0.5, labels == 1) > 0.9
    assert _dice(seg.fractions["gm"] > 0.5, labels == 2) > 0.85
    # The classes keep their names although newborn white matter is T1w-darker than cortex.
    assert seg.means["wm"][0] < seg.means["gm"][0] and seg.means["wm"][1] > seg.means["gm"][1]
    # The alignment undoes the shrinking (template mm -> MNI mm = 1 / SHRINK).
    np.testing.assert_allclose(np.diag(seg.to_mni)[:3], 1 / SHRINK, rtol=0.05)


def test_scaffold_lands_on_the_mni_grid_with_the_phantom_proportions(phantom_folder):
    from kerasmyelin.synth import anatomy

    folder, _, _ = phantom_folder
    sc = scaffolds.build_scaffold(folder, 6, res_mm=3.0)
    mni = anatomy.build_anatomy(3.0)
    assert sc.anatomy.shape == mni.shape
    np.testing.assert_array_equal(sc.anatomy.affine, mni.affine)
    assert _dice(sc.anatomy.fractions["wm"] > 0.5, mni.fractions["wm"] > 0.5) > 0.75
    expected = SHRINK / np.prod(SHRINK) ** (1 / 3)
    np.testing.assert_allclose(sc.proportions, expected, rtol=0.04)
    assert np.prod(sc.proportions) == pytest.approx(1.0)
    # Cerebrum from the phantom and cerebellum and brainstem from MNI: about MNI's brain.
    assert sc.brain_ml == pytest.approx(1886.5, rel=0.08)
    # The head's layers and milestone fields exist as for MNI.
    assert sc.anatomy.fractions["skull"].sum() > 0 and np.isfinite(sc.anatomy.t2_mid).all()


def test_a_scaffold_from_a_missing_or_corrupt_template_names_the_file(tmp_path, phantom_folder):
    with pytest.raises(InputError, match="Template-Month9-T1w"):
        scaffolds.build_scaffold(tmp_path, 9, res_mm=3.0)
    folder, _, _ = phantom_folder
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in folder.glob("Template-Month12-*"):
        (broken / f.name).write_bytes(f.read_bytes()[:2000])  # truncated
    with pytest.raises(InputError, match="Template-Month12-T1w"):
        scaffolds.build_scaffold(broken, 12, res_mm=3.0)


def test_scaffold_names():
    assert scaffolds.anatomy_name(12) == "template-12mo"
    assert scaffolds.scaffold_months("template-24mo") == 24
    for bad in ("template-7mo", "templates-6mo", "mni152", "template-mo"):
        with pytest.raises(ValueError, match="unknown anatomy"):
            scaffolds.scaffold_months(bad)


def test_scaffold_for_age_brackets_the_age():
    months = (0, 6, 9, 12)
    assert scaffold_for_age(-1.5, months, 0.0) == 0
    assert scaffold_for_age(20.0, months, 0.0) == 12  # 24 left out: the nearest remaining
    assert scaffold_for_age(7.5, months, 0.49) == 9 and scaffold_for_age(7.5, months, 0.51) == 6
    assert scaffold_for_age(6.0, months, 0.99) == 6
    # Averaged over draws the older template is chosen in proportion to the age's distance.
    u = np.linspace(0, 1, 1001)[:-1]
    share = np.mean([scaffold_for_age(3.0, months, x) == 6 for x in u])
    assert share == pytest.approx(0.5, abs=0.01)


def test_cohort_anatomy_draws(phantom_folder):
    folder, _, _ = phantom_folder
    plain = draw_cohort(CohortConfig(subjects=60, seed=4))
    mixed = draw_cohort(CohortConfig(subjects=60, seed=4, template_anatomy_fraction=0.5, templates=str(folder),
                                     template_months=(0, 6, 9, 12)))
    assert {s.anatomy for s in plain} == {"mni"}
    on_templates = [s for s in mixed if s.anatomy != "mni"]
    assert 18 <= len(on_templates) <= 42
    assert {s.anatomy for s in on_templates} <= {"template-0mo", "template-6mo", "template-9mo", "template-12mo"}
    for s in on_templates:
        assert s.template_root == str(Path(folder).resolve())
        m = scaffolds.scaffold_months(s.anatomy)
        assert m in (0, 6, 9, 12) and (abs(m - s.age_months) <= 6 or (s.age_months > 12 and m == 12))
    # Choosing anatomy uses its own random stream: everything else is the plain cohort's.
    for a, b in zip(plain, mixed):
        assert (a.age_months, a.seed, a.brain_volume_ml, a.rotation_deg) == (b.age_months, b.seed, b.brain_volume_ml,
                                                                              b.rotation_deg)


@pytest.mark.parametrize("kwargs, match", [
    ({"template_anatomy_fraction": 0.5}, "needs the infant template folder"),
    ({"template_anatomy_fraction": 1.5, "templates": "x"}, "between 0 and 1"),
    ({"template_months": (0, 7)}, "template_months must be some of"),
    ({"template_months": ()}, "template_months must be some of"),
])
def test_cohort_refuses_bad_anatomy_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CohortConfig(subjects=4, **kwargs)


def test_cohort_names_a_missing_template_before_any_work(tmp_path):
    with pytest.raises(InputError, match="Template-Month0-T1w"):
        CohortConfig(subjects=4, template_anatomy_fraction=0.5, templates=str(tmp_path))


def test_tissue_model_refuses_an_unknown_anatomy():
    from kerasmyelin.synth.tissue_model import tissue_model

    with pytest.raises(ValueError, match="unknown anatomy"):
        tissue_model(3.0, "template-5mo", "/nowhere")
    with pytest.raises(ValueError, match="needs the infant template folder"):
        tissue_model(3.0, "template-6mo", "")


def test_an_infant_on_a_scaffold_is_simulated_and_recorded(phantom_folder, tmp_path, monkeypatch):
    from kerasmyelin.synth.dataset import build_cohort

    monkeypatch.setenv("KERASMYELIN_CACHE_DIR", str(tmp_path / "cache"))
    folder, _, _ = phantom_folder
    config = CohortConfig(subjects=3, seed=2, template_anatomy_fraction=1.0, templates=str(folder),
                          template_months=(9,))
    out = build_cohort(tmp_path / "cohort", config, jobs=1, progress=False, res_mm=3.0)
    truth = (out / "derivatives" / "synth_truth" / "truth.tsv").read_text().splitlines()
    col = truth[0].split("\t").index("anatomy")
    assert [line.split("\t")[col] for line in truth[1:]] == ["template-9mo"] * 3
    sub = json.loads((out / "derivatives" / "synth_truth" / "sub-001_truth.json").read_text())["subject"]
    assert sub["anatomy"] == "template-9mo" and sub["template_root"] == str(Path(folder).resolve())
    img = nib.load(out / "sub-001" / "anat" / "sub-001_T2w.nii.gz")
    assert np.asarray(img.dataobj).max() > 0


@pytest.mark.parametrize("argv, message", [
    (["--template-months", "0,6"], "need --template-anatomy DIR"),
    (["--template-anatomy-fraction", "0.3"], "need --template-anatomy DIR"),
    (["--template-anatomy", "/nowhere"], "infant template not found"),
    (["--acquisition-variety", "2"], "acquisition_variety must be a share"),
])
def test_synth_refuses_bad_anatomy_options_before_any_work(tmp_path, capsys, argv, message):
    from kerasmyelin.cli.main import main

    assert main(["synth", "--out", str(tmp_path / "c"), "--subjects", "2", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_held_out_age_is_measured_on_another_age_scaffold():
    from kerasmyelin.validation.calibration import held_out_scaffold

    assert held_out_scaffold(9, (0, 6, 12, 24)) == 6  # a tie: the younger
    assert held_out_scaffold(24, (0, 6, 9, 12)) == 12
    assert held_out_scaffold(0, (6, 9, 12, 24)) == 6


def test_a_template_in_a_simulated_head_keeps_its_brain_and_gains_the_layers(phantom_folder):
    from kerasmyelin.validation.template_head import PAD_MM, with_simulated_head

    folder, labels, affine = phantom_folder
    t1 = np.asarray(scaffolds.corrected_image(folder / "Template-Month12-T1w.nii.gz").dataobj, np.float32)
    t2 = np.asarray(scaffolds.corrected_image(folder / "Template-Month12-T2w.nii.gz").dataobj, np.float32)
    h1, h2, new_affine = with_simulated_head(t1, t2, affine, 12, curves="published")
    pad = int(np.ceil(PAD_MM / VOXEL_MM))
    inner = tuple(slice(pad, pad + n) for n in t1.shape)
    brain = labels > 0
    np.testing.assert_array_equal(h1[inner][brain], t1[brain])  # the brain is left as it is
    np.testing.assert_allclose(new_affine[:3, 3], affine[:3, :3] @ np.full(3, -pad) + affine[:3, 3])
    shell = (h1 > 0) & np.pad(~brain, pad, constant_values=True)
    assert shell.sum() > 0.3 * brain.sum()  # a head around the brain
    # Scalp fat is brighter than cortex on T1w; skull is dark in both.
    assert np.percentile(h1[shell], 90) > 1.2 * np.median(t1[labels == 2])
    assert np.percentile(h1[shell], 10) < 0.5 * np.median(t1[labels == 2])
    assert h2[shell].max() > np.median(t2[labels == 2])  # extra-axial CSF is bright on T2w


@pytest.mark.slow
def test_pretrain_fits_its_curves_on_the_scaffolds_of_the_templates_it_is_given(phantom_folder, tmp_path,
                                                                                monkeypatch):
    from kerasmyelin.cli.pretrain_cmd import _fit_curves_on_scaffolds
    from kerasmyelin.synth.curves import curves_for

    monkeypatch.setenv("KERASMYELIN_CACHE_DIR", str(tmp_path / "cache"))
    folder, _, _ = phantom_folder
    out = tmp_path / "tissue_curves.json"
    _fit_curves_on_scaffolds(str(folder), out)
    record = json.loads(out.read_text())
    assert "own anatomy scaffold" in record["provenance"]["synthetic"]
    assert record["provenance"]["command"].endswith("--anatomy templates")
    assert len(curves_for(str(out)).tau_wm) == 3  # a curves file synth reads
