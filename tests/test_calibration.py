"""Fitting tissue curves to templates (validation.calibration): the instrument's shortcut is exact,
the fit finds known curves, and held-out cells come only from fits that did not see their age."""

import numpy as np
import pytest

from kerasmyelin.synth.relaxation import PUBLISHED
from kerasmyelin.validation import calibration as cal


@pytest.fixture(scope="module")
def ages():
    return {m: cal.age_voxels(m) for m in (0, 12)}


def test_zero_factors_are_the_published_curves():
    assert cal.curves_from_factors(np.zeros(len(cal.PARAMETERS)), name="published") == PUBLISHED


def test_voxel_shortcut_equals_measuring_the_rendered_image(ages):
    from kerasmyelin.validation.synthetic_ratios import instrument_ratios, typical_infant

    curves = "calibrated"
    rendered = instrument_ratios(typical_infant(12, 3.0, protocol="research3d", tissue_curves=curves))
    from kerasmyelin.synth.curves import curves_for

    shortcut = ages[12].ratios(curves_for(curves))
    for key, value in shortcut.items():
        assert abs(value - rendered[key]) < 1e-3, (key, value, rendered[key])


def test_optimiser_shortcut_is_close(ages):
    quick = {m: a.subsample(cal.FIT_VOXELS) for m, a in ages.items()}
    speeds = cal._SpeedTable(list(quick.values())).solve(PUBLISHED)
    for m in ages:
        exact, fast = ages[m].ratios(PUBLISHED), quick[m].ratios(PUBLISHED, speeds)
        assert max(abs(exact[k] - fast[k]) for k in exact) < 0.01


@pytest.mark.slow
def test_fit_recovers_cells_of_known_curves(ages):
    truth = np.zeros(len(cal.PARAMETERS))
    names = [f"{w}.{k}" for w, k, _ in cal.PARAMETERS]
    truth[names.index("wm.t2_adult")] = -0.4
    truth[names.index("speed.t2")] = 0.3
    target = cal.synthetic_cells(cal.curves_from_factors(truth), ages, (0, 12))
    fit = cal.fit_curves(target, ages, (0, 12), max_iterations=40)
    cells = cal.synthetic_cells(fit.curves, ages, (0, 12))
    published = cal.synthetic_cells(PUBLISHED, ages, (0, 12))
    judged = [k for k in target if k[1] in cal.FIT_LEVELS]
    # The priors pull towards the published values, so the known curves are approached, not met.
    assert max(abs(cells[k] - target[k]) for k in judged) < 0.03
    assert max(abs(published[k] - target[k]) for k in judged) > 0.05  # the test is not trivial
    fitted_sq = sum((cells[k] - target[k]) ** 2 for k in judged)
    assert fitted_sq < 0.1 * sum((published[k] - target[k]) ** 2 for k in judged)


def test_leave_one_age_out_never_measures_an_age_with_a_fit_that_saw_it(monkeypatch):
    seen = []

    def fake_fit(template, ages, months, name="calibrated", max_iterations=60):
        seen.append(tuple(months))
        return cal.Fit(PUBLISHED, np.zeros(len(cal.PARAMETERS)), tuple(months), 0.0, 0)

    measured = []

    def fake_cells(curves, ages, months):
        measured.append((seen[-1], tuple(months)))
        return {("T1w", "b", m): 1.0 for m in months}

    monkeypatch.setattr(cal, "fit_curves", fake_fit)
    monkeypatch.setattr(cal, "synthetic_cells", fake_cells)
    cells, fits = cal.leave_one_age_out({}, {}, (0, 6, 9, 12, 24))
    assert sorted(cells) == [("T1w", "b", m) for m in (0, 6, 9, 12, 24)]
    for fit_months, held in measured:
        assert len(held) == 1 and held[0] not in fit_months and len(fit_months) == 4
    assert {m: f.months for m, f in fits.items()} == {m: tuple(x for x in (0, 6, 9, 12, 24) if x != m)
                                                      for m in (0, 6, 9, 12, 24)}


@pytest.mark.parametrize("argv,message", [
    (["--out", "curves.txt"], "--out must name a .json file"),
    (["--out", "c.json", "--months", "6"], "give at least two of the template ages"),
    (["--out", "c.json", "--months", "3,6"], "expected some of the template ages"),
    (["--out", "c.json", "--months", "six,nine"], "expected comma-separated whole months"),
])
def test_calibrate_synth_refuses_bad_options_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    from kerasmyelin.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["calibrate-synth", "--templates", str(tmp_path)] + argv) != 0
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_calibrate_synth_never_replaces_a_file_that_is_not_curves(tmp_path, capsys):
    from kerasmyelin.cli.main import main

    other = tmp_path / "notes.json"
    other.write_text('{"my": "notes"}')
    assert main(["calibrate-synth", "--templates", str(tmp_path / "t"), "--out", str(other)]) != 0
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["calibrate-synth", "--templates", str(tmp_path / "t"), "--out", str(other), "--overwrite"]) != 0
    assert "not a file kerasmyelin writes here" in capsys.readouterr().err
    assert other.read_text() == '{"my": "notes"}'


def test_a_missing_or_corrupt_template_is_named(tmp_path, capsys):
    import shutil

    from kerasmyelin.cli.main import main
    from tests.conftest import TEMPLATES, require_shared

    folder = tmp_path / "templates"
    shutil.copytree(require_shared(TEMPLATES), folder)
    (folder / "Template-Month9-T2w.nii.gz").unlink()
    assert main(["calibrate-synth", "--templates", str(folder), "--out", str(tmp_path / "c.json")]) == 2
    assert "Template-Month9-T2w.nii.gz" in capsys.readouterr().err
    shutil.copy(TEMPLATES / "Template-Month9-T2w.nii.gz", folder)
    broken = folder / "Template-Month0-T1w.nii.gz"  # the first one measured: the test stays quick
    broken.write_bytes(broken.read_bytes()[:5000])  # truncated
    assert main(["validate-synth", "--templates", str(folder), "--out", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "docs").exists()
