"""Subject-level cross-validation folds, balanced in age, seeded and saved as ``splits.json``.

Every image of an infant stays in one fold (the ten slices are one sample here, but a future
multi-session data set must not leak an infant across folds either: folds are assigned by
participant id). Ages are balanced by sorting the infants by age and dealing each consecutive
block of k infants, in a seeded random order, to the k folds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kerasmyelin.errors import ConfigError, InputError
from kerasmyelin.io.atomic import write_text_atomic


def make_folds(participant_id, age_months, folds: int = 4, seed: int = 0,
               validation_fraction: float = 0.0) -> list[dict[str, list[str]]]:
    """Split infants into ``folds`` folds of near-equal size and age distribution.

    Args:
        participant_id: (N,) ids; duplicates (several sessions of one infant) stay together.
        age_months: (N,) ages, used only to balance the folds.
        folds: number of folds (>= 2).
        seed: random seed.
        validation_fraction: share of each fold's training infants set aside (age-balanced)
            to monitor training; 0 for none.

    Returns:
        One dict per fold: {"train": [ids], "validation": [ids], "test": [ids]}, ids sorted.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"folds must be a whole number >= 2, got {folds!r}")
    order = _infants_by_age(participant_id, age_months)
    unique = sorted(order)
    if len(unique) < folds:
        raise InputError(f"{len(unique)} infants cannot fill {folds} folds")
    # Deal each block of `folds` consecutive infants (by age) to the folds in a seeded order.
    rng = np.random.default_rng(seed)
    fold_of = {}
    for start in range(0, len(order), folds):
        block = order[start:start + folds]
        for u, f in zip(block, rng.permutation(folds)[:len(block)]):
            fold_of[u] = int(f)
    out = []
    for f in range(folds):
        test = sorted(u for u in unique if fold_of[u] == f)
        train = [u for u in order if fold_of[u] != f]
        validation = _spread_pick(train, validation_fraction, rng)
        out.append({"train": sorted(set(train) - set(validation)), "validation": sorted(validation),
                    "test": test})
    return out


def holdout(participant_id, age_months, validation_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """All infants for training but an age-balanced validation share (for a final model)."""
    order = _infants_by_age(participant_id, age_months)
    validation = _spread_pick(order, validation_fraction, np.random.default_rng(seed))
    return {"train": sorted(set(order) - set(validation)), "validation": sorted(validation), "test": []}


def _infants_by_age(participant_id, age_months) -> list[str]:
    """Unique infant ids sorted by age (the mean over an infant's sessions), ties by id."""
    ids = np.asarray(participant_id, dtype=str)
    ages = np.asarray(age_months, dtype=np.float64)
    if ids.shape != ages.shape or ids.ndim != 1:
        raise InputError(f"participant_id and age_months must be equal-length lists, got {ids.shape} and {ages.shape}")
    mean_age = {u: float(ages[ids == u].mean()) for u in set(ids.tolist())}
    return sorted(mean_age, key=lambda u: (mean_age[u], u))


def _spread_pick(ordered: list[str], fraction: float, rng) -> list[str]:
    """About ``fraction`` of ``ordered`` (sorted by age), evenly spread over it from a random start."""
    if fraction <= 0 or len(ordered) < 2:
        return []
    count = max(1, int(round(fraction * len(ordered))))
    step = len(ordered) / count
    start = rng.uniform(0, step)
    return [ordered[min(len(ordered) - 1, int(start + i * step))] for i in range(count)]


def save_splits(path: str | os.PathLike, splits: list[dict[str, list[str]]], seed: int) -> Path:
    """Write splits (atomically) as ``{"seed": ..., "folds": [...]}``."""
    payload = {"seed": seed, "folds": splits}
    return write_text_atomic(Path(path), json.dumps(payload, indent=1) + "\n")


def load_splits(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read splits, checking that no infant is in two test folds or in train and test of one fold."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text())["folds"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a splits file ({exc})", path) from None
    seen = set()
    for i, fold in enumerate(folds):
        try:
            test, train, validation = set(fold["test"]), set(fold["train"]), set(fold.get("validation", []))
        except (KeyError, TypeError, AttributeError):
            raise InputError(f"fold {i} lacks train or test lists", path) from None
        for a, b, what in ((test, train, "train and test"), (test, validation, "validation and test"),
                           (train, validation, "train and validation")):
            if a & b:
                raise InputError(f"fold {i}: {sorted(a & b)[:3]} in both {what}", path)
        if test & seen:
            raise InputError(f"fold {i}: {sorted(test & seen)[:3]} already tested in another fold", path)
        seen |= test
    return folds
