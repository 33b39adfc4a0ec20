"""The layers of the package, and the one direction its imports go.

Every module of gdtrain belongs to the layer its folder names (gdtrain/core/... is
`core`; gdtrain/api.py is `api`). Each import, at the top of a module or inside a
function, may reach only the layers the table allows; so the math never reads files or
YAML, the run machinery never prints, and nothing but the entry point imports the
commands. A new module falls under the table by where it is put.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gdtrain"

# layer -> the layers its modules may import, besides its own
ALLOWED: dict[str, set[str]] = {
    "errors": set(),  # the exceptions every layer raises: imports nothing of gdtrain
    "core": {"errors"},  # the math: models, losses, the step's parts, the trainer
    "data": {"core", "errors"},  # the dataset loaders: files in, core.dataset out
    "config": {"core", "data", "errors"},  # YAML, --set, validation, drift
    "run": {"core", "data", "config", "errors"},  # checkpoints, run directory, the loop
    "sweep": {"core", "data", "config", "run", "errors"},  # many runs
    "api": {"core", "data", "config", "run", "sweep", "errors"},  # the Python API
    "commands": {"core", "data", "config", "run", "sweep", "api", "errors", "version"},  # CLI
    "entry": {"commands"},  # python -m gdtrain
    "version": set(),  # gdtrain/__init__.py: the version string
}

# third-party modules that belong to one concern: only these layers may import them
THIRD_PARTY: dict[str, set[str]] = {
    "yaml": {"config"},
    "rich": {"commands"},
    "typer": {"commands"},
    "tqdm": {"commands"},
    "matplotlib": {"commands"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "version"
    top = parts[1]
    return "entry" if top == "__main__" else top


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str) -> list[tuple[int, str]]:
    """(line, imported gdtrain module or package) of every import in `module`, including
    those inside functions and under TYPE_CHECKING; `from X import name` counts as X.name
    when that is a module, else as X."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "gdtrain"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "gdtrain":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else target))
    return found


def third_party(module: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
        out += [(node.lineno, n.split(".")[0]) for n in names]
    return out


def test_every_module_is_in_a_layer_of_the_table():
    unknown = sorted(m for m in MODULES if layer(m) not in ALLOWED)
    assert not unknown, f"modules outside every layer of ALLOWED: {unknown}"


def test_the_table_has_no_cycle():
    """The layers can be stacked: each imports only layers below it."""
    order: list[str] = []
    remaining = dict(ALLOWED)
    while remaining:
        ready = [name for name, allowed in remaining.items() if allowed <= set(order)]
        assert ready, f"the layers {sorted(remaining)} import each other"
        order += sorted(ready)
        for name in ready:
            del remaining[name]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    mine = layer(module)
    wrong = [f"line {line}: {target} ({layer(target)})" for line, target in imports(module)
             if layer(target) != mine and layer(target) not in ALLOWED[mine]]
    assert not wrong, f"{module} ({mine}) may import only {sorted(ALLOWED[mine])}: {wrong}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_yaml_and_the_terminal_stay_in_their_layers(module):
    mine = layer(module)
    wrong = [f"line {line}: {name}" for line, name in third_party(module)
             if name in THIRD_PARTY and mine not in THIRD_PARTY[name]]
    assert not wrong, f"{module} ({mine}): {wrong}"


def test_only_the_entry_point_imports_the_commands():
    importers = sorted({m for m in MODULES for _, target in imports(m)
                        if layer(target) == "commands" and layer(m) != "commands"})
    assert importers == ["gdtrain.__main__"]


def test_the_core_imports_nothing_of_run_commands_or_config():
    """What the review found: the trainer and the chain imported config, the trainer the
    checkpoint reader."""
    for module in (m for m in MODULES if layer(m) == "core"):
        outside = {layer(t) for _, t in imports(module)} - {"core", "errors"}
        assert not outside, (module, outside)


def test_the_checks_see_imports_inside_functions():
    """A function-level import counts like any other (the commands import lazily)."""
    cli = dict((target, line) for line, target in imports("gdtrain.commands.cli"))
    assert "gdtrain.run.loop" in cli and "gdtrain.config.loading" in cli
