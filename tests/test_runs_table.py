"""`gdtrain runs`: one row per run directory, with the status each really has."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from tool_runs import SignalAt, classifier, config, run, run_dir

from gdtrain.errors import DataError, DivergedError, Interrupted
from gdtrain.run.hooks import Reporter
from gdtrain.run.rundir import RunDir
from gdtrain.run.runs_table import describe, table


class FailAt(Reporter):
    def __init__(self, step: int):
        self.at = step

    def step(self, result) -> None:
        if result.step == self.at:
            raise DataError("the disk went away")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def runs_dir(tmp_path):
    """finished, interrupted (SIGINT), diverged, failed and stale-running runs side by side."""
    run(classifier(tmp_path, "finished"))
    with pytest.raises(Interrupted):
        run(config(tmp_path, "interrupted", train={"checkpoint_every": 0}), SignalAt(7))
    with pytest.raises(DivergedError):
        run(config(tmp_path, "diverged", optimizer={"name": "sgd", "learning_rate": 1e30}))
    with pytest.raises(DataError):
        run(config(tmp_path, "failed"), FailAt(3))
    # a run killed with SIGKILL: status.json still says running, its process is gone
    stale = config(tmp_path, "killed")
    run(stale)
    rd = RunDir(run_dir(stale))
    status = rd.read_status()
    status.update(status="running", pid=_dead_pid(), step=10)
    rd.status_file.write_text(json.dumps(status))
    return tmp_path / "runs"


def test_statuses_steps_and_figures(runs_dir):
    rows = {r["name"]: r for r in table(runs_dir)}
    assert sorted(rows) == ["diverged", "failed", "finished", "interrupted", "killed"]
    assert {n: r["status"] for n, r in rows.items()} == {
        "diverged": "diverged", "failed": "failed", "finished": "finished",
        "interrupted": "interrupted", "killed": "interrupted",
    }
    assert rows["interrupted"]["note"] == "SIGINT"
    assert (rows["interrupted"]["step"], rows["interrupted"]["checkpoint_step"]) == (7, 7)
    assert rows["interrupted"]["total_steps"] == 20
    assert "process gone" in rows["killed"]["note"]
    assert "diverged" in rows["diverged"]["note"]
    assert rows["failed"]["note"] == "the disk went away"

    # last and best come from the metrics log: the classifier evaluates at 10, 20 and 30
    finished = rows["finished"]
    records = RunDir(runs_dir / "finished").read_metrics()
    evals = [r for r in records if r["event"] == "eval"]
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert finished["metric"] == "accuracy" and finished["split"] == "test"
    assert finished["last_eval"] == evals[-1]["accuracy"]
    assert finished["best_eval"] == max(r["accuracy"] for r in evals)
    assert finished["last_loss"] == train[-1]["loss"]
    assert (finished["step"], finished["total_steps"]) == (30, 30)
    assert finished["wall_seconds"] > 0 and finished["updated"] > 0
    # regression runs are judged by MSE, and the best MSE is the smallest
    assert rows["killed"]["metric"] == "mse"


def test_running_only_while_the_lock_is_held(tmp_path):
    raw = config(tmp_path, "live")
    run(raw)
    rd = RunDir(run_dir(raw))
    rd.lock()  # this process now holds the lock, as a trainer would
    try:
        rd.set_status("running", step=3, total_steps=20)
        assert describe(rd.path)["status"] == "running"
    finally:
        rd.unlock()
    # same status, same (living) pid, but nobody holds the lock any more
    assert describe(rd.path)["status"] == "interrupted"


def test_cli_table_and_json(runs_dir, cli):
    code, out, err = cli("runs", runs_dir, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["diverged", "failed", "finished", "interrupted", "killed"]
    code, out, err = cli("runs", runs_dir)
    assert code == 0, err
    lines = out.splitlines()
    for name, status in (("finished", "finished"), ("diverged", "diverged"), ("killed", "interrupted")):
        assert any(line.split()[0] == name and status in line for line in lines if line.strip()), out
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_one_run_directory_and_errors(runs_dir, cli, tmp_path):
    code, out, _ = cli("runs", runs_dir / "finished", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["finished"]
    code, _, err = cli("runs", tmp_path / "nowhere")
    assert code == 2 and "no such directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = cli("runs", empty)
    assert code == 0 and "no runs" in err


def test_without_a_runs_directory_the_default_lists_no_runs_yet(tmp_path, cli, monkeypatch):
    """A fresh checkout before any run (or runs/ removed): nothing to list is not an error.
    A directory named explicitly that does not exist still is (a typo, most likely)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("runs")
    assert code == 0, err
    assert re.findall(r"\w+", out)[:2] == ["run", "status"] and "no runs yet" in err  # the header
    code, out, err = cli("runs", "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = cli("runs", "runs")
    assert code == 2 and "runs: no such directory" in err
