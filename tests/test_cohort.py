from dataclasses import asdict

import numpy as np
import pytest

from kerasmyelin.synth.cohort import VARIED, WEEKS_PER_MONTH, CohortConfig, draw_cohort
from kerasmyelin.synth.oracle import oracle_floor


def test_defaults_mirror_the_paper_cohort():
    c = draw_cohort(CohortConfig())
    assert len(c) == 119
    assert sum(s.sex == "M" for s in c) == 40
    assert sum(s.field_strength == 3.0 for s in c) == 95
    assert {s.manufacturer for s in c if s.field_strength == 1.5} == {"Siemens"}
    ages = [s.age_months for s in c]
    assert min(ages) == pytest.approx(-1.71) and max(ages) == pytest.approx(23.54)
    assert len({s.participant_id for s in c}) == 119


def test_corrected_age_follows_gestation():
    for s in draw_cohort(CohortConfig(subjects=60, seed=4)):
        assert s.chronological_age_months >= 0
        expected = s.chronological_age_months - (40 - s.gestational_age_weeks) / WEEKS_PER_MONTH
        assert s.age_months == pytest.approx(expected, abs=0.02)


def test_same_seed_same_infants_other_seed_others():
    a = draw_cohort(CohortConfig(subjects=10, seed=1))
    b = draw_cohort(CohortConfig(subjects=10, seed=1))
    c = draw_cohort(CohortConfig(subjects=10, seed=2))
    assert a == b
    assert [s.myelination_age_months for s in a] != [s.myelination_age_months for s in c]


def test_oracle_floor_is_small_but_not_zero():
    c = draw_cohort(CohortConfig())
    floor = oracle_floor([s.age_months for s in c], [s.myelination_age_months for s in c])
    # Individual pace makes age unreadable to within ~half a month or better, yet far below the
    # paper's 1.34 months ensemble error.
    assert 0.3 < floor["mae"] < 1.2 and floor["pearson_r"] > 0.95


def test_maturation_spread_grows_with_age():
    c = draw_cohort(CohortConfig(subjects=400, seed=5))
    a = np.array([s.age_months for s in c])
    err = np.abs(np.array([s.myelination_age_months for s in c]) - a)
    assert err[a > 16].mean() > err[a < 4].mean()


@pytest.mark.parametrize("kwargs,match", [
    ({"subjects": 0}, "positive"), ({"subjects": -3}, "positive"), ({"subjects": 2.5}, "positive"),
    ({"field_strengths": (3.0, 7.0)}, "unknown field strength"), ({"age_range_months": (5, 1)}, "increasing"),
    ({"research_fraction": 1.5}, "between 0 and 1"), ({"skull_stripped_fraction": -0.1}, "between 0 and 1"),
    ({"timing_jitter": 2.0}, "timing_jitter"),
])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CohortConfig(**kwargs)


def test_protocol_variety_leaves_the_paper_draws_alone():
    paper = draw_cohort(CohortConfig(subjects=40))
    varied = draw_cohort(CohortConfig(subjects=40, **VARIED))
    variety = ("protocol", "t1w_timing", "t2w_timing", "skull_stripped", "smoothing_fwhm_mm")
    for a, b in zip(paper, varied):
        assert {k: v for k, v in asdict(a).items() if k not in variety} == \
            {k: v for k, v in asdict(b).items() if k not in variety}
    assert {s.protocol for s in paper} == {"clinical"} and not any(s.skull_stripped for s in paper)


def test_protocol_variety_follows_its_shares():
    c = draw_cohort(CohortConfig(subjects=400, research_fraction=0.5, timing_jitter=0.1,
                                 skull_stripped_fraction=0.3, smoothed_fraction=0.2))
    assert 0.42 < np.mean([s.protocol == "research3d" for s in c]) < 0.58
    assert 0.23 < np.mean([s.skull_stripped for s in c]) < 0.37
    fwhm = np.array([s.smoothing_fwhm_mm for s in c])
    assert 0.14 < np.mean(fwhm > 0) < 0.26 and fwhm.max() <= 3.0
    tr = np.log([s.t1w_timing[0] for s in c])
    assert 0.08 < tr.std() < 0.12
    research = [s for s in c if s.protocol == "research3d"]
    assert {s.scanner.t1w.kind for s in research} == {"mprage"}
    assert {s.scanner.acquisition for s in research} == {"3D"}


def test_participant_ids_are_padded_to_sort_in_order():
    small = [s.participant_id for s in draw_cohort(CohortConfig(subjects=12))]
    assert small[0] == "sub-001" and small[-1] == "sub-012"
    large = [s.participant_id for s in draw_cohort(CohortConfig(subjects=1200))]
    assert large[0] == "sub-0001" and large[-1] == "sub-1200" and large == sorted(large)


def test_acquisition_variety_follows_its_share_and_leaves_the_rest_alone():
    plain = draw_cohort(CohortConfig(subjects=200, seed=5, **VARIED))
    varied = draw_cohort(CohortConfig(subjects=200, seed=5, acquisition_variety=0.5, **VARIED))
    changed = [b for b in varied if b.slice_thickness_mm]
    assert 75 <= len(changed) <= 125
    for a, b in zip(plain, varied):
        assert asdict(a) == {**asdict(b), "slice_thickness_mm": 0.0, "pixel_mm": 0.0, "t1w_variant": "",
                             "t2w_variant": ""}
    for s in changed:
        lo, hi = (1.0, 5.0) if s.protocol == "research3d" else (3.0, 6.0)
        assert lo <= s.slice_thickness_mm <= hi and 0.5 <= s.pixel_mm <= 1.2
        assert s.scanner.slice_thickness_mm == s.slice_thickness_mm
        if s.protocol == "clinical":
            assert s.t1w_variant == s.t2w_variant == ""
    research = [s for s in changed if s.protocol == "research3d"]
    assert 0.3 < np.mean([s.t1w_variant == "spgr" for s in research]) < 0.7
    assert 0.1 < np.mean([s.t2w_variant == "tse" for s in research]) < 0.55
