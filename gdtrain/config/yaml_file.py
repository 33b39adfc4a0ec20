"""Reading YAML strictly, and writing it.

A config (or a sweep file) is YAML read with a strict safe loader: no python tags, no
duplicate keys, YAML 1.2 numbers and booleans, every key's line recorded so that a
problem can point at it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `1e-4` is a number, `yes`/`on` are strings,
    `010` is ten (not YAML 1.1's octal eight; write `0o10`), `1:30` is a string (not
    YAML 1.1's base-60 ninety). Digit groups (`60_000`) are kept, as Python reads them."""


_DIGITS = r"[0-9]+(?:_[0-9]+)*"  # digit groups as Python writes them: 60_000, not 6__0 or 6_
_FLOAT = re.compile(
    rf"""^(?:[-+]?{_DIGITS}(?:\.(?:{_DIGITS})?)?(?:[eE][-+]?[0-9]+)?
    |[-+]?\.{_DIGITS}(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(rf"^(?:[-+]?{_DIGITS}|0o[0-7]+(?:_[0-7]+)*|0x[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*)$")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # a leading zero is decimal, as in YAML 1.2

# Dates stay strings (YAML 1.2 has no timestamps), and a config holds only plain
# values: the binary, set, omap, pairs and timestamp tags are refused like python ones.
_PLAIN_ONLY = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")}
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _PLAIN_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.yaml_constructors = {
    tag: construct for tag, construct in yaml.SafeLoader.yaml_constructors.items()
    if tag not in {f"tag:yaml.org,2002:{t}" for t in ("timestamp", "binary", "set", "omap", "pairs")}
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _walk_nodes(node: yaml.Node, path: str, lines: dict[str, int], problems: list[str],
                visited: set[int] | None = None, ancestors: tuple[int, ...] = ()):
    """Record the line of every key and reject duplicate keys, keys that are not plain
    values, and aliases that contain themselves.

    A node reached again through an alias is not walked again: nested aliases could
    otherwise make this walk exponential ("billion laughs").
    """
    visited = set() if visited is None else visited
    if id(node) in ancestors:
        problems.append(f"line {node.start_mark.line + 1}: {path}: an alias that contains itself")
        return
    if id(node) in visited:
        return
    visited.add(id(node))
    ancestors = ancestors + (id(node),)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(f"line {line}: {path or 'top level'}: a key must be a plain name, "
                                "not a list or mapping")
                continue
            key = key_node.value
            child = f"{path}.{key}" if path else str(key)
            if key in seen:
                problems.append(f"line {line}: duplicate key '{child}' (first at line {seen[key]})")
            seen[key] = line
            lines.setdefault(child, line)
            _walk_nodes(value_node, child, lines, problems, visited, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_nodes(item, f"{path}.{i}", lines, problems, visited, ancestors)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """(data, {dotted key: line}) from YAML text; ConfigError on any YAML problem."""
    try:
        loader = _StrictLoader(text)
        try:  # composed once: walked for lines and problems, then constructed
            node = loader.get_single_node()
            lines: dict[str, int] = {}
            problems: list[str] = []
            if node is not None:
                _walk_nodes(node, "", lines, problems)
            if problems:
                raise ConfigError(problems, source)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f" ({context})" if context else ""
        raise ConfigError(f"{where}invalid YAML: {what}{detail}", source) from None
    except (ValueError, OverflowError) as exc:  # a scalar its constructor cannot convert
        raise ConfigError(f"invalid YAML value: {str(exc).split(';')[0]}", source) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", source) from None
    return data, lines


def read_yaml_mapping(path: str | Path, what: str, empty: str, top: str) -> tuple[dict, dict[str, int], str]:
    """(mapping, line map, text) of a YAML file whose top level must be a mapping: a config,
    or a sweep file. `what` names the kind of file; `empty` is the message for an empty one,
    `top` says what its top-level mapping holds."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} not found", str(p))
    if p.is_dir():
        raise ConfigError(f"is a directory, expected a YAML {what}", str(p))
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}: 0x{raw[exc.start]:02x})", str(p)) from None
    data, lines = parse_yaml(text, str(p))
    if data is None:
        raise ConfigError(empty, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping {top}, got a {type(data).__name__}", str(p))
    return data, lines, text


def load_file(path: str | Path) -> tuple[dict, dict[str, int]]:
    """Read a config file: (mapping, line map)."""
    data, lines, _ = read_yaml_mapping(
        path, "config file", "empty config; expected a mapping with sections such as model, data, train",
        "of sections")
    return data, lines


def dump_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
