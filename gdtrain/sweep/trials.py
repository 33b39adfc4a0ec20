"""A sweep's trials: the settings a grid or random draws give, each repeated over the
seeds, named from their parameters, each with its resolved config.

A trial's name is made from its own values only (`learning_rate-0.01_seed-0`), never
from its place in the list or from the other trials, so a sweep run again finds the
same run directories, and adding a value adds trials without renaming any. Its config
is exactly what `gdtrain run BASE --set key=value ...` would resolve, with the paths
made absolute: a worker in another process, directory or machine reads the same files.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.registry import show
from ..errors import ConfigError
from .spec import Parameter, SweepSpec

MAX_NAME = 200  # file systems allow 255 bytes; a longer name is cut and given a hash
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_DRAW_ATTEMPTS = 100  # per setting asked for, before giving up on finding a new one


@dataclass(frozen=True)
class Trial:
    name: str
    params: dict  # swept key -> value, in the sweep file's order; the seed is apart
    seed: int
    config: dict  # resolved, paths absolute: what the trial's config.yaml holds

    @property
    def run_dir(self) -> Path:
        return Path(self.config["run"]["dir"]) / self.name

    @property
    def setting(self) -> str:
        """The trial's parameters without the seed: trials that share it form a group."""
        return canonical_params(self.params)


def canonical_params(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- names


def render_value(value: Any) -> str:
    """A value as a trial name shows it: 0.01, 1e-05, true, W.b (a list), adam.0.001 (a mapping)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if _PLAIN.match(value) else re.sub(r"[^A-Za-z0-9_-]", "_", value) or "_"
    if isinstance(value, list):
        return ".".join(render_value(v) for v in value) or "empty"
    if isinstance(value, dict):
        return ".".join(render_value(v) for v in value.values()) or "empty"
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(value))


def labels(keys: list[str]) -> dict[str, str]:
    """The name part of each key: its last component, or the whole key where two collide."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 and leaf != "seed" else k
            for k, leaf in zip(keys, leaves, strict=True)}


def trial_name(params: dict, seed: int, label: dict[str, str]) -> str:
    parts = [f"{label[k]}-{render_value(v)}" for k, v in params.items()] + [f"seed-{seed}"]
    name = "_".join(parts)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[: MAX_NAME - 13]}-{digest}"
    return name


# ---------------------------------------------------------------- settings


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _draw(p: Parameter, rng: random.Random) -> Any:
    r = rng.random()
    if p.kind == "values":
        return p.values[min(int(r * len(p.values)), len(p.values) - 1)]
    if p.kind == "uniform":
        return _round(p.low + (p.high - p.low) * r)
    if p.kind == "log_uniform":
        lo, hi = math.log(p.low), math.log(p.high)
        return _round(math.exp(lo + (hi - lo) * r))
    if p.kind == "int_uniform":
        lo, hi = int(p.low), int(p.high)
        return min(lo + int(r * (hi - lo + 1)), hi)
    raise AssertionError(p.kind)


def settings(spec: SweepSpec) -> list[dict]:
    """The parameter values of each setting: every combination (grid) or `samples`
    distinct draws (random), the draws a function of sampler_seed alone."""
    params = spec.parameters
    if spec.method == "grid":
        return [dict(zip([p.key for p in params], combo, strict=True))
                for combo in itertools.product(*(p.values for p in params))]
    rng = random.Random(spec.sampler_seed)
    out: list[dict] = []
    seen: set[str] = set()
    for _ in range(_DRAW_ATTEMPTS * spec.samples):
        if len(out) == spec.samples:
            break
        draw = {p.key: _draw(p, rng) for p in params}
        key = canonical_params(draw)
        if key not in seen:
            seen.add(key)
            out.append(draw)
    if len(out) < spec.samples:
        raise ConfigError(f"samples: only {len(out)} different settings could be drawn from these "
                          f"parameters; ask for at most {len(out)}", str(spec.path))
    return out


# ---------------------------------------------------------------- configs


def set_key(raw: dict, key: str, value: Any) -> str | None:
    """Set a dotted key in a raw config, creating sections; a problem if a part is not a mapping."""
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return f"{'.'.join(parts[: i + 1])} is {show(child)}, not a mapping"
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return None


def absolute_paths(config: dict, spec: SweepSpec, trial_raw: dict, sweep_keys: list[str]) -> dict:
    """A trial's config with its relative paths made absolute by the paths rule of configs
    (config/paths.py): a path written in the base config is relative to that file's
    directory, one written in the sweep file (a swept or fixed key) to the sweep file's,
    one left at its default to the working directory. Done before a trial leaves this
    process, so that a worker anywhere reads the same files."""
    from ..config import paths

    ruled, _ = paths.absolute_paths(config, spec.config_path, spec.base, trial_raw,
                                    [f"{k}=" for k in sweep_keys],
                                    os.path.dirname(os.path.abspath(spec.path)))
    return ruled


def _owner(problem: str, keys: list[str]) -> str | None:
    """The swept or fixed key a config problem ('dotted.key: message') is about, if any."""
    head = problem.split(":", 1)[0].strip()
    if head.startswith("--set "):
        head = head[len("--set "):]
    for key in keys:
        if head == key or head.startswith(key + ".") or key.startswith(head + "."):
            return key
    return None


def build_trials(spec: SweepSpec) -> list[Trial]:
    """Expand the sweep into trials with resolved configs; ConfigError with every problem,
    each at the sweep file's line of the parameter it comes from (or the base config's)."""
    from ..config.locate import locate
    from ..config.paths import run_dir
    from ..config.validate import resolve

    sweep_problems: list[str] = []
    base_problems: list[str] = []

    def note(problem: str, keys: list[str]) -> None:
        owner = _owner(problem, keys)
        if owner is None:
            if problem not in base_problems:
                base_problems.append(problem)
            return
        head, _, rest = problem.partition(":")
        text = (f"parameters.{problem}" if head.strip() == owner
                else f"parameters.{owner}: {problem}")
        located = locate(text, spec.lines)
        if located not in sweep_problems:
            sweep_problems.append(located)

    def fail() -> None:
        source = str(spec.config_path)
        if sweep_problems:
            raise ConfigError(sweep_problems + [f"{source}: {p}" for p in
                                                (locate(b, spec.base_lines) for b in base_problems)],
                              str(spec.path))
        raise ConfigError([locate(p, spec.base_lines) for p in base_problems], source)

    base = copy.deepcopy(spec.base)
    fixed_keys = list(spec.fixed)
    for key, value in spec.fixed.items():
        problem = set_key(base, key, value)
        if problem:
            note(f"{key}: {problem}", fixed_keys)
    if sweep_problems:
        fail()

    all_keys = [p.key for p in spec.parameters] + fixed_keys
    label = labels([p.key for p in spec.parameters])
    chosen = settings(spec)
    trials: list[Trial] = []
    names: dict[str, dict] = {}
    for params in chosen:
        raw = copy.deepcopy(base)
        broken = False
        for key, value in params.items():
            problem = set_key(raw, key, value)
            if problem:
                note(f"{key}: {problem}", all_keys)
                broken = True
        if broken:
            continue
        if raw.get("run") is None:
            raw["run"] = {}  # `run:` left empty, or absent: every default
        if not isinstance(raw["run"], dict):
            base_problems.append(f"run: expected a mapping, got {show(raw['run'])}")
            break
        base_seed = raw["run"].get("seed", 0)
        for seed in spec.seeds if spec.seeds is not None else [base_seed]:
            trial_raw = copy.deepcopy(raw)
            run = trial_raw["run"]
            name = trial_name(params, seed if isinstance(seed, int) else 0, label)
            run.update(seed=seed, name=name)
            try:
                config = resolve(trial_raw, str(spec.config_path), {})
            except ConfigError as exc:
                for problem in exc.problems:
                    note(problem, all_keys)
                continue
            if name in names and names[name] != params:
                sweep_problems.append(
                    f"parameters: two settings give the trial name {name}: "
                    f"{canonical_params(names[name])} and {canonical_params(params)}; "
                    "change one of the values")
                continue
            names[name] = params
            if not trials:
                given = config["run"]["dir"]  # as written: a cluster needs it absolute
            trials.append(Trial(name, params, config["run"]["seed"],
                                absolute_paths(config, spec, trial_raw, all_keys)))
    if sweep_problems or base_problems:
        fail()

    if not trials:
        given = "runs"
    ruled_dir = trials[0].config["run"]["dir"] if trials else os.path.abspath(given)
    directory = Path(os.path.abspath(run_dir({"run": {"dir": ruled_dir, "name": spec.name}})))
    if any((directory / marker).exists() for marker in ("status.json", "checkpoints")):
        raise ConfigError(locate(f"name: {directory} is the run directory of a single run; "
                                  "give the sweep another name", spec.lines), str(spec.path))
    out = []
    for t in trials:
        config = copy.deepcopy(t.config)
        config["run"]["dir"] = str(directory)
        out.append(Trial(t.name, t.params, t.seed, config))
    spec.trials, spec.directory, spec.run_dir_given = out, directory, given
    return out
