"""A config file to a resolved config: read, override, validate, make paths absolute."""

from __future__ import annotations

from pathlib import Path

from .locate import mark_overrides
from .overrides import apply_overrides
from .paths import absolute_paths
from .validate import resolve
from .yaml_file import load_file


def load(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read, override, validate and resolve a config file; its relative paths made absolute
    (`absolute_paths`)."""
    return load_located(path, overrides)[0]


def load_located(path: str | Path, overrides: list[str] | None = None) -> tuple[dict, dict, dict]:
    """`load`, plus the map from dotted keys to their YAML lines (or '--set'), so that a
    problem found later (one that needs the data, say) can still point at its line, and
    the notes of `absolute_paths`, so that a missing file can be explained."""
    in_file, lines = load_file(path)
    raw = in_file
    if overrides:
        raw = apply_overrides(raw, overrides)
        lines = mark_overrides(lines, overrides)
    config, notes = absolute_paths(resolve(raw, str(path), lines), path, in_file, raw, overrides or [])
    return config, lines, notes
