"""`gdtrain components` and the generated config reference; terminal behaviour of the CLI
(NO_COLOR, no progress-bar codes in pipes, shell completion)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from tool_runs import config, run, write_yaml

from gdtrain.config.components import KINDS, describe, render_markdown
from gdtrain.config.sections import SECTIONS
from gdtrain.core.clipping import CLIPS
from gdtrain.core.initializers import INITIALIZERS
from gdtrain.core.losses import LOSSES
from gdtrain.core.models import MODELS
from gdtrain.core.optimizers import OPTIMIZERS
from gdtrain.core.penalties import PENALTIES
from gdtrain.core.registry import type_name
from gdtrain.core.schedules import COMMON_OPTIONS, SCHEDULES
from gdtrain.data import DATASETS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "config-reference.md"
TABLES = {"section": SECTIONS, "dataset": DATASETS, "model": MODELS, "loss": LOSSES,
          "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "initializer": INITIALIZERS,
          "penalty": PENALTIES, "clip": CLIPS}
GDTRAIN = [sys.executable, "-m", "gdtrain"]


def test_the_committed_reference_is_what_the_code_generates():
    generated = render_markdown(describe())
    assert REFERENCE.exists(), "run: gdtrain components --markdown > docs/config-reference.md"
    assert REFERENCE.read_text(encoding="utf-8") == generated, (
        "docs/config-reference.md is out of date with the code; regenerate it with "
        "`gdtrain components --markdown > docs/config-reference.md`")


def test_every_registered_component_and_option_is_listed():
    data = describe()
    assert list(data) == list(KINDS) == list(TABLES)
    for kind, registry in TABLES.items():
        entries = {e["name"]: e for e in data[kind]}
        assert sorted(entries) == sorted(registry.names())
        for name, entry in entries.items():
            listed = [(o["name"], o["type"], o["required"], o["default"]) for o in entry["options"]]
            expected = [(o.name, type_name(o.annotation), o.required, None if o.required else o.default)
                        for o in registry.options(name)]
            if kind == "schedule":  # the common options, declared once, close every schedule's list
                common = [(k, type_name(a), False, d) for k, (a, d, _) in COMMON_OPTIONS.items()]
                assert common and expected[-len(common):] == common, (kind, name)
            if kind == "model":
                expected += [("init", "initializer name | mapping", False, None)]
            assert listed == expected, (kind, name)
    mlp = next(e for e in data["model"] if e["name"] == "mlp")
    assert mlp["parameters"] == ["W1", "b1", "W2", "b2"] and mlp["weights"] == ["W1", "W2"]
    train = next(e for e in data["section"] if e["name"] == "train")
    assert {"name": "tensorboard", "type": "bool", "required": False, "default": False,
            "doc": train["options"][-1]["doc"]} in train["options"]


def test_cli_components(cli):
    code, out, err = cli("components", "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads(json.dumps(describe()))
    code, out, _ = cli("components", "--markdown")
    assert code == 0 and out == render_markdown(describe())
    code, out, _ = cli("components", "optimizers")
    assert code == 0
    assert "adam" in out and "beta1: float (> 0, < 1), default 0.9" in out and "mlp" not in out
    code, _, err = cli("components", "modle")
    assert code == 2 and "did you mean 'model'" in err


# ---------------------------------------------------------------- terminal behaviour

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _colours(text: str) -> list[str]:
    """SGR codes that set a colour (30-49, 90-107, 256/true colour), not bold or reset."""
    found = []
    for params in _SGR.findall(text):
        codes = [int(c) for c in params.split(";") if c]
        if any(30 <= c <= 49 or 90 <= c <= 107 for c in codes):
            found.append(params)
    return found


def _in_pty(args: list[str], env: dict) -> str:
    """Run with stdout and stderr on a pseudo-terminal; everything it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # rows, columns
    proc = subprocess.Popen(args, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def small_config(tmp_path):
    raw = config(tmp_path, train={"steps": 300, "log_every": 100})
    return write_yaml(tmp_path / "small.yaml", raw)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS")}
    return {**env, "TERM": "xterm-256color", **extra}


def test_no_control_codes_when_output_is_not_a_terminal(small_config):
    done = subprocess.run([*GDTRAIN, "run", str(small_config)], capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "step     300" in done.stdout
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream and "\r" not in stream  # no colours, no progress bar


def test_no_color_is_honoured_on_a_terminal(tmp_path):
    raw = config(tmp_path)
    run(raw)
    runs = str(tmp_path / "runs")
    coloured = _in_pty([*GDTRAIN, "runs", runs], _env())
    assert "finished" in coloured and _colours(coloured)  # a terminal gets colour by default ...
    plain = _in_pty([*GDTRAIN, "runs", runs], _env(NO_COLOR="1"))
    assert "finished" in plain and not _colours(plain)  # ... and none with NO_COLOR


def test_version_and_shell_completion():
    done = subprocess.run([*GDTRAIN, "--version"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and re.fullmatch(r"gdtrain \d+\.\d+\.\d+\S*\n", done.stdout)
    # what bash's completion function asks: the commands starting with "pl"
    env = {**_env(), "_GDTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "gdtrain pl", "COMP_CWORD": "1"}
    done = subprocess.run(["gdtrain"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
                          executable=str(Path(sys.executable).with_name("gdtrain")))
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["plan", "plot"]


def test_the_readme_config_reference_is_what_the_code_generates():
    from gdtrain.config.components import README_END, README_START, render_summary

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    assert 0 <= start < end, "README.md lacks the generated config-summary block"
    block = text[start : end + len(README_END)] + "\n"
    assert block == render_summary(describe()), (
        "README.md's config reference is out of date with the code; replace the block with "
        "the output of `gdtrain components --summary`")
