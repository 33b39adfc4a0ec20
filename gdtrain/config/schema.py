"""The JSON Schema (draft 2020-12) of a whole config, generated from the component tables.

`gdtrain components --json-schema` prints it and docs/gdtrain.schema.json is a copy (a
test keeps the two equal). An editor that reads `# yaml-language-server: $schema=...`
at the top of a config then completes and checks section names, component names,
options, types, ranges, choices and required options, and shows defaults and the
descriptions of the docstrings.

Nothing here is written per component: config.TOP_LEVEL, REQUIRED and SECTION_SHAPES say
which sections exist and how each is written, and a component's options are its
factory's signature (core/registry.py), read as `resolve` reads them. A newly registered
component or option is in the schema with no other change; a new section is one entry
in config.SECTION_SHAPES (and a new kind of component, one in components' tables).

The schema checks what the registries check one option at a time. It must never be
stricter than `resolve` (tests hold it to that on every config and fuzzed mutations of
them), and it leaves to `gdtrain check` what needs more than one value or what JSON
cannot spell: steps or epochs, patterns and init keys that must name a parameter of the
model, a factory's own checks (a schedule's boundaries and values), the run name's
characters, NaN, infinities and integers beyond 64 bits.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from typing import Any, get_args, get_origin

from ..core.registry import _MISSING, OneOf, Option, Range, Registry, _unwrap

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def value_schema(annotation: Any) -> dict:
    """The values `registry.coerce` accepts for an annotation, as a JSON Schema."""
    base, constraints = _unwrap(annotation)
    if base is Any or base is _MISSING:  # coerce checks nothing, not even constraints
        return {}
    origin = get_origin(base)
    nullable = False
    if origin in (types.UnionType, typing.Union):
        nullable = type(None) in get_args(base)
        schema = _any_of([value_schema(a) for a in get_args(base) if a is not type(None)])
    elif origin is list:
        (item,) = get_args(base) or (Any,)
        schema = {"type": "array"}
        if value_schema(item):
            schema["items"] = value_schema(item)
    elif origin is dict or base is dict:
        schema = {"type": "object"}
    else:  # a type coerce does not check (a bare `list`, a class) takes any value
        schema = {"type": _JSON_TYPES[base]} if base in _JSON_TYPES else {}
    for constraint in constraints:
        if isinstance(constraint, Range):
            schema.update({_BOUNDS[k]: getattr(constraint, k) for k in _BOUNDS
                           if getattr(constraint, k) is not None})
        elif isinstance(constraint, OneOf):
            schema["enum"] = list(constraint.choices)
    return or_null(schema) if nullable else schema


def _any_of(schemas: list[dict]) -> dict:
    if len(schemas) == 1:
        return schemas[0]
    if any(not s for s in schemas):  # one of them takes anything
        return {}
    if all(list(s) == ["type"] for s in schemas):
        return {"type": [t for s in schemas for t in _types(s)]}
    return {"anyOf": schemas}


def _types(schema: dict) -> list[str]:
    kind = schema["type"]
    return list(kind) if isinstance(kind, list) else [kind]


def or_null(schema: dict) -> dict:
    """`schema`, or null (an optional value or section left empty)."""
    if not schema:
        return schema
    out = dict(schema)
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    if "type" in out:
        out["type"] = [*_types(out), "null"]
    elif "enum" not in out:
        out = {"anyOf": [schema, {"type": "null"}]}
    return out


def option_schema(option: Option) -> dict:
    schema = {"description": option.doc} if option.doc else {}
    schema.update(value_schema(option.annotation))
    if not option.required:
        schema["default"] = option.default
    return schema


def _options_object(options: list[Option], head: dict, extra: dict) -> dict:
    """An object of exactly these options (plus `head`'s and `extra`'s keys)."""
    schema = {"properties": {**head, **{o.name: option_schema(o) for o in options}, **extra},
              "additionalProperties": False}
    required = [o.name for o in options if o.required]
    if required:
        schema["required"] = required
    return schema


def component_schema(registry: Registry, extra: Callable[[Registry, str], dict] | None = None) -> dict:
    """{name: ..., options}: `name` picks the component, an if/then per name gives its options.

    `extra(registry, name)` adds keys that a section takes besides the component's options
    (a model's init).
    """
    names = registry.names()
    branches = []
    for name in names:
        head = {"name": {"const": name, "description": registry.summary(name)}}
        then = _options_object(registry.options(name), head, extra(registry, name) if extra else {})
        branches.append({"if": {"properties": {"name": {"const": name}}, "required": ["name"]},
                         "then": then})
    return {
        "type": "object",
        "description": f"name: the {registry.kind} ({', '.join(names)}), with its options beside it",
        "properties": {"name": {"description": f"the {registry.kind}", "enum": names}},
        "required": ["name"],
        "allOf": branches,
    }


def _ref(kind: str) -> dict:
    return {"$ref": f"#/$defs/{kind}"}


def _model_keys(models: Registry, name: str) -> dict:
    """model.init in the forms config._check_init accepts. The keys of the per-parameter form
    are the parameters of the model with its default options: listed for completion, but
    not enforced, since other options may name other parameters (resolve checks them)."""
    from .components import INIT_FORMS, _model_extra, plain_value

    default_init = _model_extra(models, name)["default_init"]
    spec = _ref("initializer_spec")
    per_parameter = {
        "type": "object",
        "description": "an initializer per parameter; the others keep the model's default",
        "propertyNames": {"not": {"enum": ["name", "from"]}},
        "properties": {p: {**spec, "description": f"parameter {p} (default {plain_value(init)})"}
                       for p, init in default_init.items()},
        "additionalProperties": spec,
    }
    from_file = {
        "type": "object",
        "properties": {"from": {"type": "string", "description": "an .npz file of arrays named like "
                                "the parameters (gdtrain export writes one)"}},
        "required": ["from"],
        "additionalProperties": False,
    }
    default = ", ".join(f"{p} {plain_value(init)}" for p, init in default_init.items())
    return {"init": {"description": f"{INIT_FORMS}; default: {default}",
                     "anyOf": [spec, from_file, per_parameter, {"type": "null"}]}}


# Keys a kind's sections take besides the component's own options (resolve's `extra`).
EXTRA_KEYS: dict[str, Callable[[Registry, str], dict]] = {"model": _model_keys}


def _section_schema(sections: Registry, key: str) -> dict:
    """A plain section; an option that is itself a registered section (train.early_stopping)
    is described by that section's options rather than as any mapping."""
    schema = {"description": sections.summary(key), "type": "object",
              **_options_object(sections.options(key), {}, {})}
    for option in list(schema["properties"]):
        nested = f"{key}.{option}"
        if nested in sections:
            described = {k: v for k, v in schema["properties"][option].items() if k in ("description",)}
            schema["properties"][option] = {**or_null(_section_schema(sections, nested)), **described}
    return schema


def config_schema() -> dict:
    """The schema of a whole config file."""
    from .components import KINDS, _tables
    from .sections import REQUIRED, SECTION_SHAPES, SECTIONS, TOP_LEVEL

    tables = _tables()
    missing = [key for key in TOP_LEVEL if key not in SECTION_SHAPES]
    if missing:
        raise ValueError(f"config.SECTION_SHAPES lacks the section(s) {', '.join(missing)}")
    for key, shape in SECTION_SHAPES.items():
        kind = shape[0] if isinstance(shape, list) else shape
        if kind not in tables:
            raise ValueError(f"config.SECTION_SHAPES[{key!r}]: no table of kind {kind!r} in "
                             "components._tables; valid: " + ", ".join(tables))
    properties = {}
    for key in TOP_LEVEL:
        shape = SECTION_SHAPES[key]
        if shape == "section":
            schema = _section_schema(SECTIONS, key)
        elif isinstance(shape, list):
            (kind,) = shape
            schema = {"type": "array", "items": _ref(kind)}
        else:
            schema = _ref(shape)
        properties[key] = schema if key in REQUIRED else or_null(schema)
    defs: dict[str, dict] = {}
    for kind in KINDS:
        if kind != "section":
            defs[kind] = component_schema(tables[kind], EXTRA_KEYS.get(kind))
    defs["initializer_spec"] = {
        "description": "an initializer: its name, or {name: ..., options}",
        "anyOf": [{"type": "string", "enum": tables["initializer"].names()}, _ref("initializer")],
    }
    return {
        "$schema": DRAFT,
        "title": "gdtrain config",
        "description": "A gdtrain training config (generated by `gdtrain components --json-schema`; "
                       "`gdtrain check CONFIG` checks the rest: e.g. steps or epochs, parameter names)",
        "type": "object",
        "properties": properties,
        "required": list(REQUIRED),
        "additionalProperties": False,
        "$defs": defs,
    }


def render_schema() -> str:
    """docs/gdtrain.schema.json: the schema as JSON text (ASCII, so any terminal prints it)."""
    return json.dumps(config_schema(), indent=2) + "\n"
