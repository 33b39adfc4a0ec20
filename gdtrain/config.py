"""Reading, overriding, validating and resolving configs.

A config is YAML read with a strict safe loader (no python tags, no duplicate keys,
YAML 1.2 numbers and booleans). `--set a.b=value` overrides any key. `resolve`
validates every section against the component tables (a factory's signature is
its schema) and returns the config with every default filled in, or raises one
ConfigError listing every problem with the file and line where the YAML has one.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml

from .errors import ConfigError
from .registry import (
    NonNegative,
    NonNegativeInt,
    OneOf,
    OpenFraction,
    PathText,
    Positive,
    PositiveInt,
    Registry,
    is_path,
    show,
    suggest,
)

# ---------------------------------------------------------------- YAML, strictly


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


# ---------------------------------------------------------------- sections without components

SECTIONS = Registry("section")


@SECTIONS.register("run")
def run_section(
    name: str | None = None,
    seed: NonNegativeInt = 0,
    dtype: Annotated[str, OneOf("float32", "float64")] = "float32",
    dir: PathText = "runs",
    threads: PositiveInt | None = None,
    flush_subnormals: bool = False,
):
    """Run identity and numerics.

    name: run directory name under dir (default: the config file's name)
    seed: seeds initialisation and data order
    dtype: float32 (fast) or float64 (about 2x slower)
    dir: where run directories live; a relative path is relative to the config file's directory
      (to the working directory when given with --set or left at the default: ./runs)
    threads: BLAS threads for the matrix products (default: the library's, one per core);
      the count changes results in the last bits: set it for resumes bit-exact across machines
    flush_subnormals: compute as TF1's CPU kernels do, with values below the dtype's smallest
      normal (1.2e-38 in float32) flushed to zero (the CPU's FTZ/DAZ flags), in the training
      loop and evaluation: on many Intel CPUs a subnormal costs 20-100x per operation, and
      Adam or momentum without L2 drive the slots of unused inputs into them (see
      docs/performance.md); false: IEEE arithmetic, the same bits on every platform.
      Linux (glibc) on x86-64 or AArch64 only; elsewhere a warning, and no flush
    """


@SECTIONS.register("train")
def train_section(
    batch_size: PositiveInt = 100,
    steps: PositiveInt | None = None,
    epochs: Positive | None = None,
    trainable: list[str] = ["*"],  # noqa: B006 (read only)
    shuffle: bool = True,
    log_every: NonNegativeInt = 100,
    eval_every: NonNegativeInt = 0,
    eval_split: Annotated[str, OneOf("test", "validation", "train")] = "test",
    checkpoint_every: NonNegativeInt = 0,
    keep_checkpoints: PositiveInt = 5,
    early_stopping: dict[str, Any] | None = None,
    keep_best: bool = False,
    best_metric: Annotated[str, OneOf("loss", "accuracy", "mse")] | None = None,
    tensorboard: bool = False,
):
    """The training loop.

    batch_size: examples per step
    steps: number of updates (give steps or epochs)
    epochs: passes over the training set, rounded up to whole steps
    trainable: parameter names or glob patterns to update (TF1's var_list); default all
    shuffle: reshuffle every epoch from run.seed; false takes rows in order
    log_every: log line every N steps (0: none)
    eval_every: evaluate every N steps (0: only at the end)
    eval_split: split evaluated during and after training (without a test split: train;
      without a validation split: an error)
    checkpoint_every: checkpoint every N steps (0: only at the end)
    keep_checkpoints: newest checkpoints kept
    early_stopping: stop when the evaluation metric stops improving: {metric, mode, patience,
      min_delta} (train.early_stopping below); needs eval_every; null: off
    keep_best: also keep the best-scoring checkpoint, named by checkpoints/best (judged like
      early_stopping, or by best_metric); needs eval_every
    best_metric: without early_stopping, the metric keep_best judges by (default loss;
      accuracy is maximised, loss and mse minimised)
    tensorboard: also write the logged scalars to <run dir>/tb for TensorBoard (needs gdtrain[tensorboard])
    """


@SECTIONS.register("train.early_stopping")
def early_stopping_section(
    metric: Annotated[str, OneOf("loss", "accuracy", "mse")] = "loss",
    mode: Annotated[str, OneOf("min", "max")] | None = None,
    patience: NonNegativeInt = 5,
    min_delta: NonNegative = 0.0,
):
    """Early stopping (Keras's EarlyStopping rule), judged at each train.eval_every evaluation.

    metric: a figure every evaluation of train.eval_split reports: loss; accuracy (classifiers);
      mse (real-valued or 0/1 targets)
    mode: min or max (default: min for loss and mse, max for accuracy)
    patience: evaluations in a row without improvement after which training stops
    min_delta: an improvement must beat the best by more than this
    """


@SECTIONS.register("l2")
def l2_section(scale: NonNegative, params: list[str] | None = None):
    """L2 weight decay with TF semantics: scale · sum(w²)/2 added to the loss.

    scale: the regularizer's scale (tf.contrib.layers.l2_regularizer)
    params: parameter names or patterns; default every weight matrix (no biases)
    """


@SECTIONS.register("ema")
def ema_section(decay: OpenFraction = 0.99, num_updates: bool = True):
    """Exponential moving average of the trainable parameters (tf.train.ExponentialMovingAverage).

    decay: the decay; with num_updates the effective decay is min(decay, (1+n)/(10+n))
    num_updates: pass the step count as num_updates, as TF1's tutorials do
    """


TOP_LEVEL = ("run", "data", "model", "loss", "optimizer", "schedule", "l2", "penalties", "clip", "ema",
             "train")
REQUIRED = ("data", "model", "loss", "optimizer", "train")
OPTIONAL_SECTIONS = ("schedule", "l2", "penalties", "clip", "ema")

# How each top-level section is written, for the JSON Schema of a config that schema.py
# generates (`gdtrain components --json-schema`): "section" is a plain section, its keys
# the options of SECTIONS' entry of the same name; a component kind of components.KINDS
# ("dataset", "model", ...) is {name: <a component of that kind>, <its options>}; a list
# [kind] is a list of such components. A new top-level section is its key in TOP_LEVEL
# (and REQUIRED if it must be given) plus one entry here.
SECTION_SHAPES: dict[str, str | list[str]] = {
    "run": "section", "data": "dataset", "model": "model", "loss": "loss", "optimizer": "optimizer",
    "schedule": "schedule", "l2": "section", "penalties": ["penalty"], "clip": "clip", "ema": "section",
    "train": "section",
}

# What a resumed run may not change (it would be a different run), and what it may
# change only with --allow-config-change.
FROZEN_ON_RESUME = ("run.seed", "run.dtype", "data", "model", "loss", "train.trainable",
                    "train.batch_size", "train.shuffle")
GUARDED_ON_RESUME = ("optimizer", "schedule", "l2", "penalties", "clip", "ema")

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _tables():
    # imported here so that `gdtrain --help` does not pay for numpy
    from .data import DATASETS
    from .initializers import INITIALIZERS
    from .losses import LOSSES
    from .models import MODELS
    from .optimizers import OPTIMIZERS
    from .schedules import SCHEDULES

    return DATASETS, MODELS, LOSSES, OPTIMIZERS, SCHEDULES, INITIALIZERS


def _chain_tables():
    from .clipping import CLIPS
    from .penalties import PENALTIES

    return PENALTIES, CLIPS


def penalty_sections(config: dict) -> list[tuple[str, dict]]:
    """(config path, {name, options}) of every penalty, in the order a step adds their
    gradients: the l2 section (the spelling of old configs), then `penalties` in list order."""
    out = []
    if isinstance(config.get("l2"), dict):
        out.append(("l2", {"name": "l2", **config["l2"]}))
    penalties = config.get("penalties")
    for i, item in enumerate(penalties if isinstance(penalties, list) else []):
        if isinstance(item, dict):
            out.append((f"penalties.{i}", item))
    return out


def _section(config: dict, key: str, problems: list[str], optional: bool = False) -> dict | None:
    value = config.get(key)
    if value is None:
        if not optional:
            problems.append(f"{key}: section is empty; expected a mapping" if key in config
                            else f"{key}: missing section")
        return None
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping, got {show(value)}")
        return None
    return value


def _with_defaults(registry: Registry, name: str, coerced: dict) -> dict:
    out = {}
    for opt in registry.options(name):
        if opt.name in coerced:
            out[opt.name] = coerced[opt.name]
        elif not opt.required:
            out[opt.name] = copy.deepcopy(opt.default)
    return out


def _component(registry: Registry, section: dict, where: str, problems: list[str],
               extra: tuple[str, ...] = ()) -> dict:
    options = {k: v for k, v in section.items() if k != "name" and k not in extra}
    name = section.get("name")
    if "name" not in section:
        problems.append(f"{where}.name: missing; valid: {', '.join(registry.names())}")
        return {}
    coerced, found = registry.check(name, options, where)
    problems.extend(found)
    if found:
        return {"name": name, **options}
    return {"name": name, **_with_defaults(registry, name, coerced)}


def match_patterns(patterns: list[str], names: list[str]) -> tuple[list[str], list[str]]:
    """(names matched by any pattern, in model order; patterns that matched nothing)."""
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    matched = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return matched, unmatched


def _check_init(init: Any, names: list[str], problems: list[str], initializers: Registry):
    """model.init: a name, {name: ..., options}, {from: file.npz} or {param: spec, ...}."""

    def check_one(spec: Any, where: str):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected an initializer name or mapping, got {show(spec)}")
            return
        opts = {k: v for k, v in spec.items() if k != "name"}
        _, found = initializers.check(spec.get("name"), opts, where)
        problems.extend(found)

    if init is None:
        return
    if isinstance(init, dict) and "from" in init:
        extra = set(init) - {"from"}
        if extra:
            problems.append(f"model.init: 'from' takes no other keys, got {sorted(extra)}")
        if not isinstance(init["from"], str):
            problems.append(f"model.init.from: expected a path to an .npz file, got {show(init['from'])}")
        return
    if isinstance(init, dict) and "name" not in init:
        for key, spec in init.items():
            if key not in names:
                problems.append(
                    f"model.init.{key}: no such parameter; the model has {', '.join(names)}"
                    + suggest(key, names)
                )
            else:
                check_one(spec, f"model.init.{key}")
        return
    check_one(init, "model.init")


def resolve(raw: dict, source: str = "config", lines: dict[str, int] | None = None) -> dict:
    """Validate a whole config; return it with every default filled in.

    Raises ConfigError listing every problem, each prefixed with the file and line
    of the offending key where known.
    """
    DATASETS, MODELS, LOSSES, OPTIMIZERS, SCHEDULES, INITIALIZERS = _tables()
    PENALTIES, CLIPS = _chain_tables()
    problems: list[str] = []
    for key in raw:
        if key not in TOP_LEVEL:
            problems.append(
                f"{key}: unknown section" + (suggest(key, TOP_LEVEL) or f"; valid: {', '.join(TOP_LEVEL)}")
            )
    out: dict[str, Any] = {}

    def plain_section(key: str, optional: bool) -> dict | None:
        section = _section(raw, key, problems, optional)
        if section is None:
            if key == "run":
                section = {}
            else:
                return None
        coerced, found = SECTIONS.check(key, section, key)
        problems.extend(found)
        return _with_defaults(SECTIONS, key, coerced)

    run = plain_section("run", optional=True)
    if run.get("name") is None:
        run["name"] = Path(source).stem if source not in ("config", "--set") else "run"
    name = run["name"]
    if not isinstance(name, str) or not _RUN_NAME.match(name) or name in (".", ".."):
        problems.append(
            f"run.name: {show(name)} is not a plain directory name (letters, digits, '.', '_', '-'; "
            "no path separators, no leading '.')"
        )
    out["run"] = run

    data = _section(raw, "data", problems)
    if data is not None:
        out["data"] = _component(DATASETS, data, "data", problems)

    model = _section(raw, "model", problems)
    names: list[str] = []
    weights: list[str] = []
    if model is not None:
        out["model"] = _component(MODELS, model, "model", problems, extra=("init",))
        if "init" in model:
            out["model"]["init"] = model["init"]
        mname = model.get("name")
        if mname in MODELS and not any(p.startswith("model.") for p in problems):
            opts = {k: v for k, v in out["model"].items() if k not in ("name", "init")}
            try:
                probe = MODELS.get(mname)(input_dim=1, output_dim=1, **opts)
                names, weights = probe.names, probe.weights
            except ValueError as exc:
                problems.append(f"model: {exc}")
            _check_init(model.get("init"), names, problems, INITIALIZERS)

    loss = _section(raw, "loss", problems)
    if loss is not None:
        out["loss"] = _component(LOSSES, loss, "loss", problems)

    optimizer = _section(raw, "optimizer", problems)
    if optimizer is not None:
        out["optimizer"] = _component(OPTIMIZERS, optimizer, "optimizer", problems)

    schedule = _section(raw, "schedule", problems, optional=True)
    if schedule is not None:
        out["schedule"] = _component(SCHEDULES, schedule, "schedule", problems)

    l2 = plain_section("l2", optional=True)
    if l2 is not None:
        if l2.get("params") is None and weights:
            l2["params"] = list(weights)
        out["l2"] = l2
    penalties = _penalties(raw.get("penalties"), PENALTIES, weights, "l2" in out, problems)
    if penalties is not None:
        out["penalties"] = penalties
    clip = _section(raw, "clip", problems, optional=True)
    if clip is not None:
        out["clip"] = _component(CLIPS, clip, "clip", problems)
    ema = plain_section("ema", optional=True)
    if ema is not None:
        out["ema"] = ema

    train = plain_section("train", optional=False)
    if train is not None:
        length_problem = any(p.startswith(("train.steps:", "train.epochs:")) for p in problems)
        if train.get("steps") is None and train.get("epochs") is None and not length_problem:
            problems.append("train: give either steps or epochs")
        elif train.get("steps") is not None and train.get("epochs") is not None:
            problems.append("train: give steps or epochs, not both")
        _check_judging(train, problems)
        out["train"] = train

    # Cross-section checks that need the model's parameter names.
    if names:
        pattern_lists = [("train.trainable", (train or {}).get("trainable"))]
        pattern_lists += [(f"{where}.params", section.get("params"))
                          for where, section in penalty_sections(out)]
        for where, patterns in pattern_lists:
            if isinstance(patterns, list):
                _, unmatched = match_patterns(patterns, names)
                problems += [f"{where}: {p!r} matches no parameter; the model has {', '.join(names)}"
                             + suggest(p, names) for p in unmatched]

    # Build the schedule once with placeholder sizes, so that its own checks run now.
    if "schedule" in out and "optimizer" in out and not problems:
        from .schedules import build_schedule

        try:
            build_schedule(out["schedule"], out["optimizer"].get("learning_rate", 1.0) or 1.0, 1.0, 1)
        except ConfigError as exc:
            problems.extend(exc.problems)

    # Build each penalty and the clip, so that their factories' own checks (min <= max) run now.
    if not problems:
        parts = [(PENALTIES, where, section) for where, section in penalty_sections(out)]
        parts += [(CLIPS, "clip", out["clip"])] if "clip" in out else []
        for registry, where, section in parts:
            try:
                registry.build(section["name"], {k: v for k, v in section.items() if k != "name"}, where)
            except ConfigError as exc:
                problems.extend(exc.problems)

    if problems:
        raise ConfigError([_locate(p, lines) for p in problems], source)
    return out


# The direction each metric improves in: early stopping's default mode.
NATURAL_MODE = {"loss": "min", "mse": "min", "accuracy": "max"}


def _check_judging(train: dict, problems: list[str]) -> None:
    """Fill in train.early_stopping (its mode from its metric) and check what early stopping
    and keep_best need: evaluations to judge, and one metric to judge them by."""
    es = train.get("early_stopping")
    if isinstance(es, dict):
        coerced, found = SECTIONS.check("train.early_stopping", es, "train.early_stopping")
        problems.extend(found)
        es = _with_defaults(SECTIONS, "train.early_stopping", coerced)
        if es["mode"] is None:
            es["mode"] = NATURAL_MODE[es["metric"]]
        train["early_stopping"] = es
    elif es is not None:  # the train section's own check has said what is wrong with it
        es = None
    no_evaluations = train.get("eval_every") == 0 and not any(p.startswith("train.eval_every:")
                                                              for p in problems)
    if es is not None and no_evaluations:
        problems.append("train.early_stopping: needs train.eval_every (patience counts evaluations, "
                        "made every eval_every steps); set train.eval_every, e.g. 100")
    if train.get("keep_best") and no_evaluations:
        problems.append("train.keep_best: needs train.eval_every (the best checkpoint is chosen at "
                        "evaluations); set train.eval_every, e.g. 100")
    if train.get("best_metric") is not None:
        if not train.get("keep_best"):
            problems.append("train.best_metric: goes with train.keep_best: true")
        elif es is not None:
            problems.append("train.best_metric: with train.early_stopping, keep_best judges by "
                            "train.early_stopping.metric; give one of them")


def _penalties(value: Any, penalties: Registry, weights: list[str], has_l2_section: bool,
               problems: list[str]) -> list[dict] | None:
    """The `penalties:` list, each entry checked against its factory, `params` defaulting to
    the weight matrices (as l2.params does); None when the section is absent or empty."""
    if value is None:
        return None
    if not isinstance(value, list):
        problems.append(f"penalties: expected a list such as [{{name: l1, scale: 1.0e-4}}], "
                        f"got {show(value)}")
        return None
    out = []
    for i, item in enumerate(value):
        where = f"penalties.{i}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping such as {{name: l1, scale: 1.0e-4}}, "
                            f"got {show(item)}")
            continue
        entry = _component(penalties, item, where, problems)
        if entry.get("name") == "l2" and has_l2_section:
            problems.append(f"{where}.name: l2 is given twice, here and as the l2 section; "
                            "keep one of them")
        if "params" in entry and entry["params"] is None and weights:
            entry["params"] = list(weights)
        out.append(entry)
    return out


def _locate(problem: str, lines: dict[str, int | str] | None) -> str:
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


def _mark_overrides(lines: dict[str, int], overrides: list[str]) -> dict[str, int | str]:
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
        lines = _mark_overrides(lines, overrides)
    config, notes = absolute_paths(resolve(raw, str(path), lines), path, in_file, raw, overrides or [])
    return config, lines, notes


def locate_later(exc: ConfigError, path: str | Path, lines: dict) -> ConfigError:
    """A ConfigError raised after loading (batch larger than the data, a loss that does
    not fit the labels), pointed at the file and line of its key like a loading one."""
    if exc.source is not None or not all(p.split(".")[0].split(":")[0] in TOP_LEVEL for p in exc.problems):
        return exc
    return ConfigError([_locate(p, lines) for p in exc.problems], str(path))


# ---------------------------------------------------------------- paths


def path_options(config: dict) -> list[str]:
    """Dotted keys of the path options in a resolved config: the options of `run` and of the
    dataset annotated PathText (run.dir, data.dir, data.path, ...), and model.init.from."""
    datasets = _tables()[0]
    keys = [f"run.{o.name}" for o in SECTIONS.options("run") if is_path(o.annotation)]
    data = config.get("data")
    if isinstance(data, dict) and data.get("name") in datasets:
        keys += [f"data.{o.name}" for o in datasets.options(data["name"]) if is_path(o.annotation)]
    init = (config.get("model") or {}).get("init") if isinstance(config.get("model"), dict) else None
    if isinstance(init, dict) and "from" in init:
        keys.append("model.init.from")
    return keys


def _lookup(config: dict, key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def absolute_paths(config: dict, config_file: str | Path, in_file: dict, given: dict,
                   overrides: list[str]) -> tuple[dict, dict[str, tuple[str, str]]]:
    """The config with its relative path options made absolute, by one rule for all of
    them: a relative path is relative to where it was written. Written in the config file
    (`in_file`, as read), it is relative to that file's directory, so a config finds its
    data from any working directory; given with --set, or left at its default, it is
    relative to the working directory, as a path typed in a shell is (run.dir's default
    `runs` is ./runs). `~` is the home directory. `given` is the config as overridden,
    before defaults were filled in.

    Returns (config, notes): for each input path that was relative, its absolute value ->
    (key, how it was resolved), for the message when it does not exist (`explain_missing`).
    """
    out = copy.deepcopy(config)
    notes: dict[str, tuple[str, str]] = {}
    overridden = [item.partition("=")[0].strip() for item in overrides]
    folder = os.path.dirname(os.path.abspath(config_file))
    for key in path_options(out):
        found, value = _lookup(out, key)
        if not found or not isinstance(value, str) or not value:
            continue
        expanded = os.path.expanduser(value)
        replaced = any(key == k or key.startswith(k + ".") for k in overridden)  # by --set
        from_set = replaced and _lookup(given, key)[0]
        written = not replaced and _lookup(in_file, key)[0]
        absolute = os.path.normpath(os.path.join(folder if written else os.getcwd(), expanded))
        parent_key, _, name = key.rpartition(".")
        _lookup(out, parent_key)[1][name] = absolute
        if not os.path.isabs(expanded) and key != "run.dir":  # run.dir is made, never missing
            notes[absolute] = (key, f"{value!r} in {config_file}, relative to the config file's directory"
                               if written else
                               f"{value!r} from --set, relative to the working directory" if from_set
                               else f"the default {value!r}, relative to the working directory")
    return out, notes


def explain_missing(exc: Exception, notes: dict[str, tuple[str, str]]) -> Exception:
    """A data error about a relative input path that does not exist, with how the path was
    resolved: `/w/configs/data/mnist (data.dir: 'data/mnist' in /w/configs/x.yaml, relative
    to the config file's directory): no such directory; ...`."""
    message = str(exc)
    for path, (key, how) in notes.items():
        at = re.search(re.escape(path) + r"(?=[:\s]|$)", message)
        if at and not os.path.exists(path):
            note = how if message.startswith(f"{key}: ") else f"{key}: {how}"  # the key once is enough
            return type(exc)(f"{message[:at.end()]} ({note}){message[at.end():]}")
    return exc


def same_path(a: Any, b: Any) -> bool:
    """Whether two values of a path option name the same file. A relative one (a config
    saved before paths were made absolute) is taken, as it was then, from the working
    directory."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return a == b
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


# ---------------------------------------------------------------- identity and drift


def canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical(config).encode()).hexdigest()


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not config and prefix:
            out[prefix] = {}
        return out
    return {prefix: config}


def diff(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ: (key, old, new); missing values are None."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def with_section_defaults(config: dict) -> dict:
    """A copy where every option a plain section (run, train, train.early_stopping, l2, ema)
    lacks has its default.

    A config saved by an older gdtrain lacks the options added since (train.keep_best, ...);
    to the drift check an absent option is its default, not a change. An absent section
    (no l2, early stopping off) stays absent.
    """
    out = copy.deepcopy(config)
    for name in SECTIONS:  # in file order: train before train.early_stopping
        section: Any = out
        for part in name.split("."):
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict):
            for opt in SECTIONS.options(name):
                if not opt.required and opt.name not in section:
                    section[opt.name] = copy.deepcopy(opt.default)
    return out


def classify_drift(old: dict, new: dict) -> tuple[list, list, list]:
    """Split a resume's config changes into (refused, needs --allow-config-change, allowed).
    A path spelt differently but naming the same file is no change."""
    refused, guarded, allowed = [], [], []
    paths = set(path_options(old)) | set(path_options(new))
    saved_keys = flatten(old)
    for change in diff(with_section_defaults(old), with_section_defaults(new)):
        key = change[0]
        if key in paths and same_path(change[1], change[2]):
            continue
        if key not in saved_keys and _is_new_default(new, key):
            continue  # an option added since the checkpoint was saved, at its default: same run
        if any(key == f or key.startswith(f + ".") for f in FROZEN_ON_RESUME):
            refused.append(change)
        elif any(key == g or key.startswith(g + ".") for g in GUARDED_ON_RESUME):
            guarded.append(change)
        elif key in ("train.steps", "train.epochs") and _schedule_spans_run(new):
            # the schedule is stretched over the run's length: a new length is a new schedule
            guarded.append(change)
        elif key == "run.dir":
            continue
        else:
            allowed.append(change)
    return refused, guarded, allowed


def _is_new_default(config: dict, key: str) -> bool:
    """Whether `key` (section.option) holds the default of an option its component or
    section takes: what resolving fills in for an option the saved config predates."""
    section, _, option = key.partition(".")
    if not option or "." in option or not isinstance(config.get(section), dict):
        return False
    tables = dict(zip(("data", "model", "loss", "optimizer", "schedule"), _tables()[:5], strict=True))
    registry = tables.get(section, SECTIONS)
    name = config[section].get("name") if section in tables else section
    if name not in registry:
        return False
    default = next((o.default for o in registry.options(name) if o.name == option), _NO_OPTION)
    return default is not _NO_OPTION and default == config[section][option]


_NO_OPTION = object()


def _schedule_spans_run(config: dict) -> bool:
    """Whether the learning rates depend on the total number of steps."""
    schedule = config.get("schedule") or {}
    return schedule.get("name") in ("cosine", "linear") and schedule.get("decay_steps") is None


def dump_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def run_dir(config: dict) -> str:
    return os.path.join(config["run"]["dir"], config["run"]["name"])


__all__ = ["load", "resolve", "apply_overrides", "config_hash", "diff", "classify_drift", "SECTIONS"]
