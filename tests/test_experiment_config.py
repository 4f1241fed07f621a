"""The experiment files and the typed configuration they override."""

import pytest

from kerasmyelin.errors import ConfigError
from kerasmyelin.training.config import ExperimentConfig, MemberConfig, load_experiment
from tests.conftest import REPO


def test_paper_defaults_are_the_papers_protocol():
    config = load_experiment(REPO / "experiments" / "paper_simple.yaml")
    t = config.train
    assert (t.epochs, t.learning_rate, t.beta_1, t.beta_2, t.epsilon) == (1000, 1e-3, 0.9, 0.999, 1e-8)
    assert t.augment is False and t.select == "final" and t.early_stopping_patience == 0
    assert config.model.padding == "valid" and config.model.image_size == 128
    assert config.cv.folds == 4
    assert not config.is_ensemble
    assert [m.name for m in config.member_configs()] == ["simple"]


def test_paper_ensemble_has_the_two_age_ranges():
    config = load_experiment(REPO / "experiments" / "paper_ensemble.yaml")
    young, old = config.ensemble.members
    assert (young.min_age_months, young.max_age_months) == (None, 16.0)
    assert (old.min_age_months, old.max_age_months) == (8.0, None)
    assert config.ensemble.blend_months == (8.0, 16.0)
    # pre-term infants (negative corrected age) belong to the younger member, 8-16 to both
    assert young.contains([-1.7, 0, 16.0, 16.1]).tolist() == [True, True, True, False]
    assert old.contains([7.9, 8.0, 23.5]).tolist() == [False, True, True]


def test_smoke_file_and_overrides():
    config = load_experiment(REPO / "experiments" / "smoke.yaml", ["train.epochs=3", "ensemble.rule=average"])
    assert config.model.image_size == 32 and config.train.epochs == 3 and config.ensemble.rule == "average"


@pytest.mark.parametrize("text, match", [
    ("trian:\n  epochs: 3\n", "unknown key"),
    ("train:\n  epochs: many\n", "train.epochs"),
    ("train:\n  select: last\n", "select"),
    ("ensemble:\n  rule: median\n", "rule"),
    ("ensemble:\n  members:\n    - {name: a, max_age_months: 16}\n", "two members"),
    ("ensemble:\n  members:\n    - {name: a, min_age_months: 16, max_age_months: 8}\n"
     "    - {name: b}\n", "below"),
    ("train:\n  validation_fraction: 0\n  select: best\n", "validation"),
    ("train:\n  early_stopping_patience: -3\n", "patience"),
    ("ensemble:\n  members:\n    - {name: old, min_age_months: 8}\n    - {name: young, max_age_months: 16}\n",
     "younger member first"),
    ("ensemble:\n  members:\n    - {name: a, max_age_months: 16}\n    - {name: b, min_age_months: 8}\n"
     "  blend_months: [30, 40]\n", "overlap"),
    ("ensemble:\n  members:\n    - {name: gate, max_age_months: 16}\n    - {name: b, min_age_months: 8}\n",
     "identifier other than"),
])
def test_bad_experiment_files_name_the_file_and_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_member_name_must_be_an_identifier():
    with pytest.raises(ValueError):
        MemberConfig(name="0-16 months")
    assert ExperimentConfig().member_configs()[0].contains([-5, 30]).all()
