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


def make_folds(participant_id, age_months, folds: int = 4, seed: int = 0) -> list[dict[str, list[str]]]:
    """Split infants into ``folds`` folds of near-equal size and age distribution.

    Args:
        participant_id: (N,) ids; duplicates (several sessions of one infant) stay together.
        age_months: (N,) ages, used only to balance the folds.
        folds: number of folds (>= 2).
        seed: random seed.

    Returns:
        One dict per fold: {"train": [ids], "test": [ids]}, ids sorted.
    """
    ids = np.asarray(participant_id, dtype=str)
    ages = np.asarray(age_months, dtype=np.float64)
    if ids.shape != ages.shape or ids.ndim != 1:
        raise InputError(f"participant_id and age_months must be equal-length lists, got {ids.shape} and {ages.shape}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"folds must be a whole number >= 2, got {folds!r}")
    unique = sorted(set(ids.tolist()))
    if len(unique) < folds:
        raise InputError(f"{len(unique)} infants cannot fill {folds} folds")
    # One age per infant (the mean over its sessions), then deal blocks of `folds` by age.
    mean_age = {u: float(ages[ids == u].mean()) for u in unique}
    order = sorted(unique, key=lambda u: (mean_age[u], u))
    rng = np.random.default_rng(seed)
    fold_of = {}
    for start in range(0, len(order), folds):
        block = order[start:start + folds]
        for u, f in zip(block, rng.permutation(folds)[:len(block)]):
            fold_of[u] = int(f)
    out = []
    for f in range(folds):
        test = sorted(u for u in unique if fold_of[u] == f)
        train = sorted(u for u in unique if fold_of[u] != f)
        out.append({"train": train, "test": test})
    return out


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
        test, train = set(fold["test"]), set(fold["train"])
        if test & train:
            raise InputError(f"fold {i}: {sorted(test & train)[:3]} in both train and test", path)
        if test & seen:
            raise InputError(f"fold {i}: {sorted(test & seen)[:3]} already tested in another fold", path)
        seen |= test
    return folds
