"""The sweep file: what it may say, checked like a config.

A sweep file is strict YAML read by the config reader (YAML 1.2 scalars, no duplicate
keys). Its keys are the signatures of the functions registered below, as a config's
sections are: names, types, defaults and descriptions come from them, and so does
docs/sweep-reference.md (`gdtrain components sweep --markdown`). Every problem names the
file, the line and the key; all are reported at once, and nothing is written.

    name: mnist_lr                          # runs/<name>/<trial>/ (default: the file's name)
    config: ../configs/mnist_softmax.yaml   # the base config every trial starts from
    parameters:
      optimizer.learning_rate: {values: [0.003, 0.01, 0.03]}
      train.eval_every: {value: 100}        # the same for every trial, not in the names
    seeds: [0, 1, 2]                        # run.seed of the repetitions of each setting
    metric: {name: accuracy, goal: maximize}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from ..core.registry import (
    NonNegativeInt,
    OneOf,
    Positive,
    PositiveInt,
    Range,
    Registry,
    coerce,
    show,
    suggest,
    type_name,
)
from ..errors import ConfigError

SECTIONS = Registry("sweep section")
PARAMETERS = Registry("parameter kind")


@SECTIONS.register("sweep")
def sweep_file(
    config: str,
    parameters: dict[str, Any] | None = None,
    name: str | None = None,
    method: Annotated[str, OneOf("grid", "random")] = "grid",
    samples: PositiveInt | None = None,
    sampler_seed: NonNegativeInt = 0,
    seeds: list[NonNegativeInt] | None = None,
    metric: dict[str, Any] | None = None,
    early_stop: dict[str, Any] | None = None,
):
    """The top level of a sweep file.

    config: the base config file every trial starts from (a relative path is relative to
      the sweep file's directory, as the paths inside a config are to the config's)
    parameters: dotted config key -> how it varies: {values: [...]}, {value: x} or
      {distribution: ..., min: ..., max: ...} (see the parameter kinds)
    name: the sweep's directory under the base config's run.dir (default: the sweep file's name)
    method: grid (every combination of the values) or random (samples settings drawn)
    samples: settings drawn by method random (required there)
    sampler_seed: seeds the draws of method random: the same seed draws the same trials
    seeds: run.seed of each repetition of every setting (default: the base config's seed)
    metric: {name, goal} that ranks the settings (default: accuracy, maximized, or mse, minimized)
    early_stop: {method: halving, rate, min_steps}: stop the worse settings early
    """


@SECTIONS.register("metric")
def metric_section(
    name: Annotated[str, OneOf("accuracy", "loss", "mse")] | None = None,
    goal: Annotated[str, OneOf("maximize", "minimize")] | None = None,
):
    """The figure that ranks the settings: the final evaluation (on train.eval_split).

    name: accuracy, loss or mse of the evaluation (default: accuracy for classifiers, else mse)
    goal: maximize or minimize (default: maximize accuracy, minimize loss and mse)
    """


@SECTIONS.register("early_stop")
def early_stop_section(
    min_steps: PositiveInt,
    method: Annotated[str, OneOf("halving")] = "halving",
    rate: Annotated[int, Range(ge=2)] = 3,
):
    """Successive halving: train every setting to min_steps, keep the best 1/rate (by the
    mean over its seeds), train those rate times longer, and so on; the last one trains to
    train.steps.

    min_steps: the first budget, in steps
    method: halving (successive halving)
    rate: the budget grows this many times each rung, and 1/rate of the settings go on
    """


@PARAMETERS.register("values")
def values_kind(values: list):
    """A grid axis: each value in turn (method random: one drawn per setting).

    values: the values, of the config key's type (at least one)
    """


@PARAMETERS.register("value")
def value_kind(value: Any):
    """The same value for every trial; not part of the trial names.

    value: the value, of the config key's type
    """


@PARAMETERS.register("uniform")
def uniform_kind(min: float, max: float):
    """method random: a number drawn uniformly from [min, max), rounded to 4 significant digits.

    min: the lower bound
    max: the upper bound, above min
    """


@PARAMETERS.register("log_uniform")
def log_uniform_kind(min: Positive, max: Positive):
    """method random: a number whose logarithm is uniform (learning rates), rounded to 4
    significant digits.

    min: the lower bound, above 0
    max: the upper bound, above min
    """


@PARAMETERS.register("int_uniform")
def int_uniform_kind(min: int, max: int):
    """method random: an integer from min to max, both included.

    min: the lowest value
    max: the highest value, above min
    """


DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
# Keys the sweep itself sets in every trial.
SET_BY_SWEEP = {"run.name": "the sweep names each trial's run directory",
                "run.seed": "give the seeds with `seeds: [...]`"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # as config's run.name


@dataclass
class Parameter:
    """One swept config key: `values` for a grid axis, or a distribution's bounds."""

    key: str
    kind: str
    values: list | None = None
    low: float | None = None
    high: float | None = None


@dataclass
class SweepSpec:
    path: Path
    name: str
    config_path: Path
    base: dict  # the base config as read, with the fixed (`value:`) keys set
    parameters: list[Parameter]
    fixed: dict[str, Any]
    method: str
    samples: int | None
    sampler_seed: int
    seeds: list[int] | None
    metric: dict
    early_stop: dict | None
    lines: dict = field(default_factory=dict)
    base_lines: dict = field(default_factory=dict)
    trials: list = field(default_factory=list)  # trials.Trial, filled by load_sweep
    directory: Path | None = None  # runs/<name>, absolute
    run_dir_given: str = "runs"  # the base's run.dir as written: a remote cluster needs it absolute


def _check_mapping(registry: Registry, entry: str, mapping: dict, prefix: str,
                   problems: list[str]) -> dict:
    """Coerce `mapping` against an entry's signature; unknown keys, wrong types and
    missing required keys become problems named by their dotted key."""
    known = {o.name: o for o in registry.options(entry)}
    out = {}
    for key, value in mapping.items():
        where = f"{prefix}{key}"
        if key not in known:
            problems.append(f"{where}: unknown key" + (suggest(key, known) or f"; valid: {', '.join(known)}"))
            continue
        coerced, problem = coerce(value, known[key].annotation)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            out[key] = coerced
    for option in known.values():
        if option.name not in mapping:
            if option.required:
                problems.append(f"{prefix}{option.name}: missing ({type_name(option.annotation)})")
            else:
                out[option.name] = option.default
    return out


def _sub_mapping(raw: dict, key: str, problems: list[str]) -> dict | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping, got {show(value)}")
        return None
    return value


def _parameter(key: str, spec: Any, method: str, problems: list[str]) -> Parameter | tuple | None:
    """A Parameter, ("fixed", value) for `value:`, or None after recording problems."""
    where = f"parameters.{key}"
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        problems.append(f"parameters: {show(key)} is not a dotted config key such as optimizer.learning_rate")
        return None
    for taken, why in SET_BY_SWEEP.items():
        if key == taken or key.startswith(taken + "."):
            problems.append(f"{where}: cannot be swept: {why}")
            return None
    if key == "run":
        problems.append(f"{where}: give run's keys one by one (run.dir, run.dtype, ...)")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected a mapping such as {{values: [...]}}, {{value: x}} or "
                        f"{{distribution: uniform, min: a, max: b}}, got {show(spec)}")
        return None
    spec = dict(spec)
    if "distribution" in spec:
        kind = spec.pop("distribution")
        if kind not in DISTRIBUTIONS:
            problems.append(f"{where}.distribution: unknown distribution {show(kind)}; valid: "
                            f"{', '.join(DISTRIBUTIONS)}" + suggest(kind, DISTRIBUTIONS))
            return None
    elif "values" in spec:
        kind = "values"
    elif "value" in spec:
        kind = "value"
    else:
        close = suggest(next(iter(spec), ""), ["values", "value", "distribution"])
        problems.append(f"{where}: expected values:, value: or distribution:{close}")
        return None
    found: list[str] = []
    options = _check_mapping(PARAMETERS, kind, spec, f"{where}.", found)
    problems += found
    if found:
        return None
    if kind == "value":
        return ("fixed", options["value"])
    if key == "run.dir":
        problems.append(f"{where}: give it as {{value: DIR}}: a sweep's trials live in one directory")
        return None
    if kind == "values":
        values = options["values"]
        if not values:
            problems.append(f"{where}.values: empty; give at least one value")
            return None
        seen: list = []
        for v in values:
            if any(_same(v, s) for s in seen):
                problems.append(f"{where}.values: {show(v)} is given twice")
                return None
            seen.append(v)
        return Parameter(key, kind, values=list(values))
    low, high = options["min"], options["max"]
    if not low < high:
        problems.append(f"{where}: min {show(low)} is not below max {show(high)}; expected min < max")
        return None
    if method != "random":
        problems.append(f"{where}: a distribution needs method: random (method grid takes values: [...])")
        return None
    return Parameter(key, kind, low=low, high=high)


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: 1 and 1.0 are the same learning rate; true is not 1."""
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def read_sweep_file(path: Path) -> tuple[dict, dict[str, int], str]:
    """(mapping, line map, text) of a sweep file; ConfigError for a file that is not one."""
    from ..config.yaml_file import read_yaml_mapping

    return read_yaml_mapping(path, "sweep file", "empty sweep file; expected a mapping with config and "
                             "parameters", "(config, parameters, ...)")


def parse(path: str | Path) -> SweepSpec:
    """Check a sweep file on its own and read its base config: a SweepSpec without trials."""
    from ..config.locate import locate
    from ..config.yaml_file import load_file

    path = Path(path)
    raw, lines, _ = read_sweep_file(path)
    problems: list[str] = []
    top = _check_mapping(SECTIONS, "sweep", raw, "", problems)
    metric = _check_mapping(SECTIONS, "metric", _sub_mapping(raw, "metric", problems) or {},
                            "metric.", problems)
    early = _sub_mapping(raw, "early_stop", problems)
    early = _check_mapping(SECTIONS, "early_stop", early, "early_stop.", problems) if early else None

    method = top.get("method", "grid")
    parameters: list[Parameter] = []
    fixed: dict[str, Any] = {}
    raw_parameters = raw.get("parameters")
    if isinstance(raw_parameters, dict):  # anything else is a problem _check_mapping recorded
        for key, spec in raw_parameters.items():
            p = _parameter(key, spec, method, problems)
            if isinstance(p, tuple):
                fixed[key] = p[1]
            elif p is not None:
                parameters.append(p)

    seeds = top.get("seeds")
    if seeds is not None:
        if not seeds:
            problems.append("seeds: empty; give at least one seed, or leave seeds out for the config's own")
        elif len(set(seeds)) != len(seeds):
            twice = sorted(s for s in seeds if seeds.count(s) > 1)[0]
            problems.append(f"seeds: {show(twice)} is given twice")
    if method == "random" and top.get("samples") is None and "samples" not in raw:
        problems.append("samples: method random needs the number of settings to draw, e.g. samples: 8")
    if method == "grid" and top.get("samples") is not None:
        problems.append("samples: goes with method: random; method grid runs every combination")
    if not parameters and not problems and len(seeds or []) < 2:
        problems.append("parameters: nothing to sweep; give a parameter with values (or a "
                        "distribution), or two or more seeds")

    name = top.get("name") or path.stem
    if isinstance(name, str) and (not _NAME.match(name) or name in (".", "..")):
        problems.append(f"name: {show(name)} is not a plain directory name (letters, digits, '.', '_', '-'; "
                        "no path separators, no leading '.')")

    config_path = None
    base: dict = {}
    if isinstance(top.get("config"), str):
        # one rule for every path written in a file: relative to that file's directory
        written = os.path.expanduser(top["config"])
        config_path = Path(os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), written)))
        if not config_path.is_file():
            what = "is a directory" if config_path.is_dir() else "no such file"
            how = ("" if os.path.isabs(written)
                   else f" ({config_path}, relative to the sweep file's directory)")
            problems.append(f"config: {top['config']}{how}: {what}; expected the base config file")
            config_path = None

    if problems:
        raise ConfigError([locate(p, lines) for p in problems], str(path))
    base, base_lines = load_file(config_path)  # its problems are reported with its name and lines
    return SweepSpec(path=path, name=str(name), config_path=config_path, base=base, base_lines=base_lines,
                     parameters=parameters, fixed=fixed, method=method, samples=top.get("samples"),
                     sampler_seed=top["sampler_seed"], seeds=seeds, metric=metric, early_stop=early,
                     lines=lines)


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file, then expand and check every trial's config."""
    from .trials import build_trials

    spec = parse(path)
    build_trials(spec)
    return spec


# ---------------------------------------------------------------- reference


def describe() -> dict[str, list[dict]]:
    """{"sections": [...], "parameters": [...]}: every key of a sweep file, from the code."""
    from ..config.components import plain_value

    def entry(registry: Registry, name: str) -> dict:
        return {"name": name, "summary": registry.summary(name), "options": [
            {"name": o.name, "type": type_name(o.annotation), "required": o.required,
             "default": None if o.required else plain_value(o.default), "doc": o.doc}
            for o in registry.options(name)]}

    return {"sections": [entry(SECTIONS, n) for n in SECTIONS],
            "parameters": [entry(PARAMETERS, n) for n in PARAMETERS]}


def render_markdown(data: dict | None = None) -> str:
    """docs/sweep-reference.md."""
    data = data or describe()

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "\\<")

    def table(options: list[dict]) -> list[str]:
        rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for o in options:
            default = "*required*" if o["required"] else f"`{o['default']}`"
            rows.append(f"| `{o['name']}` | {cell(o['type'])} | {default} | {cell(o['doc'])} |")
        return rows

    lines = [
        "# Sweep file reference",
        "",
        "<!-- Generated by `gdtrain components sweep --markdown > docs/sweep-reference.md`; do not edit",
        "     by hand: tests/test_sweep.py fails when this file and the code disagree. -->",
        "",
        "`gdtrain sweep SWEEP.yaml` trains one run per trial: the base config with the swept keys set,",
        "for each seed, in `<run.dir>/<name>/<trial>/`. A sweep file is YAML read as strictly as a",
        "config ([config reference](config-reference.md)); every problem names its line and key.",
        "",
    ]
    titles = {"sweep": "Top level", "metric": "`metric:`", "early_stop": "`early_stop:`"}
    for section in data["sections"]:
        lines += [f"## {titles[section['name']]}", "", cell(section["summary"]), ""]
        lines += table(section["options"]) + [""]
    lines += ["## Parameter kinds (`parameters.<dotted.key>:`)", "",
              "A parameter is a dotted config key, as `--set` takes it, with one of these:", ""]
    for kind in data["parameters"]:
        spelled = ("`{values: [...]}`" if kind["name"] == "values" else "`{value: x}`"
                   if kind["name"] == "value" else f"`{{distribution: {kind['name']}, min: a, max: b}}`")
        lines += [f"### {spelled}", "", cell(kind["summary"]), ""] + table(kind["options"]) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
