import math

import numpy as np
import pytest

from kerasmyelin.evaluation.metrics import age_metrics


def test_values_on_a_hand_computed_example():
    true = [0.0, 6.0, 12.0, 18.0, 24.0]
    pred = [1.0, 5.0, 14.0, 18.0, 21.0]  # errors +1, -1, +2, 0, -3
    m = age_metrics(true, pred)
    assert m["mae"] == pytest.approx(7 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt(15 / 5))
    assert m["bias"] == pytest.approx(-1 / 5)
    sd = np.std([1, -1, 2, 0, -3], ddof=1)
    assert m["loa_high"] - m["loa_low"] == pytest.approx(2 * 1.96 * sd)
    assert m["spearman_r"] == pytest.approx(1.0)  # the ranks agree perfectly
    assert m["pearson_r"] < 1.0


def test_spearman_p_small_for_strong_agreement_and_bins_cover_every_infant():
    rng = np.random.default_rng(0)
    true = rng.uniform(-1.7, 23.5, 119)
    pred = true + rng.normal(0, 2, 119)
    m = age_metrics(true, pred)
    assert m["spearman_p"] < 1e-10 and m["spearman_r"] > 0.9
    assert sum(b["n"] for b in m["bins"]) == 119


@pytest.mark.parametrize("true,pred", [([1, 2], [1, 2]), ([1, 2, 3], [1, 2]), ([1, 2, np.nan], [1, 2, 3])])
def test_bad_input(true, pred):
    with pytest.raises(ValueError):
        age_metrics(true, pred)
