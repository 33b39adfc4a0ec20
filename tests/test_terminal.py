"""What the real CLI prints to terminals and pipes: encodings, widths, colours, warnings.

Every test runs `python -m gdtrain` in a subprocess with the environment it is about
(PYTHONIOENCODING, COLUMNS, NO_COLOR, TERM), stdin from /dev/null so that rich cannot
take a width from the terminal pytest runs in, and stdout/stderr on pipes, or on a
pseudo-terminal where a terminal is the point.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml
from tool_runs import SMALL, classes_npz, merged, values_npz

from gdtrain.commands.cli import app

REPO = Path(__file__).resolve().parents[1]
SOFTMAX = REPO / "configs" / "mnist_softmax.yaml"
MLP = REPO / "configs" / "mnist_mlp.yaml"
# variables that change what the CLI prints; each test sets the ones it is about
_OUTPUT_ENV = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
               "PYTHONIOENCODING", "TERM", "TERMINAL_WIDTH", "PY_COLORS", "GITHUB_ACTIONS")


@dataclass
class Result:
    code: int
    out: bytes
    err: bytes

    @property
    def text(self) -> str:
        return (self.out + self.err).decode("utf-8", "replace")


def _env(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in _OUTPUT_ENV}
    return {**base, "TERM": "xterm-256color", **env}


def gdtrain(*args, **env: str) -> Result:
    """`gdtrain ARGS` with stdout and stderr on pipes."""
    proc = subprocess.run([sys.executable, "-m", "gdtrain", *map(str, args)], cwd=REPO, env=_env(**env),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def gdtrain_on_terminal(*args, **env: str) -> Result:
    """`gdtrain ARGS` with stdout and stderr on a 120 x 40 pseudo-terminal (both in .out)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "gdtrain", *map(str, args)], cwd=REPO, env=_env(**env),
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return Result(proc.wait(timeout=300), b"".join(chunks), b"")


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.text and "UnicodeEncodeError" not in result.text, result.text


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> Path:
    """configs/mnist_softmax.yaml, 300 steps: a real 10-class run to evaluate."""
    root = tmp_path_factory.mktemp("runs")
    result = gdtrain("run", SOFTMAX, "--quiet", "--set", f"run.dir={root}", "--set", "train.steps=300")
    assert result.code == 0, result.text
    return root / "mnist_softmax"


def small_config(tmp_path: Path, name: str, **sections) -> Path:
    raw = merged(SMALL, {"run": {"name": name, "dir": str(tmp_path / "runs")}, **sections})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------- output encodings


def test_ascii_stdout_gets_ascii_stand_ins_not_a_traceback(tmp_path):
    # the loss sparkline's blocks and arrow, the summary's table and eval's confusion
    # matrix used to end in UnicodeEncodeError, after the whole training
    run = gdtrain("run", SOFTMAX, "--set", f"run.dir={tmp_path}", "--set", "train.steps=300",
                  PYTHONIOENCODING="ascii")
    assert run.code == 0, run.text
    assert_no_traceback(run)
    out = run.out.decode("ascii")  # every byte ASCII
    curve = re.search(r"^loss curve  ([_.\-:=+*#]{3})  [\d.]+ -> [\d.]+$", out, re.M)
    assert curve, out  # the three logged losses as three ASCII heights
    assert re.search(r"^\| last batch loss \| [\d.]+ \(sum over 100 examples\)", out, re.M), out

    evaluated = gdtrain("eval", tmp_path / "mnist_softmax", PYTHONIOENCODING="ascii")
    assert evaluated.code == 0, evaluated.text
    assert_no_traceback(evaluated)
    assert "accuracy" in evaluated.out.decode("ascii")


COMMAND_LINES = [
    ["runs", "{runs}"], ["plan", MLP], ["components"], ["gradcheck", SOFTMAX, "--entries", "3"],
    ["verify", "{run}"], ["--help"], ["run", "--help"], ["check", SOFTMAX, "--no-data"],
    ["eval", "{run}", "--split", "train"],
]


@pytest.mark.parametrize("encoding, args", [
    *(("ascii", args) for args in COMMAND_LINES),
    # latin-1 has · and ± but no – … or box drawing
    ("latin-1", ["plan", MLP]), ("latin-1", ["components"]), ("latin-1", ["eval", "{run}"]),
], ids=lambda a: a if isinstance(a, str) else " ".join(Path(str(x)).name for x in a))
def test_every_command_prints_on_a_narrow_encoding(mnist_run, encoding, args):
    args = [str(a).format(run=mnist_run, runs=mnist_run.parent) for a in args]
    result = gdtrain(*args, PYTHONIOENCODING=encoding)
    assert result.code == 0, result.text
    assert_no_traceback(result)
    result.out.decode(encoding)
    assert result.out.strip()


def test_a_name_the_encoding_lacks_is_escaped_in_an_error_and_a_table(mnist_run, tmp_path):
    odd = tmp_path / "caf\u00e9"
    missing = gdtrain("eval", odd, PYTHONIOENCODING="ascii")
    assert missing.code == 2 and missing.out == b""
    assert missing.err.decode("ascii").strip() == f"gdtrain: error: {tmp_path}/caf\\xe9: no such run " \
                                                  "directory or checkpoint"
    # a run directory whose name is not UTF-8 at all, on a strict UTF-8 stdout
    runs = tmp_path / "runs"
    runs.mkdir()
    os.symlink(mnist_run, os.path.join(os.fsencode(runs), b"r\xff"))
    table = gdtrain("runs", runs, PYTHONIOENCODING="utf-8")
    assert table.code == 0, table.text
    assert_no_traceback(table)
    assert b"r\\udcff" in table.out and b"finished" in table.out


# ---------------------------------------------------------------- 80 columns


def _confusion_rows(out: str, k: int = 10) -> list[list[str]]:
    lines = out.splitlines()
    start = lines.index("confusion matrix (rows: true class, columns: predicted)")
    header = lines[start + 1].replace("|", " ").split()
    assert header == ["class", *map(str, range(k)), "accuracy"], lines[start + 1]
    return [line.replace("|", " ").split() for line in lines[start + 3 : start + 3 + k]]


def _assert_same_figures(rows: list[list[str]], scored: dict) -> None:
    k = len(scored["confusion"])
    assert [[int(c) for c in row[1 : k + 1]] for row in rows] == scored["confusion"]
    assert [row[k + 1] for row in rows] == [f"{a:.4f}" for a in scored["per_class_accuracy"]]


@pytest.mark.parametrize("columns", ["80", None], ids=["COLUMNS=80", "piped"])
@pytest.mark.parametrize("split", ["test", "train"])
def test_eval_confusion_matrix_fits_80_columns_whole(mnist_run, split, columns):
    env = {"COLUMNS": columns} if columns else {}
    result = gdtrain("eval", mnist_run, "--split", split, **env)
    assert result.code == 0, result.text
    out = result.out.decode()
    table = out[out.index("confusion matrix"):]
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80, out
    scored = json.loads(gdtrain("eval", mnist_run, "--split", split, "--json").out)
    _assert_same_figures(_confusion_rows(out), scored)


def test_eval_prints_a_confusion_matrix_too_wide_for_80_columns_whole(tmp_path):
    data = classes_npz(tmp_path, n=40_000, k=12)  # 13,333 test examples: 4-digit counts
    config = small_config(tmp_path, "twelve", data={"name": "npz", "path": str(data)},
                          model={"name": "softmax"}, loss={"name": "cross_entropy", "reduction": "mean"})
    assert gdtrain("run", config, "--quiet").code == 0
    result = gdtrain("eval", tmp_path / "runs" / "twelve", COLUMNS="80")
    assert result.code == 0, result.text
    out = result.out.decode()
    assert "…" not in out, out
    table = out[out.index("confusion matrix"):].splitlines()
    assert max(len(line) for line in table) > 80  # 12 classes: wider than the console, not cut to fit
    scored = json.loads(gdtrain("eval", tmp_path / "runs" / "twelve", "--json").out)
    _assert_same_figures(_confusion_rows(out, 12), scored)


def test_run_summary_fits_80_columns_and_names_its_losses(tmp_path):
    result = gdtrain("run", SOFTMAX, "--set", f"run.dir={tmp_path}", "--set", "train.steps=300",
                     COLUMNS="80")
    assert result.code == 0, result.text
    out = result.out.decode()
    summary = out[out.index("┌"):]
    assert "…" not in summary and max(len(line) for line in summary.splitlines()) <= 80, summary
    run_dir = tmp_path / "mnist_softmax"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in records if r["event"] == "train"][-1]
    scored = json.loads(gdtrain("eval", run_dir, "--json").out)
    # the last batch's loss is a sum over the batch here (reduction: sum); eval's is the mean
    assert f"│ last batch loss │ {last_train['loss']:.4f} (sum over 100 examples) " in summary, summary
    assert f"│ test loss       │ {scored['loss']:.4f} (mean per example, raw weights) " in summary
    assert f"│ test accuracy   │ {scored['accuracy']:.4f} (raw weights) " in summary
    assert "ckpt-00000300.npz" in summary.replace("│", "").replace("\n", "").replace(" ", "")


def test_run_summary_says_mean_over_outputs_for_an_elementwise_mean(tmp_path):
    data = values_npz(tmp_path, outputs=2)
    config = small_config(tmp_path, "values", data={"name": "npz", "path": str(data)},
                          train={"batch_size": 8, "steps": 10, "log_every": 5})
    result = gdtrain("run", config, COLUMNS="100")
    assert result.code == 0, result.text
    out = result.out.decode()
    assert re.search(r"│ last batch loss │ [\d.]+ \(mean over 8 examples and 2 outputs\)", out), out
    # (no test split in this data: the run evaluates on train)
    assert re.search(r"│ train loss +│ [\d.]+ \(mean per output value, raw weights\)", out), out


# ---------------------------------------------------------------- help


COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_flags_without_a_value_type(command):
    result = gdtrain(*([command] if command else []), "--help", COLUMNS="100")
    assert result.code == 0, result.text
    out = result.out.decode()
    assert "<bool>" not in out, out
    flag = re.search(r"│[ *]*--help +-h +(\S+)", out)
    assert flag and flag.group(1) == "Show", out  # the help text follows the flag directly


def test_help_still_shows_the_type_of_options_that_take_a_value():
    out = gdtrain("eval", "--help", COLUMNS="100").out.decode()
    assert re.search(r"--split +<str> +test, train or validation", out), out
    assert re.search(r"--json +Print the results as JSON", out), out


# ---------------------------------------------------------------- warnings, colours, pipes


def test_a_diverging_run_prints_no_numpy_warning(tmp_path):
    result = gdtrain("run", MLP, "--set", "optimizer.learning_rate=1e4", "--set", "train.steps=30",
                     "--set", f"run.dir={tmp_path}")
    assert result.code == 3, result.text
    err = result.err.decode()
    assert "training diverged" in err
    assert "RuntimeWarning" not in err and "Warning" not in err, err


def _every_kind_of_output(tmp_path: Path, call) -> list[Result]:
    config = small_config(tmp_path, "small", train={"steps": 3000, "log_every": 1000, "eval_every": 1500})
    run_dir = tmp_path / "runs" / "small"
    return [call("run", config), call("eval", run_dir), call("runs", tmp_path / "runs"),
            call("verify", run_dir), call("plan", config), call("gradcheck", config),
            call("components", "schedule"), call("--help"), call("run", "--help"),
            call("eval", tmp_path / "missing"), call("run")]


def test_no_color_prints_no_escape_sequence_on_a_terminal(tmp_path):
    plain = _every_kind_of_output(tmp_path, lambda *a: gdtrain_on_terminal(*a, NO_COLOR="1"))
    for result in plain:
        assert b"\x1b" not in result.out, result.out[:2000]
    assert plain[0].code == 0 and b"loss curve" in plain[0].out, plain[0].text
    # the same terminal without NO_COLOR does get styles: the check above can see them
    styled = gdtrain_on_terminal("eval", tmp_path / "runs" / "small")
    assert b"\x1b[" in styled.out, styled.out


def test_piped_output_has_no_escape_sequence_or_progress_bar(tmp_path):
    results = _every_kind_of_output(tmp_path, gdtrain)
    assert results[0].code == 0 and b"loss curve" in results[0].out, results[0].text
    assert [r.code for r in results[-2:]] == [2, 2]
    for result in results:
        assert b"\x1b" not in result.out + result.err, result.text
        assert b"\r" not in result.out + result.err, result.text
        assert_no_traceback(result)
    # on a terminal the same run draws its progress bar (and rich its styles)
    terminal = gdtrain_on_terminal("run", tmp_path / "small.yaml", "--restart")
    assert terminal.code == 0 and b"step/s" in terminal.out and b"\r" in terminal.out.replace(b"\r\n", b"")
