import json

import numpy as np
import pytest

from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.training.splits import load_splits, make_folds, save_splits


def _cohort(n=119, seed=0):
    rng = np.random.default_rng(seed)
    return [f"sub-{i:03d}" for i in range(n)], rng.uniform(-1.7, 23.5, n)


def test_every_infant_tested_exactly_once_and_never_trained_on_in_its_fold():
    ids, ages = _cohort()
    folds = make_folds(ids, ages, folds=4, seed=1)
    tested = [u for f in folds for u in f["test"]]
    assert sorted(tested) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["test"])
        assert len(f["train"]) + len(f["test"]) == len(ids)
        assert 29 <= len(f["test"]) <= 30


def test_folds_are_balanced_in_age_and_seeded():
    ids, ages = _cohort()
    age_of = dict(zip(ids, ages))
    folds = make_folds(ids, ages, 4, seed=1)
    means = [np.mean([age_of[u] for u in f["test"]]) for f in folds]
    assert max(means) - min(means) < 1.5  # a random split of 30 would often differ by ~3 months
    assert make_folds(ids, ages, 4, seed=1) == folds
    assert make_folds(ids, ages, 4, seed=2) != folds


def test_sessions_of_one_infant_stay_together():
    ids = ["a", "a", "b", "c", "c", "d", "e", "f"]
    ages = [1, 2, 3, 4, 5, 6, 7, 8]
    for fold in make_folds(ids, ages, 2, seed=0):
        for infant in ("a", "c"):
            assert (infant in fold["test"]) != (infant in fold["train"])


def test_round_trip_and_leak_detection(tmp_path):
    ids, ages = _cohort(20)
    folds = make_folds(ids, ages, 4)
    path = save_splits(tmp_path / "splits.json", folds, seed=0)
    assert load_splits(path) == folds
    leaky = json.loads(path.read_text())
    moved = leaky["folds"][0]["test"][0]
    leaky["folds"][1]["test"].append(moved)
    leaky["folds"][1]["train"].remove(moved)
    path.write_text(json.dumps(leaky))
    with pytest.raises(InputError, match="already tested"):
        load_splits(path)


@pytest.mark.parametrize("folds,error", [(1, ConfigError), (True, ConfigError), (50, InputError)])
def test_bad_fold_counts(folds, error):
    ids, ages = _cohort(20)
    with pytest.raises(error):
        make_folds(ids, ages, folds)


def test_validation_share_is_carved_from_training_only_and_spread_over_ages():
    ids = [f"sub-{i:03d}" for i in range(40)]
    ages = np.linspace(-1.5, 23.5, 40)
    for fold in make_folds(ids, ages, 4, seed=3, validation_fraction=0.2):
        train, val, test = set(fold["train"]), set(fold["validation"]), set(fold["test"])
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(ids)
        assert len(val) == 6  # 20% of 30
        val_ages = sorted(ages[ids.index(p)] for p in val)
        assert val_ages[0] < 6 and val_ages[-1] > 16  # not all from one end of the age range


def test_splits_with_an_infant_in_train_and_validation_are_refused(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text('{"seed": 0, "folds": [{"train": ["a", "b"], "validation": ["b"], "test": ["c"]}]}')
    with pytest.raises(InputError, match="train and validation"):
        load_splits(path)
