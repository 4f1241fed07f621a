"""The milestone table must come out of the tissue model: order and timing of visible change."""

import numpy as np
import pytest

from kerasmyelin.synth import milestones as ms
from kerasmyelin.synth.anatomy import milestone_fields
from kerasmyelin.synth.maturation import solve_rates, wm_gm_signal_ratio
from kerasmyelin.synth.sequences import PHILIPS_ACHIEVA_3T, SIEMENS_AVANTO_15T


@pytest.mark.parametrize("c1,c2", [(-1.0, 0.0), (2.5, 9.0), (5.0, 13.0), (9.0, 16.0)])
def test_crossings_happen_at_the_milestone_ages(c1, c2):
    k1, k2 = solve_rates(np.array([c1]), np.array([c2]))
    s = SIEMENS_AVANTO_15T
    t1w = lambda m: wm_gm_signal_ratio(s.t1w, 1.5, m, k1, k2)[0]  # noqa: E731
    t2w = lambda m: wm_gm_signal_ratio(s.t2w, 1.5, m, k1, k2)[0]  # noqa: E731
    assert t1w(c1) == pytest.approx(1.0, abs=1e-3) and t2w(c2) == pytest.approx(1.0, abs=1e-3)
    # Before the milestone white matter is darker on T1w / brighter on T2w than cortex; after, the reverse.
    assert t1w(c1 - 2) < 1 < t1w(c1 + 2)
    assert t2w(c2 - 2) > 1 > t2w(c2 + 2)


def test_t1_change_precedes_t2_change_everywhere():
    for m in ms.COMPACT_TRACTS + (ms.CENTRAL_FRONTAL, ms.PERIPHERAL_FRONTAL, ms.CENTRUM_SEMIOVALE):
        assert m.t1_mid <= m.t2_mid, m.name


def _field_at(x, y, z, depth):
    coords = tuple(np.array([v], dtype=np.float32) for v in (x, y, z))
    t1, t2 = milestone_fields(coords, np.array([depth], dtype=np.float32))
    return float(t1[0]), float(t2[0])


def test_gradients_caudal_rostral_posterior_anterior_central_peripheral():
    plic = _field_at(24, -20, 6, 35)
    centrum = _field_at(25, -10, 35, 28)
    occipital_central = _field_at(25, -80, 10, 28)
    frontal_central = _field_at(25, 35, 10, 28)
    frontal_peripheral = _field_at(40, 35, 25, 6)
    # caudal (internal capsule) before rostral (centrum semiovale)
    assert plic[1] < centrum[1] and plic[0] < centrum[0]
    # posterior before anterior
    assert occipital_central[1] < frontal_central[1]
    # central before peripheral
    assert frontal_central[0] < frontal_peripheral[0] and frontal_central[1] < frontal_peripheral[1]


def test_lobar_white_matter_is_split_between_central_and_peripheral():
    """The depth rule must classify real template voxels both ways, not nearly all one way."""
    from kerasmyelin.synth.anatomy import build_anatomy

    anat = build_anatomy(1.5)
    depth = anat.depth_mm[anat.fractions["wm"] > 0.5]
    assert 0.2 < np.mean(depth > ms.CENTRAL_DEPTH_MM) < 0.5
    assert 0.1 < np.mean(depth < ms.PERIPHERAL_DEPTH_MM) < 0.4


def test_terminal_zone_stays_t2_bright_at_two_years():
    t1m, t2m = _field_at(30, -38, 14, 25)
    assert t2m > 20
    k1, k2 = solve_rates(np.array([t1m]), np.array([t2m]))
    ratio = wm_gm_signal_ratio(PHILIPS_ACHIEVA_3T.t2w, 3.0, 24.0, k1, k2)[0]
    assert ratio > 1.0
