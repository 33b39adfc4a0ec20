"""`gdtrain eval RUN --watch`, the TF1 evaluator pattern: score each checkpoint as it
appears, survive checkpoints deleted or half-written under it, stop when the run does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from resume_helpers import make_config, run, write_yaml

from gdtrain.run import checkpoint, inspect_run
from gdtrain.run.inspect_run import WatchTimeout, watch

EVERY_FIVE = {"train": {"checkpoint_every": 5, "keep_checkpoints": 10, "log_every": 0}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 30-step run holding checkpoints 5, 10, …, 30."""
    root = tmp_path_factory.mktemp("watch")
    run(make_config(root, "ref", EVERY_FIVE))
    return root / "ref"


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "ref"))


def _set_status(run_dir: Path, status: str, pid: int) -> None:
    (run_dir / "status.json").write_text(json.dumps({"status": status, "pid": pid}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_watch_scores_every_checkpoint_of_a_finished_run_then_stops(finished, cli):
    code, out, err = cli("eval", finished, "--watch", "--json", "--interval", "0.01")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["step"] for r in results] == [5, 10, 15, 20, 25, 30]
    assert {r["weights"] for r in results} == {"ema"}  # EMA weights by default
    code, single, _ = cli("eval", finished, "--json")
    assert json.loads(single)["loss"] == results[-1]["loss"]
    code, text, _ = cli("eval", finished, "--watch", "--weights", "raw", "--interval", "0.01")
    assert code == 0 and len(text.splitlines()) == 6 and "(raw weights)" in text
    # given the checkpoints folder rather than the run, it still sees the run has finished
    assert [r["step"] for r in watch(finished / "checkpoints", sleep=pytest.fail)] == [5, 10, 15, 20, 25, 30]


def test_watch_survives_checkpoints_deleted_or_half_written_under_it(finished, tmp_path, monkeypatch):
    run_dir = _copy(finished, tmp_path)
    ckpts = run_dir / "checkpoints"
    _set_status(run_dir, "running", os.getpid())  # a live writer
    whole = (ckpts / "ckpt-00000010.npz").read_bytes()
    (ckpts / "ckpt-00000010.npz").write_bytes(whole[: len(whole) // 3])  # being written by hand
    real_load = checkpoint.load

    def load_after_prune(path, *args, **kwargs):  # the trainer prunes ckpt-15 just as we read it
        if Path(path).name == "ckpt-00000015.npz":
            Path(path).unlink(missing_ok=True)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load", load_after_prune)
    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            (ckpts / "ckpt-00000010.npz").write_bytes(whole)  # the copy completes
        else:
            _set_status(run_dir, "finished", os.getpid())

    warnings: list[str] = []
    steps = [r["step"] for r in watch(run_dir, interval=0.5, warn=warnings.append, sleep=sleep)]
    assert steps == [5, 20, 25, 30, 10]
    assert len(polls) == 2
    assert warnings == ["ckpt-00000015.npz was deleted before it could be evaluated; skipped"]


def test_watch_gives_up_on_a_checkpoint_that_stays_damaged(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    (run_dir / "checkpoints" / "ckpt-00000020.npz").write_bytes(b"PK\x03\x04 not a checkpoint")
    warnings: list[str] = []
    sleeps: list[float] = []
    steps = [r["step"] for r in watch(run_dir, interval=1, warn=warnings.append, sleep=sleeps.append)]
    assert steps == [5, 10, 15, 25, 30]
    assert len(sleeps) == inspect_run.ATTEMPTS - 1
    assert len(warnings) == 1 and "skipped ckpt-00000020.npz" in warnings[0]


def test_watch_stops_when_the_writer_died_without_a_word(finished, tmp_path):
    """kill -9 leaves status 'running': a writer pid that no longer exists ends the watch."""
    run_dir = _copy(finished, tmp_path)
    _set_status(run_dir, "running", _dead_pid())
    sleeps: list[float] = []
    assert [r["step"] for r in watch(run_dir, sleep=sleeps.append)] == [5, 10, 15, 20, 25, 30]
    assert sleeps == []


def test_watch_times_out_waiting_for_checkpoints(tmp_path, finished, cli):
    run_dir = tmp_path / "pending"
    run_dir.mkdir()
    _set_status(run_dir, "running", os.getpid())
    code, _, err = cli("eval", run_dir, "--watch", "--timeout", "0.2", "--interval", "0.05")
    assert code == 2 and "no checkpoint to evaluate appeared within 0.2s" in err
    # with something scored before the wait, giving up is not an error
    live = _copy(finished, tmp_path)
    _set_status(live, "running", os.getpid())
    code, out, err = cli("eval", live, "--watch", "--timeout", "0.2", "--interval", "0.05")
    assert code == 0 and len(out.splitlines()) == 6 and "stopped watching" in err
    clock = iter(range(100))
    with pytest.raises(WatchTimeout):
        list(watch(run_dir, timeout=3, sleep=lambda s: None, clock=lambda: next(clock)))


def test_watch_follows_a_live_training_run(tmp_path):
    """A real `gdtrain run` in another process, saving every 100 steps and keeping only
    two: the watcher scores what it can catch, in order, including the last, and stops."""
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "live",
                        {"train": {"steps": 2000, "checkpoint_every": 100, "keep_checkpoints": 2,
                                   "log_every": 0}})
    proc = subprocess.Popen([sys.executable, "-m", "gdtrain", "run", str(config), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        results = list(watch(tmp_path / "runs" / "live", interval=0.01, timeout=120))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    steps = [r["step"] for r in results]
    assert steps and steps[-1] == 2000 and steps == sorted(set(steps))


def test_watch_options_are_checked(finished, cli):
    code, _, err = cli("eval", finished, "--timeout", "5")
    assert code == 2 and "--timeout goes with --watch" in err
    code, _, err = cli("eval", finished / "checkpoints" / "ckpt-00000005.npz", "--watch")
    assert code == 2 and "give the run directory" in err
