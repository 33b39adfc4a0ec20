"""Path options of a config: which they are, and the one rule that makes them absolute.

A relative path is relative to where it was written: in the config file, to that file's
directory; given with --set or left at its default, to the working directory.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from ..core.registry import is_path
from .sections import SECTIONS, component_tables


def path_options(config: dict) -> list[str]:
    """Dotted keys of the path options in a resolved config: the options of `run` and of the
    dataset annotated PathText (run.dir, data.dir, data.path, ...), and model.init.from."""
    datasets = component_tables()[0]
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
                   overrides: list[str], overrides_folder: str | None = None
                   ) -> tuple[dict, dict[str, tuple[str, str]]]:
    """The config with its relative path options made absolute, by one rule for all of
    them: a relative path is relative to where it was written. Written in the config file
    (`in_file`, as read), it is relative to that file's directory, so a config finds its
    data from any working directory; given with --set, or left at its default, it is
    relative to the working directory, as a path typed in a shell is (run.dir's default
    `runs` is ./runs). `~` is the home directory. `given` is the config as overridden,
    before defaults were filled in. `overrides_folder`: where the overrides were written
    (a sweep file's directory), if not typed in a shell.

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
        start = folder if written else (overrides_folder or os.getcwd()) if replaced else os.getcwd()
        absolute = os.path.normpath(os.path.join(start, expanded))
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


def run_dir(config: dict) -> str:
    return os.path.join(config["run"]["dir"], config["run"]["name"])
