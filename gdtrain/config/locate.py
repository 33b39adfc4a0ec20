"""Where a key of a config was written: the YAML line of its key, or `--set`.

Problems are 'dotted.key: message'; `locate` prefixes one with its key's line, so that
every message can point at what to edit.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .sections import TOP_LEVEL


def locate(problem: str, lines: dict[str, int | str] | None) -> str:
    """Prefix a 'dotted.key: message' problem with the YAML line of its key, or with
    '--set' when the value came from an override (the file's line would mislead)."""
    if not lines or problem.startswith("line "):
        return problem
    key = problem.split(":", 1)[0].strip()
    parts = key.split(".")
    while parts:
        line = lines.get(".".join(parts))
        if line == OVERRIDDEN:
            return f"--set {problem}"
        if line is not None:
            return f"line {line}: {problem}"
        parts.pop()
    return problem


OVERRIDDEN = "--set"


def mark_overrides(lines: dict[str, int], overrides: list[str]) -> dict[str, int | str]:
    """The line map after `--set`: an overridden key, and all below it, came from the
    command line, not from the file."""
    out: dict[str, int | str] = dict(lines)
    for item in overrides:
        key = item.partition("=")[0].strip()
        for known in [k for k in out if k == key or k.startswith(key + ".")]:
            del out[known]
        out[key] = OVERRIDDEN
        parts = key.split(".")
        for i in range(1, len(parts)):  # sections the override created
            out.setdefault(".".join(parts[:i]), OVERRIDDEN)
    return out


def locate_later(exc: ConfigError, path: str | Path, lines: dict) -> ConfigError:
    """A ConfigError raised after loading (batch larger than the data, a loss that does
    not fit the labels), pointed at the file and line of its key like a loading one."""
    if exc.source is not None or not all(p.split(".")[0].split(":")[0] in TOP_LEVEL for p in exc.problems):
        return exc
    return ConfigError([locate(p, lines) for p in exc.problems], str(path))
