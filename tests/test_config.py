"""Strict YAML configuration: defaults -> file -> overrides; unknown keys and wrong types fail."""

from dataclasses import dataclass, field

import pytest

from kerasmyelin.config import load_config, to_dict
from kerasmyelin.errors import ConfigError
from kerasmyelin.models.myelin_cnn import ModelConfig


@dataclass(frozen=True)
class Train:
    epochs: int = 1000
    learning_rate: float = 1e-3
    patience: int | None = None


@dataclass(frozen=True)
class Experiment:
    name: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: Train = field(default_factory=Train)


def test_precedence_defaults_file_overrides(tmp_path):
    path = tmp_path / "smoke.yaml"
    path.write_text("name: smoke\nmodel:\n  image_size: 32\n  conv_filters: [4, 2]\ntrain:\n  epochs: 2\n")
    config = load_config(Experiment, path, ["train.epochs=3", "train.patience=5"])
    assert config.name == "smoke" and config.train.epochs == 3 and config.train.patience == 5
    assert config.model.image_size == 32 and config.model.conv_filters == (4, 2)
    assert config.model.padding == "valid" and config.train.learning_rate == 1e-3  # untouched defaults
    assert to_dict(config)["model"]["conv_filters"] == [4, 2]


def test_no_file_gives_the_defaults():
    assert load_config(Experiment) == Experiment()


@pytest.mark.parametrize("text,message", [
    ("modle:\n  padding: same\n", "unknown key.*modle"),
    ("model:\n  paddng: same\n", "unknown key.*paddng"),
    ("train:\n  epochs: ten\n", "train.epochs: expected a whole number"),
    ("train:\n  epochs: 2.5\n", "train.epochs: expected a whole number"),
    ("model:\n  conv_filters: [4]\n", "model.conv_filters: expected 2 values"),
    ("model:\n  padding: causal\n", "padding must be one of"),
    ("- a\n- b\n", "mapping"),
    ("model: [\n", "not valid YAML"),
])
def test_bad_files_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(Experiment, path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown key"), ("train.epochs", "key.sub=value"), ("train.learning_rate=fast", "number"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Experiment, None, [override])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Experiment, tmp_path / "nope.yaml")


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("2E-5", 2e-5), ("-1.5e3", -1500.0)])
def test_a_number_in_exponent_form_is_a_number(text, value):
    # YAML 1.1 reads "1e-4" (no dot) as text; a learning rate is written that way more often than not.
    assert load_config(Experiment, None, [f"train.learning_rate={text}"]).train.learning_rate == value
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(Experiment, None, ["train.learning_rate=1e-4x"])
    assert load_config(Experiment, None, [f"name={text}"]).name == text  # text where text is expected
