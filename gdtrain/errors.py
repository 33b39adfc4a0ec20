"""Exceptions that the CLI turns into one-line messages and exit codes.

Every user-facing failure is one of these; anything else reaching the CLI is a bug.
Exit codes: 1 a check failed, 2 bad input, 3 training diverged, 130/143 interrupted.
"""

from __future__ import annotations


class GdtrainError(Exception):
    """Base class: a message for the user and the process exit code."""

    exit_code = 2


class ConfigError(GdtrainError):
    """A config (file, --set override or section) is invalid.

    Holds every problem found, so that the user fixes them all in one go.
    """

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = prefix + self.problems[0]
        else:
            message = prefix + f"{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(message)


class DataError(GdtrainError):
    """A data file is missing, malformed or does not fit the model."""


class CheckpointError(GdtrainError):
    """A checkpoint is missing, damaged, forged or from an incompatible run."""


class RunDirError(GdtrainError):
    """The run directory cannot be used (locked, unwritable, full disk)."""


class RunDirBusy(RunDirError):
    """Another live process holds the run's lock: the run is going on elsewhere."""


class DivergedError(GdtrainError):
    """A loss, gradient or parameter became non-finite at `step` (the update to blame)."""

    exit_code = 3

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class CheckFailed(GdtrainError):
    """A self-check (`--smoke`, `verify`, `gradcheck`) found a problem."""

    exit_code = 1


class Interrupted(GdtrainError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved before stopping."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class MissingExtra(GdtrainError):
    """A feature needs an optional dependency (an extra such as gdtrain[plot]) that is absent."""
