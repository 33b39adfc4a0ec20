"""The JSON Schema of a config (gdtrain/config/schema.py, docs/gdtrain.schema.json).

It is generated from the registries, so it must agree with `resolve`: on a table of cases
built from every registered component and option (its defaults, values at and beyond each
bound, every choice, wrong types, unknown options and names, missing required options)
plus the config forms `resolve` knows (model.init, empty sections, ...), the schema
accepts exactly what gdtrain accepts. It may be looser only where it says so (LOOSER),
and it is never stricter: not on the configs of configs/ and of the test suite, not on
what `resolve` returns, not on any fuzzed mutation that gdtrain accepts.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from hypothesis import given
from jsonschema import Draft202012Validator
from resume_helpers import RESUME_RAW
from test_config_fuzz import FUZZ, VALID, mutated
from tool_runs import SMALL, merged

from gdtrain.config import sections as config_module
from gdtrain.config.components import _tables
from gdtrain.config.loading import load
from gdtrain.config.schema import DRAFT, config_schema, render_schema
from gdtrain.config.sections import REQUIRED, SECTION_SHAPES, TOP_LEVEL
from gdtrain.config.validate import resolve
from gdtrain.config.yaml_file import load_file, parse_yaml
from gdtrain.core.optimizers import OPTIMIZERS, Optimizer
from gdtrain.core.registry import OneOf, Option, Positive, Range, _unwrap, coerce
from gdtrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "gdtrain.schema.json"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../docs/gdtrain.schema.json\n"
VALIDATOR = Draft202012Validator(config_schema())


def schema_problems(raw: Any, validator: Draft202012Validator = VALIDATOR) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or 'top level'}: {e.message}"
            for e in validator.iter_errors(raw)]


def gdtrain_problems(raw: dict) -> list[str]:
    try:
        resolve(copy.deepcopy(raw))
    except ConfigError as exc:
        return exc.problems
    return []


# ---------------------------------------------------------------- the committed copy


def test_the_committed_schema_is_what_the_code_generates():
    assert COMMITTED.exists(), "run: gdtrain components --json-schema > docs/gdtrain.schema.json"
    assert COMMITTED.read_text(encoding="utf-8") == render_schema(), (
        "docs/gdtrain.schema.json is out of date with the code; regenerate it with "
        "`gdtrain components --json-schema > docs/gdtrain.schema.json`")


def test_the_schema_is_a_valid_draft_2020_12_schema():
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert schema["$schema"] == DRAFT
    Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]) == list(TOP_LEVEL) and schema["required"] == list(REQUIRED)


def test_cli_prints_the_schema_and_its_help_says_how_to_use_it(cli):
    code, out, err = cli("components", "--json-schema")
    assert code == 0, err
    assert out == render_schema()
    code, out, _ = cli("components", "--help")
    assert code == 0
    assert "--json-schema" in out and "yaml-language-server: $schema=../docs/gdtrain.schema.json" in out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_points_at_the_schema_and_validates(path):
    assert path.read_text(encoding="utf-8").startswith(SCHEMA_LINE)
    raw, _ = load_file(path)
    assert schema_problems(raw) == []
    assert schema_problems(load(path)) == []  # and the resolved config, every default filled in


def test_every_component_and_option_is_in_the_schema():
    """Each name's branch lists exactly the options `resolve` takes, with their defaults."""
    schema = config_schema()
    tables = _tables()
    for key in TOP_LEVEL:
        if SECTION_SHAPES[key] == "section":
            section = schema["properties"][key]
            options = tables["section"].options(key)
            assert list(section["properties"]) == [o.name for o in options], key
            assert section.get("required", []) == [o.name for o in options if o.required], key
    for kind, registry in tables.items():
        if kind == "section":
            continue
        definition = schema["$defs"][kind]
        assert definition["properties"]["name"]["enum"] == registry.names()
        branches = {b["if"]["properties"]["name"]["const"]: b["then"] for b in definition["allOf"]}
        assert list(branches) == registry.names()
        for name, then in branches.items():
            options = registry.options(name)
            expected = ["name", *(o.name for o in options)] + (["init"] if kind == "model" else [])
            assert list(then["properties"]) == expected, (kind, name)
            assert then["additionalProperties"] is False
            assert then.get("required", []) == [o.name for o in options if o.required], (kind, name)
            for o in options:
                if not o.required:
                    assert then["properties"][o.name]["default"] == o.default, (kind, name, o.name)
                assert then["properties"][o.name].get("description", "") == o.doc, (kind, name, o.name)


# ---------------------------------------------------------------- schema and resolve agree

SECTION_OF = {"dataset": "data", "model": "model", "loss": "loss", "optimizer": "optimizer",
              "schedule": "schedule", "clip": "clip"}
LIST_SECTION_OF = {"penalty": "penalties"}  # kinds written as a list of components
# Values for required options, so that a component can be written with only its defaults.
SAMPLES = {"learning_rate": 0.1, "scale": 0.01, "path": "data.npz", "boundaries": [10, 20],
           "values": [0.1, 0.01, 0.001], "min": -1.0, "max": 1.0, "clip_norm": 5.0}
# An option that rules another out (resolve: "give steps or epochs, not both").
EXCLUDES = {("train", "epochs"): "steps"}
# Options that go only with others (resolve: "best_metric goes with keep_best: true",
# "early_stopping needs eval_every"): the cases give those too.
NEEDS = {("train", "best_metric"): {"keep_best": True, "eval_every": 10},
         ("train", "keep_best"): {"eval_every": 10}}
WRONG_TYPES = [{"a": 1}, "text", [1]]


def place(kind: str, name: str, options: dict) -> dict:
    """SMALL with the component (or plain section) `name` of `kind` given `options`."""
    raw = copy.deepcopy(SMALL)
    if kind == "section" and "." in name:  # a section inside another: train.early_stopping
        parent, key = name.split(".", 1)
        raw[parent] = {**raw.get(parent, {}), "eval_every": 10, key: options}
    elif kind == "section":
        section = {**raw.get(name, {}), **options}
        for (where, option), other in EXCLUDES.items():
            if where == name and option in options:
                section.pop(other, None)
        for (where, option), needed in NEEDS.items():
            if where == name and options.get(option) not in (None, False):
                section.update(needed)
        raw[name] = section
    elif kind == "initializer":
        raw["model"] = {"name": "linear", "init": {"name": name, **options}}
    elif kind in LIST_SECTION_OF:
        raw[LIST_SECTION_OF[kind]] = [{"name": name, **options}]
    else:
        raw[SECTION_OF[kind]] = {"name": name, **options}
        floor = options.get("min_learning_rate")
        if kind == "schedule" and isinstance(floor, (int, float)) and floor >= 0:
            # resolve: the floor must lie below the starting rate (a LOOSER case otherwise)
            raw["optimizer"] = {**raw["optimizer"], "learning_rate": 10 * floor + 1}
    return raw


def _bounds(annotation: Any) -> list[tuple[Any, Range]]:
    """(base type, Range) for every Range in an annotation, inside unions too."""
    base, constraints = _unwrap(annotation)
    found = [(base, c) for c in constraints if isinstance(c, Range)]
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        for arg in typing.get_args(base):
            found += _bounds(arg)
    return found


def _choices(annotation: Any) -> list[str]:
    base, constraints = _unwrap(annotation)
    found = [choice for c in constraints if isinstance(c, OneOf) for choice in c.choices]
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        for arg in typing.get_args(base):
            found += _choices(arg)
    return found


def _range_values(base: Any, r: Range) -> tuple[list, list]:
    """(values inside the range: its closed bounds and a middle, values just beyond each bound)."""
    low, high = (r.gt if r.gt is not None else r.ge), (r.lt if r.lt is not None else r.le)
    if low is not None and high is not None:
        middle = (low + high) // 2 if base is int else (low + high) / 2
    else:
        middle = low + 1 if low is not None else high - 1
    inside = [b for b in (r.ge, r.le) if b is not None] + [middle]
    beyond = [b for b in (r.gt, r.lt) if b is not None]
    beyond += [r.ge - 1] if r.ge is not None else []
    beyond += [r.le + 1] if r.le is not None else []
    return inside, beyond


def _option_cases(kind: str, name: str, required: dict, o: Option) -> list[tuple[str, dict, bool]]:
    """A wrong type, values inside and beyond each bound, every choice and one that is not."""
    values = []
    wrong = next((v for v in WRONG_TYPES if (coerce(v, o.annotation)[1] or "").startswith("expected")), None)
    if wrong is not None:
        values.append(("wrong-type", wrong, False))
    for base, r in _bounds(o.annotation):
        inside, beyond = _range_values(base, r)
        values += [(f"inside-{v}", v, True) for v in inside] + [(f"beyond-{v}", v, False) for v in beyond]
    choices = _choices(o.annotation)
    values += [(f"choice-{c}", c, True) for c in choices]
    if choices:
        values.append(("not-a-choice", "not_a_choice", False))
    cases = [(f"{kind}:{name}.{o.name}:{label}", place(kind, name, {**required, o.name: value}), valid)
             for label, value, valid in values]
    if o.required:
        without = {k: v for k, v in required.items() if k != o.name}
        cases.append((f"{kind}:{name}.{o.name}:missing", place(kind, name, without), False))
    return cases


def component_cases() -> list[tuple[str, dict, bool]]:
    """Cases for every registered component and option, generated from the registries."""
    cases = []
    for kind, registry in _tables().items():
        for name in registry:
            options = registry.options(name)
            missing = [o.name for o in options if o.required and o.name not in SAMPLES]
            assert not missing, f"add a sample value for the required option(s) {missing} to SAMPLES"
            required = {o.name: SAMPLES[o.name] for o in options if o.required}
            explicit = {**required, **{o.name: o.default for o in options if not o.required}}
            cases.append((f"{kind}:{name}:defaults", place(kind, name, required), True))
            if not (kind == "section" and name == "train"):  # steps and epochs both null: neither
                cases.append((f"{kind}:{name}:explicit-defaults", place(kind, name, explicit), True))
            unknown = place(kind, name, {**required, "no_such_option": 1})
            cases.append((f"{kind}:{name}:unknown-option", unknown, False))
            for o in options:
                cases += _option_cases(kind, name, required, o)
        if kind != "section":
            cases.append((f"{kind}:unknown-name", place(kind, f"no_such_{kind}", {}), False))
    return cases


def _init(init: Any) -> dict:
    return merged(SMALL, {"model": {"name": "linear", "init": init}})


# The config forms resolve knows besides one component's options.
FORM_CASES = [
    ("SMALL", SMALL, True),
    ("RESUME_RAW", RESUME_RAW, True),
    *[(f"fuzz-valid-{i}", c, True) for i, c in enumerate(VALID)],
    *[(f"missing-{key}", {k: v for k, v in SMALL.items() if k != key}, False) for key in REQUIRED],
    *[(f"empty-{key}", {**SMALL, key: None}, False) for key in REQUIRED],
    *[(f"empty-optional-{key}", {**SMALL, key: None}, True) for key in TOP_LEVEL if key not in REQUIRED],
    ("no-run", {k: v for k, v in SMALL.items() if k != "run"}, True),
    ("unknown-section", {**SMALL, "optimzer": {"name": "sgd", "learning_rate": 0.1}}, False),
    ("section-a-list", merged(SMALL, {"train": [1, 2]}), False),
    ("component-a-string", merged(SMALL, {"data": "mnist"}), False),
    ("name-missing", {**SMALL, "optimizer": {"learning_rate": 0.1}}, False),
    ("name-a-list", {**SMALL, "optimizer": {"name": ["sgd"], "learning_rate": 0.1}}, False),
    ("name-null", {**SMALL, "loss": {"name": None}}, False),
    ("option-of-another-component", merged(SMALL, {"optimizer": {"name": "sgd", "learning_rate": 0.1,
                                                                 "momentum": 0.9}}), False),
    ("int-for-float", merged(SMALL, {"optimizer": {"learning_rate": 1}}), True),
    ("integral-float-for-int", merged(SMALL, {"train": {"batch_size": 8.0}}), True),
    ("fractional-float-for-int", merged(SMALL, {"train": {"batch_size": 8.5}}), False),
    ("bool-for-int", merged(SMALL, {"train": {"batch_size": True}}), False),
    ("bool-for-float", merged(SMALL, {"optimizer": {"learning_rate": True}}), False),
    ("decay-steps-number", merged(SMALL, {"schedule": {"name": "exponential", "decay_steps": 100}}), True),
    ("decay-steps-epochs", merged(SMALL, {"schedule": {"name": "cosine", "decay_steps": "2 epochs"}}), True),
    ("decay-steps-list", merged(SMALL, {"schedule": {"name": "cosine", "decay_steps": [1]}}), False),
    ("trainable-patterns", merged(SMALL, {"train": {"trainable": ["W*", "b"]}}), True),
    ("trainable-a-string", merged(SMALL, {"train": {"trainable": "W"}}), False),
    ("trainable-of-numbers", merged(SMALL, {"train": {"trainable": [1]}}), False),
    ("l2-params", merged(SMALL, {"l2": {"scale": 0.1, "params": ["W"]}}), True),
    ("l2-params-null", merged(SMALL, {"l2": {"scale": 0.1, "params": None}}), True),
    ("epochs-not-steps", merged(SMALL, {"train": {"steps": None, "epochs": 2.5}}), True),
    ("steps-null-beside-epochs", merged(SMALL, {"train": {"steps": None, "epochs": 1}}) | {
        "train": {"batch_size": 8, "steps": None, "epochs": 1}}, True),
    # model.init: a name, {name, options}, {from: path}, {parameter: spec}, or nothing
    ("init-name", _init("zeros"), True),
    ("init-component", _init({"name": "normal", "stddev": 2.0}), True),
    ("init-from", _init({"from": "weights.npz"}), True),
    ("init-per-parameter", _init({"W": "ones", "b": {"name": "constant", "value": 1.0}}), True),
    ("init-some-parameters", _init({"b": "ones"}), True),
    ("init-empty-mapping", _init({}), True),
    ("init-null", _init(None), True),
    ("init-mlp-parameters", merged(SMALL, {"model": {"name": "mlp", "hidden": 3, "init": {
        "W1": "he_normal", "b1": "zeros", "W2": {"name": "uniform", "low": -1, "high": 1}}}}), True),
    ("init-unknown-name", _init("no_such_initializer"), False),
    ("init-unknown-option", _init({"name": "normal", "stdev": 1.0}), False),
    ("init-out-of-range", _init({"name": "normal", "stddev": 0}), False),
    ("init-a-number", _init(3), False),
    ("init-a-list", _init(["zeros"]), False),
    ("init-from-a-number", _init({"from": 3}), False),
    ("init-from-and-name", _init({"from": "w.npz", "name": "zeros"}), False),
    ("init-from-and-parameter", _init({"from": "w.npz", "W": "zeros"}), False),
    ("init-name-and-parameter", _init({"name": "zeros", "W": "zeros"}), False),
    ("init-parameter-a-number", _init({"W": 3}), False),
    ("init-parameter-without-name", _init({"W": {"stddev": 1.0}}), False),
    ("init-parameter-unknown-option", _init({"W": {"name": "zeros", "value": 1.0}}), False),
    ("init-parameter-out-of-range", _init({"W": {"name": "normal", "stddev": -1.0}}), False),
    ("init-parameter-from", _init({"W": {"from": "w.npz"}}), False),
    ("init-on-a-loss", merged(SMALL, {"loss": {"name": "mse", "init": "zeros"}}), False),
]

# What the schema leaves to `gdtrain check` (schema.py says why): it accepts these and gdtrain
# refuses them. A case that the schema learns to refuse moves to the tables above.
LOOSER = [
    ("steps-and-epochs", merged(SMALL, {"train": {"epochs": 2}})),
    ("neither-steps-nor-epochs", merged(SMALL, {"train": {"steps": None}})),
    ("nan", merged(SMALL, {"optimizer": {"learning_rate": float("nan")}})),
    ("infinity", merged(SMALL, {"optimizer": {"learning_rate": float("inf")}})),
    ("beyond-64-bits", merged(SMALL, {"train": {"batch_size": 2**63}})),
    ("trainable-matching-nothing", merged(SMALL, {"train": {"trainable": ["W1"]}})),
    ("l2-params-matching-nothing", merged(SMALL, {"l2": {"scale": 0.1, "params": ["V"]}})),
    ("init-for-a-missing-parameter", _init({"V": "zeros"})),
    ("init-for-a-dropped-bias", merged(SMALL, {"model": {"use_bias": False, "init": {"b": "zeros"}}})),
    ("cosine-alpha-above-one", merged(SMALL, {"schedule": {"name": "cosine", "alpha": 2.0}})),
    ("piecewise-lengths", merged(SMALL, {"schedule": {"name": "piecewise_constant", "boundaries": [1],
                                                      "values": [0.1]}})),
    ("decay-steps-word", merged(SMALL, {"schedule": {"name": "exponential", "decay_steps": "often"}})),
    ("run-name-a-path", merged(SMALL, {"run": {"name": "../elsewhere"}})),
    ("min-learning-rate-above-the-rate", merged(SMALL, {"schedule": {"name": "exponential",
                                                                      "min_learning_rate": 1.0}})),
]

CASES = component_cases() + FORM_CASES


@pytest.mark.parametrize(("raw", "valid"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_and_resolve_agree(raw, valid):
    found = gdtrain_problems(raw)
    assert (not found) is valid, found or "gdtrain accepted it"
    problems = schema_problems(raw)
    assert (not problems) is valid, problems or "the schema accepted it"


@pytest.mark.parametrize("raw", [c[1] for c in CASES if c[2]], ids=[c[0] for c in CASES if c[2]])
def test_resolved_configs_validate(raw):
    """What resolve returns (every default filled in, as a run's config.yaml) is a config too."""
    resolved = resolve(copy.deepcopy(raw))
    assert schema_problems(resolved) == []
    assert gdtrain_problems(resolved) == []


@pytest.mark.parametrize("raw", [c[1] for c in LOOSER], ids=[c[0] for c in LOOSER])
def test_what_the_schema_leaves_to_gdtrain(raw):
    assert gdtrain_problems(raw), "gdtrain accepted it"
    assert schema_problems(raw) == []


def test_the_case_table_covers_every_kind_of_rejection():
    labels = {c[0].rsplit(":", 1)[-1] for c in CASES if not c[2]}
    assert {"unknown-option", "wrong-type", "unknown-name", "not-a-choice", "missing"} <= labels
    assert any(label.startswith("beyond-") for label in labels)


@FUZZ
@given(config=mutated())
def test_the_schema_is_never_stricter_than_gdtrain(config):
    """Every fuzzed mutation that gdtrain accepts (read back through its YAML loader) validates."""
    raw, _ = parse_yaml(yaml.safe_dump(config, allow_unicode=True), "fuzz")
    if isinstance(raw, dict) and not gdtrain_problems(raw):
        assert schema_problems(raw) == []


# ---------------------------------------------------------------- generated, not written


def test_a_newly_registered_component_is_in_the_schema_with_no_other_change(monkeypatch):
    def clipped_sgd(learning_rate: Positive, clip: Annotated[float, Range(gt=0, le=10)] = 5.0,
                    mode: Annotated[str, OneOf("norm", "value")] = "norm") -> Optimizer:
        """Gradient descent with clipping (a test's).

        clip: the largest gradient
        mode: what is clipped
        """

    monkeypatch.setattr(OPTIMIZERS, "_table", {**OPTIMIZERS._table, "clipped_sgd": clipped_sgd})
    monkeypatch.setattr(OPTIMIZERS, "_options", dict(OPTIMIZERS._options))
    validator = Draft202012Validator(config_schema())
    then = next(b["then"] for b in config_schema()["$defs"]["optimizer"]["allOf"]
                if b["if"]["properties"]["name"]["const"] == "clipped_sgd")
    assert then["properties"]["clip"] == {"description": "the largest gradient", "type": "number",
                                          "exclusiveMinimum": 0, "maximum": 10, "default": 5.0}
    assert then["properties"]["mode"]["enum"] == ["norm", "value"] and then["required"] == ["learning_rate"]
    for options, valid in [({"learning_rate": 0.1}, True),
                           ({"learning_rate": 0.1, "clip": 10, "mode": "value"}, True),
                           ({"learning_rate": 0.1, "clip": 11}, False), ({"clip": 1}, False),
                           ({"learning_rate": 0.1, "mode": "both"}, False),
                           ({"learning_rate": 0.1, "clip_at": 1}, False)]:
        raw = merged(SMALL, {"optimizer": {"name": "clipped_sgd", **options}})
        assert (not gdtrain_problems(raw)) is valid, options
        assert (not schema_problems(raw, validator)) is valid, options


def test_a_new_section_is_one_entry_in_section_shapes(monkeypatch):
    """A list of components (the shape a `penalties:` section would have), optional."""
    monkeypatch.setattr(config_module, "TOP_LEVEL", (*TOP_LEVEL, "extra_losses"))
    with pytest.raises(ValueError, match="SECTION_SHAPES lacks the section.s. extra_losses"):
        config_schema()
    monkeypatch.setitem(SECTION_SHAPES, "extra_losses", ["lose"])
    with pytest.raises(ValueError, match="no table of kind 'lose'"):
        config_schema()
    monkeypatch.setitem(SECTION_SHAPES, "extra_losses", ["loss"])
    schema = config_schema()
    assert schema["properties"]["extra_losses"] == {"type": ["array", "null"],
                                                    "items": {"$ref": "#/$defs/loss"}}
    validator = Draft202012Validator(schema)
    assert not schema_problems({**SMALL, "extra_losses": [{"name": "mse"}, {"name": "cross_entropy"}]},
                               validator)
    assert schema_problems({**SMALL, "extra_losses": [{"name": "mse", "weight": 2}]}, validator)
