import csv

import numpy as np

from kerasmyelin.synth.growth import LARGEST_INFANT_BRAIN_ML, LOG_SD, brain_volume_ml
from tests.conftest import VOLUMES_CSV, require_shared


def _real_volumes():
    ages, vols = [], []
    with open(require_shared(VOLUMES_CSV), newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                age, vol = float(row["age_days"]), float(row["brain_mask_ml"])
            except ValueError:  # neonatal rows without an age
                continue
            if vol > 0:  # one empty mask is bad input, not an infant
                ages.append(age / 30.4375)
                vols.append(vol)
    return np.array(ages), np.array(vols)


def test_curve_matches_real_median_volumes_by_age_band():
    ages, vols = _real_volumes()
    for lo, hi in [(0, 2), (4, 7), (10, 14), (20, 27)]:
        band = (ages >= lo) & (ages < hi)
        predicted = brain_volume_ml(np.median(ages[band]))
        assert abs(predicted / np.median(vols[band]) - 1) < 0.05, (lo, hi)


def test_spread_matches_real_residuals():
    ages, vols = _real_volumes()
    residual_sd = np.std(np.log(vols / brain_volume_ml(ages)))
    assert abs(residual_sd - LOG_SD) < 0.01


def test_curve_grows_and_stays_positive_below_term():
    m = np.linspace(-2, 24, 50)
    v = brain_volume_ml(m)
    assert np.all(np.diff(v) > 0) and v[0] > 200


def test_largest_infant_brain_is_the_files():
    """The size flag of the whole-brain pipeline starts from this number (wholebrain.plausibility)."""
    assert LARGEST_INFANT_BRAIN_ML == max(_real_volumes()[1])
