"""Every component and config section with its options, read from the code itself.

A factory's signature is its schema (core/registry.py), so this listing cannot disagree
with what `gdtrain check` accepts: names, types, defaults and the one-line
descriptions all come from the registered functions and their docstrings. The same
data renders as a table (`gdtrain components`), JSON (`--json`) and the Markdown of
docs/config-reference.md (`--markdown`), which a test keeps in step with the code.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.registry import Option, Registry, suggest, type_name
from ..errors import ConfigError

KINDS = ("section", "dataset", "model", "loss", "optimizer", "schedule", "initializer", "penalty", "clip")
TITLES = {
    "section": "Plain sections (run, train and its early_stopping, l2, ema)",
    "dataset": "Datasets (`data.name`)",
    "model": "Models (`model.name`)",
    "loss": "Losses (`loss.name`)",
    "optimizer": "Optimizers (`optimizer.name`)",
    "schedule": "Learning-rate schedules (`schedule.name`)",
    "initializer": "Initializers (`model.init`)",
    "penalty": "Penalties (`penalties: [{name: ...}, ...]`)",
    "clip": "Gradient clipping (`clip.name`)",
}
# What a kind's heading says before its entries (the order of the step's parts: core/chain.py).
NOTES = {
    "penalty": "Terms added to the data loss, each under its own name in metrics.jsonl, the summary and "
               "TensorBoard (a second penalty of one kind is `l2_2`, ...). A step adds their gradients "
               "in order: the `l2` section first (the spelling of older configs; `l2` cannot also appear "
               "in `penalties`), then `penalties` in list order; then it clips, then the optimizer "
               "turns the gradients into updates, then the EMA follows the new values.",
    "clip": "At most one, after the penalties (TF1 practice: the gradient of the whole objective is "
            "clipped) and before the optimizer. `global_norm` logs the norm before clipping as "
            "`global_norm`.",
}
# Where a kind's components are named in a config, for the README summary.
WHERE = {"dataset": "data", "initializer": "model.init", "penalty": "penalties"}


def plural(kind: str) -> str:
    if kind.endswith("y"):
        return kind[:-1] + "ies"
    return kind + ("es" if kind.endswith("s") else "s")


def kind_named(word: str) -> str:
    """The kind a word names, singular or plural ('model', 'losses'); ConfigError otherwise."""
    plurals = {plural(k): k for k in KINDS}
    if word in KINDS or word in plurals:
        return plurals.get(word, word)
    raise ConfigError(f"unknown kind {word!r}; valid: {', '.join(KINDS)}" + suggest(word, KINDS))


def _tables() -> dict[str, Registry]:
    from .sections import SECTIONS, chain_tables, component_tables

    datasets, models, losses, optimizers, schedules, initializers = component_tables()
    penalties, clips = chain_tables()
    return {"section": SECTIONS, "dataset": datasets, "model": models, "loss": losses,
            "optimizer": optimizers, "schedule": schedules, "initializer": initializers,
            "penalty": penalties, "clip": clips}


def _default(option: Option) -> Any:
    return None if option.required else option.default


def _option(option: Option) -> dict:
    return {"name": option.name, "type": type_name(option.annotation), "required": option.required,
            "default": _default(option), "doc": option.doc}


# model.init, which every model takes besides its factory's options (config._check_init)
INIT_FORMS = ("an initializer for the weights (biases stay zero), {from: file.npz}, or "
              "{parameter: initializer, ...}")
INIT_DOC = INIT_FORMS + "; default: the model's own, listed above"


def _model_extra(models: Registry, name: str) -> dict:
    """A model's parameters and default initialisation, from a 1-in 1-out instance."""
    probe = models.get(name)(input_dim=1, output_dim=1)
    return {"parameters": probe.names, "weights": probe.weights,
            "default_init": {k: probe.default_init.get(k) for k in probe.names}}


def describe() -> dict:
    """{kind: [{name, summary, options: [...], ...}]} for every registered component."""
    tables = _tables()
    out: dict[str, list] = {}
    for kind in KINDS:
        registry = tables[kind]
        entries = []
        names = registry.names() if kind != "section" else list(registry)  # sections in file order
        for name in names:
            entry = {"name": name, "summary": registry.summary(name),
                     "options": [_option(o) for o in registry.options(name)]}
            if kind == "model":
                entry.update(_model_extra(registry, name))
                entry["options"].append({"name": "init", "type": "initializer name | mapping",
                                         "required": False, "default": None, "doc": INIT_DOC})
            entries.append(entry)
        out[kind] = entries
    return out


def plain_value(value: Any) -> str:
    """A default or initializer as the listings show it: YAML's null/true/false, lists and
    mappings in flow style (JSON), anything else as str()."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def render_markdown(data: dict) -> str:
    """docs/config-reference.md: every section and component, with a table of options."""
    from .sections import OPTIONAL_SECTIONS, REQUIRED, TOP_LEVEL

    lines = [
        "# Config reference",
        "",
        "<!-- Generated by `gdtrain components --markdown > docs/config-reference.md`; do not edit by hand:",
        "     tests/test_components.py fails when this file and the code disagree. -->",
        "",
        f"A config is a YAML mapping with the sections {', '.join(f'`{s}`' for s in TOP_LEVEL)}. "
        f"{', '.join(f'`{s}`' for s in REQUIRED)} are required; `run` and "
        f"{', '.join(f'`{s}`' for s in OPTIONAL_SECTIONS)} are optional. A component section names "
        "its component with `name:` and gives its options beside it. Any key can be overridden "
        "on the command line with `--set section.key=value`.",
        "",
    ]
    for kind in KINDS:
        lines += [f"## {TITLES[kind]}", ""]
        if kind in NOTES:
            lines += [_text(NOTES[kind]), ""]
        for entry in data[kind]:
            heading = f"`{entry['name']}`" if kind != "section" else f"`{entry['name']}:`"
            lines += [f"### {heading}", ""]
            if entry["summary"]:
                lines += [_text(entry["summary"]), ""]
            if kind == "model":
                init = ", ".join(f"{k} {plain_value(v)}" for k, v in entry["default_init"].items())
                lines += [f"Parameters: {', '.join(entry['parameters'])}; default init: {init}.", ""]
            if entry["options"]:
                lines += ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
                for o in entry["options"]:
                    default = "*required*" if o["required"] else f"`{plain_value(o['default'])}`"
                    lines.append(f"| `{o['name']}` | {_cell(o['type'])} | {default} | {_cell(o['doc'])} |")
            else:
                lines.append("No options.")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


README_START = "<!-- config-summary: generated by `gdtrain components --summary`; tests check it -->"
README_END = "<!-- config-summary end -->"


def render_summary(data: dict) -> str:
    """README's config reference: one row per component, options with their defaults."""
    lines = [README_START, "", "| section | name | options (default) |", "| --- | --- | --- |"]
    for kind in KINDS:
        for entry in data[kind]:
            where = entry["name"] if kind == "section" else WHERE.get(kind, kind)
            name = "" if kind == "section" else f"`{entry['name']}`"
            options = ", ".join(
                f"`{o['name']}`" + (" *required*" if o["required"] else f" ({plain_value(o['default'])})")
                for o in entry["options"]) or "—"
            lines.append(f"| `{where}` | {name} | {_cell(options)} |")
    lines += ["", README_END]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table: no column breaks, no accidental HTML tags."""
    return _text(text).replace("|", "\\|")


def _text(text: str) -> str:
    return text.replace("<", "\\<")
