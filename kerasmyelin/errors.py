"""The project's own error types: every failure a user can cause names the file and the problem."""

from __future__ import annotations

import os


class KerasMyelinError(Exception):
    """Base class of every error kerasmyelin raises on purpose."""


class InputError(KerasMyelinError, ValueError):
    """Bad input: the message names the offending file (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")


class ConfigError(KerasMyelinError, ValueError):
    """A configuration value or key that kerasmyelin does not accept."""


class OutputError(KerasMyelinError, OSError):
    """An output location that cannot be written as asked."""


class TrainingError(KerasMyelinError):
    """Training cannot go on (no infants for a network, the loss became NaN, a damaged checkpoint)."""
