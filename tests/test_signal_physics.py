"""Signal equations against hand-computed values, and the contrast facts they must reproduce."""

import math

import numpy as np
import pytest

from kerasmyelin.synth.relaxation import check_field_strength, tissue_parameters
from kerasmyelin.synth.sequences import PHILIPS_ACHIEVA_3T, PROTOCOLS, SIEMENS_AVANTO_15T, Sequence, scanner_for


@pytest.mark.parametrize("seq,t1,t2,pd,expected", [
    # turbo spin echo: PD (1 - e^-TR/T1) e^-TE/T2
    (Sequence("turbo_spin_echo", "tse", tr=4000, te=80), 1000.0, 100.0, 1.0,
     (1 - math.exp(-4.0)) * math.exp(-0.8)),
    # inversion recovery: PD |1 - 2 e^-TI/T1 + e^-TR/T1| e^-TE/T2
    (Sequence("inversion_recovery", "ir", tr=2155, te=10, ti=1000), 800.0, 80.0, 0.7,
     0.7 * abs(1 - 2 * math.exp(-1000 / 800) + math.exp(-2155 / 800)) * math.exp(-10 / 80)),
    # spin echo with 90 degree excitation: PD (1 - 2 e^-(TR-TE/2)/T1 + e^-TR/T1) e^-TE/T2
    (Sequence("spin_echo", "se", tr=530, te=11, flip_angle=90), 900.0, 100.0, 0.8,
     0.8 * (1 - 2 * math.exp(-524.5 / 900) + math.exp(-530 / 900)) * math.exp(-0.11)),
    # MPRAGE: PD sin(a) |1 - 2 e^-TI/T1 + e^-TR/T1| e^-TE/T2
    (Sequence("mprage", "mprage", tr=2400, te=2.2, ti=1600, flip_angle=8), 1300.0, 90.0, 0.8,
     0.8 * math.sin(math.radians(8)) * abs(1 - 2 * math.exp(-1600 / 1300) + math.exp(-2400 / 1300))
     * math.exp(-2.2 / 90)),
    # spoiled gradient echo: PD sin(a) (1 - E1) / (1 - cos(a) E1) e^-TE/T2
    (Sequence("spoiled_gradient_echo", "spgr", tr=20, te=4, flip_angle=25), 1000.0, 60.0, 0.9,
     0.9 * math.sin(math.radians(25)) * (1 - math.exp(-0.02)) / (1 - math.cos(math.radians(25)) * math.exp(-0.02))
     * math.exp(-4 / 60)),
])
def test_signal_equations(seq, t1, t2, pd, expected):
    assert float(seq.signal(np.float32(t1), np.float32(t2), np.float32(pd))) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("scanner", [SIEMENS_AVANTO_15T, PHILIPS_ACHIEVA_3T, *PROTOCOLS["research3d"].values()])
def test_neonatal_and_mature_contrast(scanner):
    fs = scanner.field_strength
    unmyelinated = tissue_parameters("wm", fs, np.float32(-20), np.float32(-20))
    mature = tissue_parameters("wm", fs, np.float32(60), np.float32(60))
    cortex_newborn = tissue_parameters("gm", fs, np.float32(0), np.float32(0))
    cortex_adult = tissue_parameters("gm", fs, np.float32(60), np.float32(60))
    # Newborn: white matter darker than cortex on T1w, brighter on T2w; mature: the reverse.
    assert scanner.t1w.signal(*unmyelinated) < scanner.t1w.signal(*cortex_newborn)
    assert scanner.t2w.signal(*unmyelinated) > scanner.t2w.signal(*cortex_newborn)
    assert scanner.t1w.signal(*mature) > scanner.t1w.signal(*cortex_adult)
    assert scanner.t2w.signal(*mature) < scanner.t2w.signal(*cortex_adult)


def test_relaxation_falls_monotonically_with_maturation():
    t = np.linspace(-5, 40, 30, dtype=np.float32)
    t1, t2, pd = tissue_parameters("wm", 3.0, t, t)
    assert np.all(np.diff(t1) < 0) and np.all(np.diff(t2) < 0) and np.all(np.diff(pd) < 0)
    assert t1[0] == pytest.approx(3300, rel=0.01) and t1[-1] == pytest.approx(830, rel=0.05)


def test_field_strengths_differ_in_t1():
    a = tissue_parameters("wm", 1.5, np.float32(0), np.float32(0))[0]
    b = tissue_parameters("wm", 3.0, np.float32(0), np.float32(0))[0]
    assert b > a


@pytest.mark.parametrize("bad", [7.0, 0, -1.5, 2.9])
def test_unknown_field_strength_is_refused(bad):
    with pytest.raises(ValueError, match="unknown field strength"):
        check_field_strength(bad)


def test_research_mprage_has_the_weaker_t1_contrast_of_3d_scans():
    # The templates' 3-D T1w white/grey ratio is 1.0-1.25 after 6 months; the paper's 3 T
    # inversion recovery is far more T1-weighted. Mature white matter against adult cortex:
    wm = tissue_parameters("wm", 3.0, np.float32(60), np.float32(60))
    gm = tissue_parameters("gm", 3.0, np.float32(60), np.float32(60))
    research, clinical = scanner_for("research3d", 3.0).t1w, scanner_for("clinical", 3.0).t1w
    r_research = float(research.signal(*wm) / research.signal(*gm))
    r_clinical = float(clinical.signal(*wm) / clinical.signal(*gm))
    assert 1.05 < r_research < 1.3 < r_clinical


def test_timing_factors_scale_and_keep_the_inversion_inside_the_repetition():
    base = scanner_for("clinical", 3.0)
    assert scanner_for("clinical", 3.0) is base  # no factors: the paper's own scanner
    jittered = scanner_for("clinical", 3.0, (1.1, 0.9, 1.0), (1.0, 1.2, 1.0))
    assert jittered.t1w.tr == pytest.approx(1.1 * base.t1w.tr, abs=0.1)
    assert jittered.t1w.te == pytest.approx(0.9 * base.t1w.te, abs=0.01)
    assert jittered.t2w.te == pytest.approx(1.2 * base.t2w.te, abs=0.01)
    squeezed = base.t1w.scaled(tr=0.5, ti=1.5)
    assert squeezed.ti < squeezed.tr
    with pytest.raises(ValueError, match="protocol"):
        scanner_for("research7t", 3.0)


@pytest.mark.parametrize("fs", [1.5, 3.0])
def test_sequence_variants_keep_the_contrast_directions(fs):
    # SPGR T1w and 2-D TSE T2w show myelination the same way round as MPRAGE and SPACE.
    scanner = scanner_for("research3d", fs, t1w_variant="spgr", t2w_variant="tse")
    assert scanner.t1w.kind == "spoiled_gradient_echo" and scanner.t2w.name == "turbo spin echo"
    test_neonatal_and_mature_contrast(scanner)


def test_unknown_or_misplaced_variants_are_refused():
    with pytest.raises(ValueError, match="unknown T1w sequence variant 'tse'"):
        scanner_for("research3d", 3.0, t1w_variant="tse")
    with pytest.raises(ValueError, match="unknown T2w sequence variant 'flair'"):
        scanner_for("research3d", 3.0, t2w_variant="flair")
    with pytest.raises(ValueError, match="research3d protocol"):
        scanner_for("clinical", 3.0, t1w_variant="spgr")


def test_geometry_changes_the_stack_and_the_noise_with_the_voxel():
    base = scanner_for("research3d", 3.0)
    thin = scanner_for("research3d", 3.0, slice_thickness_mm=1.25)
    assert thin.slice_thickness_mm == 1.25 and thin.slice_gap_mm == 0.0
    # A quarter of the thickness: twice the relative noise.
    assert thin.noise_fraction == pytest.approx(tuple(2 * n for n in base.noise_fraction), rel=1e-3)
    clinical = scanner_for("clinical", 3.0, slice_thickness_mm=4.0, pixel_mm=0.9)
    assert clinical.slice_gap_mm == pytest.approx(0.8)  # 2-D stacks keep a 20% gap
    fov = np.mean(clinical.fov_mm)
    assert fov / clinical.acquired_matrix == pytest.approx(0.9, rel=0.02)
    assert clinical.recon_matrix == min(512, 2 * clinical.acquired_matrix)  # Philips zero-fills 2x
    fine = scanner_for("research3d", 3.0, pixel_mm=0.5)
    assert fine.noise_fraction[1] == pytest.approx(base.noise_fraction[1] * fine.acquired_matrix / 256, rel=1e-3)
    finest = scanner_for("research3d", 3.0, slice_thickness_mm=1.0, pixel_mm=0.5)
    assert finest.noise_fraction[1] == pytest.approx(3 * base.noise_fraction[1])  # capped at 3x
    for bad in ({"slice_thickness_mm": 12.0}, {"pixel_mm": 0.1}):
        with pytest.raises(ValueError, match="outside"):
            scanner_for("research3d", 3.0, **bad)
