"""The work a cross-validated experiment asks for: samples trained and validated per network.

Used to project wall times (``benchmarks/bench_speed.py``) before committing hours of CPU.
Training repeats its data and runs ``ceil(n / batch)`` full batches per epoch, so an epoch costs
``steps * batch`` samples; validation is one forward pass over the validation infants per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasmyelin.data.pipeline import steps_per_epoch
from kerasmyelin.training.splits import make_folds


@dataclass(frozen=True)
class Workload:
    """Totals over every network of an experiment (or several)."""

    networks: int
    train_samples: int
    validation_samples: int

    def __add__(self, other: "Workload") -> "Workload":
        return Workload(self.networks + other.networks, self.train_samples + other.train_samples,
                        self.validation_samples + other.validation_samples)


def experiment_workload(config, participant_id, age_months) -> Workload:
    """Samples an ``ExperimentConfig``'s cross-validation trains on the given infants."""
    age_months = np.asarray(age_months, dtype=float)
    ids = np.asarray(participant_id)
    position = {pid: i for i, pid in enumerate(ids)}
    splits = make_folds(ids, age_months, config.cv.folds, config.cv.seed, config.train.validation_fraction)
    epochs, batch = config.train.epochs, config.train.batch_size
    networks = train = val = 0
    for split in splits:
        train_pos = [position[p] for p in split["train"]]
        val_pos = [position[p] for p in split["validation"]]
        for member in config.member_configs():  # the networks run_fold trains
            n_train = member.select(train_pos, age_months).size
            if n_train == 0:
                continue
            networks += 1
            train += steps_per_epoch(n_train, batch) * batch * epochs
            val += member.select(val_pos, age_months).size * epochs
    return Workload(networks, train, val)
