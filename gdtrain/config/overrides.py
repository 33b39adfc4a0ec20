"""`--set a.b=value`: overriding any key of a config, the value read as YAML."""

from __future__ import annotations

import copy

from ..core.registry import show
from ..errors import ConfigError
from .yaml_file import parse_yaml


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b.c=value` overrides (values parsed as YAML) to a copy."""
    config = copy.deepcopy(config)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            problems.append(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. optimizer.learning_rate=0.1")
            continue
        try:
            value, _ = parse_yaml(text, "--set")
        except ConfigError as exc:
            problems.append(f"--set {key}: {exc.problems[0]}")
            continue
        node = config
        for i, part in enumerate(parts):
            if isinstance(node, list):  # a list section (penalties): the part is an index
                if not (part.isdigit() and int(part) < len(node)):
                    where = ".".join(parts[:i])
                    problems.append(f"--set {key}: {where} is a list of {len(node)}; expected an index "
                                    f"from 0 to {len(node) - 1}, got {part!r}" if node else
                                    f"--set {key}: {where} is an empty list")
                    break
                part = int(part)
            elif i < len(parts) - 1 and node.get(part) is None:
                node[part] = {}
            if i == len(parts) - 1:
                node[part] = value
                break
            child = node[part]
            if not isinstance(child, dict) and not (isinstance(child, list) and parts[i + 1].isdigit()):
                where = ".".join(parts[: i + 1])
                problems.append(f"--set {key}: {where} is {show(child)}, not a mapping")
                break
            node = child
    if problems:
        raise ConfigError(problems)
    return config
