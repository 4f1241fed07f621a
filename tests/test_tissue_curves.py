"""Tissue curve sets: published, calibrated, and files users write (synth.curves)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from kerasmyelin.synth import curves as tc
from kerasmyelin.synth.relaxation import PUBLISHED, tissue_parameters


def test_published_round_trips_through_json():
    assert tc.curves_from_dict(json.loads(json.dumps(PUBLISHED.as_dict()))) == PUBLISHED


def test_calibrated_set_is_shipped_with_its_provenance_and_differs_from_the_literature():
    calibrated = tc.curves_for("calibrated")
    assert calibrated.name == "calibrated" and calibrated != PUBLISHED
    record = json.loads(tc.CALIBRATED_FILE.read_text())
    assert "templates" in record["provenance"]["fitted_to"]
    assert "calibrate-synth" in record["provenance"]["command"]
    # Physics kept: relaxation still falls from birth to maturity in both tissues.
    for tissue in ("wm", "gm"):
        young = tissue_parameters(tissue, 3.0, np.float32(-20), np.float32(-20), calibrated)
        old = tissue_parameters(tissue, 3.0, np.float32(120), np.float32(120), calibrated)
        assert old[0] < young[0] and old[1] < young[1]


def _write(tmp_path, record, name="curves.json"):
    path = tmp_path / name
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(colour="blue"), "unknown key(s) ['colour']"),
    (lambda d: d.pop("tau_gm"), "missing key(s) ['tau_gm']"),
    (lambda d: d["white"]["3.0"].update(t1_adult=-5), "white 3.0 T t1_adult = -5 is outside"),
    (lambda d: d["grey"]["1.5"].update(pd_adult=1.4), "grey 1.5 T pd_adult = 1.4 is outside"),
    (lambda d: d["white"].pop("1.5"), "white must give the field strengths"),
    (lambda d: d.update(tau_wm=[5, 9]), "tau_wm must be three"),
    (lambda d: d.update(speed_t2="fast"), "speed_t2 must be a number"),
    (lambda d: d.update(wm_lead_months=float("nan")), "wm_lead_months must be a number"),
])
def test_a_bad_curves_file_is_refused_naming_file_and_problem(tmp_path, change, message):
    record = PUBLISHED.as_dict()
    change(record)
    path = _write(tmp_path, record)
    with pytest.raises(ValueError) as info:
        tc.curves_for(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_unknown_names_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="unknown tissue curves 'literature'"):
        tc.curves_for("literature")
    with pytest.raises(ValueError, match="tissue-curves file not found"):
        tc.curves_for(str(tmp_path / "absent.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": ')
    with pytest.raises(ValueError, match="not a readable tissue-curves JSON file"):
        tc.curves_for(str(broken))


def test_a_users_file_is_known_by_its_path(tmp_path):
    path = _write(tmp_path, replace(PUBLISHED, speed_t2=1.2).as_dict())
    curves = tc.curves_for(str(path))
    assert curves.name == str(path) and curves.speed_t2 == 1.2


def test_cohort_refuses_unknown_curves_before_any_work():
    from kerasmyelin.synth.cohort import CohortConfig

    with pytest.raises(ValueError, match="unknown tissue curves"):
        CohortConfig(subjects=2, tissue_curves="nonsense")


def test_same_infants_other_physics_and_the_truth_says_which():
    from kerasmyelin.synth.cohort import CohortConfig, draw_cohort
    from kerasmyelin.synth.simulate import simulate_subject

    published = draw_cohort(CohortConfig(subjects=2, seed=4))
    calibrated = draw_cohort(CohortConfig(subjects=2, seed=4, tissue_curves="calibrated"))
    for a, b in zip(published, calibrated):
        assert replace(a, tissue_curves="calibrated") == b  # every draw the same
    assert calibrated[0].tissue_curves == "calibrated"
    sa, sb = simulate_subject(published[1]), simulate_subject(calibrated[1])
    assert sa.level_slices == sb.level_slices and sa.t1w.shape == sb.t1w.shape
    assert not np.array_equal(sa.t2w, sb.t2w)


def test_synth_command_refuses_unknown_curves(tmp_path, capsys):
    from kerasmyelin.cli.main import main

    code = main(["synth", "--out", str(tmp_path / "c"), "--subjects", "2", "--tissue-curves", "bogus"])
    assert code != 0
    assert "unknown tissue curves 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
