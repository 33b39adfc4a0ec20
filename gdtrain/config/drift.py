"""What a resume may change: a saved config against a new one, key by key.

`classify_drift` splits the changes into refused (another run), guarded (a new update
rule: only with --allow-config-change) and allowed ones.
"""

from __future__ import annotations

import copy
from typing import Any

from .paths import path_options, same_path
from .sections import SECTIONS, component_tables

# What a resumed run may not change (it would be a different run), and what it may
# change only with --allow-config-change.
FROZEN_ON_RESUME = ("run.seed", "run.dtype", "data", "model", "loss", "train.trainable",
                    "train.batch_size", "train.shuffle")
GUARDED_ON_RESUME = ("optimizer", "schedule", "l2", "penalties", "clip", "ema")


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
    kinds = ("data", "model", "loss", "optimizer", "schedule")
    tables = dict(zip(kinds, component_tables()[:5], strict=True))
    registry = tables.get(section, SECTIONS)
    name = config[section].get("name") if section in tables else section
    if name not in registry:
        return False
    default = next((o.default for o in registry.options(name) if o.name == option), _NO_OPTION)
    return default is not _NO_OPTION and default == config[section][option]


_NO_OPTION = object()


def _schedule_spans_run(config: dict) -> bool:
    """Whether the learning rates depend on the total number of steps: what the schedule
    declares as its `spans_run` trait (core/schedules.py)."""
    schedule = config.get("schedule") or {}
    schedules = component_tables()[4]
    name = schedule.get("name")
    spans_run = schedules.trait(name, "spans_run") if name in schedules else None
    return bool(spans_run and spans_run(schedule))
