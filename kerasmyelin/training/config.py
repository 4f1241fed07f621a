"""Typed experiment configuration: one base (the paper's protocol), small YAML overrides.

``experiments/*.yaml`` hold only what differs from these defaults (``config.load_config``
rejects unknown keys and wrong types). Every run writes its resolved configuration next to
its outputs (``config.yaml`` in the run folder).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from kerasmyelin.config import load_config
from kerasmyelin.models.ensemble import RULES
from kerasmyelin.models.myelin_cnn import ModelConfig

SELECTIONS = ("final", "best")
# Names that would collide with the predictions file's columns.
RESERVED_MEMBER_NAMES = ("predicted", "age", "participant_id", *RULES)


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained (defaults: Wada et al. 2019, section 2.4).

    Attributes:
        epochs: passes over the training infants (paper: 1000).
        batch_size: infants per update (not stated in the paper).
        learning_rate, beta_1, beta_2, epsilon: Adam (paper: 1e-3, 0.9, 0.999, 1e-8).
        validation_fraction: share of each training set held out (by infant, age-balanced) to
            monitor training, choose the best checkpoint and drive early stopping; 0 disables it.
        select: which weights are evaluated and exported, "final" (the paper trains 1000 epochs
            and keeps the result) or "best" (lowest validation loss).
        early_stopping_patience: stop after this many epochs without a better validation loss;
            0 (the paper) never stops early.
        augment: training-only flips and per-contrast gains (off in the paper).
        intensity_curves: training-only random smooth monotone intensity curves, one per contrast
            per infant (``data.pipeline.intensity_curve``): the order of tissue intensities is
            kept, their scale is not, as between scanners. Off in the paper; on for models meant
            for real scans (docs/realism.md).
        backup_every_epochs: how often the resumable state (weights + optimizer, ~80 MB) is saved;
            the best checkpoint is written at the same moments.
        curve_every_epochs: how often the learning-curve plot and TensorBoard's prediction
            scatter are redrawn.
        histogram_every_epochs: how often TensorBoard gets weight histograms (the first epoch,
            then every this many, and the last; ~0.2 s each for the paper network on 2 cores); 0: none.
        seed: weights initialisation, shuffling and augmentation.
        init_from: fine-tuning: a trained run folder, fold folder or ``.keras`` file whose
            networks' weights every network of this run starts from (``training.init_from``;
            ``kerasmyelin train --init-from``); "" (the paper): random initialisation.
        freeze_branches: with ``init_from``: keep the ten slice branches as trained and train only
            the layers that combine them (for cohorts of a few dozen infants). Checked when a run
            starts (``training.init_from.check_freeze``), not here, so that a YAML file or ``--set``
            may name it before ``--init-from`` is applied.
    """

    epochs: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    validation_fraction: float = 0.15
    select: str = "final"
    early_stopping_patience: int = 0
    augment: bool = False
    intensity_curves: bool = False
    backup_every_epochs: int = 25
    curve_every_epochs: int = 10
    histogram_every_epochs: int = 25
    seed: int = 0
    init_from: str = ""
    freeze_branches: bool = False

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in [0, 0.5), got {self.validation_fraction}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        if self.select == "best" and self.validation_fraction == 0:
            raise ValueError("select: best needs a validation set (validation_fraction > 0)")
        if self.early_stopping_patience and self.validation_fraction == 0:
            raise ValueError("early stopping needs a validation set (validation_fraction > 0)")
        if not (self.learning_rate > 0 and 0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and self.epsilon > 0):
            raise ValueError("Adam needs learning_rate > 0, 0 <= beta_1, beta_2 < 1 and epsilon > 0")
        if self.early_stopping_patience < 0:
            raise ValueError(f"early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if self.backup_every_epochs < 1 or self.curve_every_epochs < 1:
            raise ValueError("backup_every_epochs and curve_every_epochs must be >= 1")
        if self.histogram_every_epochs < 0:
            raise ValueError(f"histogram_every_epochs must be >= 0 (0: none), got {self.histogram_every_epochs}")


@dataclass(frozen=True)
class MemberConfig:
    """One ensemble member: a network trained only on infants in its age range.

    Attributes:
        name: the member's name (a folder and a layer name).
        min_age_months, max_age_months: the training range; None leaves that end open
            (the paper's "birth to 16 months" keeps the pre-term infants, whose corrected age is
            negative).
    """

    name: str = "member"
    min_age_months: float | None = None
    max_age_months: float | None = None

    def __post_init__(self):
        if not self.name.isidentifier() or self.name in RESERVED_MEMBER_NAMES:
            raise ValueError(f"member name must be a plain identifier other than {RESERVED_MEMBER_NAMES}, "
                             f"got {self.name!r}")
        lo = -math.inf if self.min_age_months is None else self.min_age_months
        hi = math.inf if self.max_age_months is None else self.max_age_months
        if not lo < hi:
            raise ValueError(f"member {self.name}: min_age_months must be below max_age_months")

    def contains(self, age_months):
        """Boolean mask of ages inside [min, max] (open ends where None)."""
        import numpy as np

        a = np.asarray(age_months, dtype=np.float64)
        lo = -np.inf if self.min_age_months is None else self.min_age_months
        hi = np.inf if self.max_age_months is None else self.max_age_months
        return (a >= lo) & (a <= hi)

    def select(self, positions, age_months):
        """The ``positions`` (into ``age_months``) of the infants this network trains on."""
        import numpy as np

        positions = np.asarray(positions, dtype=np.int64)
        return positions[self.contains(np.asarray(age_months)[positions])]


@dataclass(frozen=True)
class EnsembleConfig:
    """The paper's ensemble; no members means the simple model.

    Attributes:
        members: younger member first (paper: 0-16 and 8-24 months).
        rule: "average" (mean of the members) or "gate" (first-pass estimate = the members'
            mean, then a smooth blend from the younger to the older member across ``blend``).
        blend_months: the overlap over which the gate hands over (paper's ranges: 8-16).
    """

    members: tuple[MemberConfig, ...] = ()
    rule: str = "gate"
    blend_months: tuple[float, float] = (8.0, 16.0)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.members and len(self.members) != 2:
            raise ValueError(f"an ensemble has two members (younger, older), got {len(self.members)}")
        if len({m.name for m in self.members}) != len(self.members):
            raise ValueError("member names must differ")
        lo, hi = self.blend_months
        if not lo < hi:
            raise ValueError(f"blend_months must rise, got {self.blend_months}")
        if self.members:
            young, old = self.members
            y_lo = -math.inf if young.min_age_months is None else young.min_age_months
            o_lo = -math.inf if old.min_age_months is None else old.min_age_months
            y_hi = math.inf if young.max_age_months is None else young.max_age_months
            if o_lo < y_lo:
                raise ValueError("list the younger member first (its min_age_months is the lower one)")
            if not (o_lo <= lo and hi <= y_hi):
                raise ValueError(f"blend_months {self.blend_months} must lie inside the members' overlap "
                                 f"({o_lo}, {y_hi})")


@dataclass(frozen=True)
class CVConfig:
    """Subject-level cross-validation (Wada et al. 2023 used 4 folds)."""

    folds: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run needs besides the data."""

    name: str = "paper_simple"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    cv: CVConfig = field(default_factory=CVConfig)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.ensemble.members)

    def member_configs(self) -> tuple[MemberConfig, ...]:
        """The networks to train: the members, or one all-ages "simple" model."""
        return self.ensemble.members or (MemberConfig(name="simple"),)


def load_experiment(path: str | os.PathLike | None = None, overrides=()) -> ExperimentConfig:
    """Paper defaults, then the YAML file at ``path``, then ``key.sub=value`` overrides."""
    return load_config(ExperimentConfig, path, list(overrides))
