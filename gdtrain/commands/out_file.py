"""A file named on the command line (--out): written atomically, a failure worded for the flag."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..run.atomic import write_atomic


def write_output(path: Path, write: Callable) -> None:
    """`write_atomic` for a file named on the command line (--out): a failure is bad input
    naming it, and the folder is created."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, write)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write: {exc.strerror or exc}") from None
