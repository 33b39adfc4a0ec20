"""Validating a config and filling in its defaults: `resolve`.

`resolve` checks every section against the component tables (a factory's signature is
its schema) and returns the config with every default filled in, or raises one
ConfigError listing every problem with the file and line where the YAML has one.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from ..core.early_stopping import NATURAL_MODE
from ..core.registry import Registry, show, suggest
from ..core.selection import match_patterns, penalty_sections
from ..errors import ConfigError
from .locate import locate
from .sections import SECTIONS, TOP_LEVEL, chain_tables, component_tables

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    DATASETS, MODELS, LOSSES, OPTIMIZERS, SCHEDULES, INITIALIZERS = component_tables()
    PENALTIES, CLIPS = chain_tables()
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
        from ..core.schedules import build_schedule

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
        raise ConfigError([locate(p, lines) for p in problems], source)
    return out


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
