"""SIGINT and SIGTERM: finish the step, save, exit 130/143 with a one-line message on
how to resume; the resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from file_faults import inject
from resume_helpers import (
    Recorder,
    assert_same_state,
    checkpoint_arrays,
    make_config,
    run,
    write_yaml,
)

from gdtrain.errors import Interrupted
from gdtrain.run import checkpoint
from gdtrain.run.loop import RunOptions, train

# Far more steps than the test lets it run: the signal always lands mid-run.
ENDLESS = {"train": {"steps": 1_000_000, "log_every": 50, "checkpoint_every": 0}}
MORE = 40  # steps the resumed run adds after the interruption


def _wait_for_progress(proc: subprocess.Popen, metrics: Path, lines: int = 2) -> None:
    deadline = time.monotonic() + 120  # only so that a broken build cannot hang the suite
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gdtrain run exited early with {proc.returncode}: {proc.stderr.read()}")
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            return
        time.sleep(0.02)
    pytest.fail("gdtrain run made no progress")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_real_run_saves_exits_and_resumes_exactly(tmp_path, sig, code):
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "sig", ENDLESS)
    run_dir = tmp_path / "runs" / "sig"
    gdtrain = [sys.executable, "-m", "gdtrain", "run", str(config), "-q"]
    proc = subprocess.Popen(gdtrain, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_progress(proc, run_dir / "metrics.jsonl")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "run the same command again to resume" in lines[0] and sig.name in lines[0]
    step = int(re.search(r"at step (\d+)/1000000", lines[0]).group(1))
    assert step >= 100  # it stopped where it was, after the logged progress
    ckpts = run_dir / "checkpoints"
    assert checkpoint.read_pointer(ckpts) == checkpoint.checkpoint_name(step)
    _, meta = checkpoint.load(ckpts / checkpoint.checkpoint_name(step))
    assert meta["step"] == step
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == sig.name and status["step"] == step

    # resume (running to a nearer end, an allowed change) and compare with a run never stopped
    end = step + MORE
    resumed = subprocess.run(gdtrain + ["--set", f"train.steps={end}"], capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {end}" in resumed.stdout
    straight = run(make_config(tmp_path / "straight", "sig", {"train": {**ENDLESS["train"], "steps": end}}))
    assert_same_state(checkpoint_arrays(run_dir), straight["trainer"].state_arrays(), sig.name)
    assert checkpoint.list_checkpoints(ckpts)[-1].name == checkpoint.checkpoint_name(end)


class _SignalAtStep(Recorder):
    """Sends SIGINT to this process after update `at`, as a Ctrl-C in a terminal would."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def step(self, result) -> None:
        if result.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_more_signals_while_saving_change_nothing(tmp_path, monkeypatch):
    """Ctrl-C, then Ctrl-C and SIGTERM again at every file operation of the save it
    triggers: the save completes, the first signal decides the exit code, the handlers
    are put back, and the resume ends bit-identical."""
    cfg = {"train": {"checkpoint_every": 0, "log_every": 0}}
    reference = run(make_config(tmp_path / "straight", "ref", cfg))["trainer"].state_arrays()
    ops = []

    def more_signals(op: str) -> None:
        ops.append(op)
        os.kill(os.getpid(), signal.SIGINT if len(ops) % 2 else signal.SIGTERM)

    stop = inject(more_signals, monkeypatch)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        train(make_config(tmp_path, "ref", cfg), _SignalAtStep(7), RunOptions(handle_signals=True))
    stop()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert info.value.exit_code == 130 and "SIGINT at step 7/30" in str(info.value)
    assert "rename checkpoint" in ops and "rename pointer" in ops  # signalled all through the save
    ckpts = tmp_path / "ref" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt-00000007.npz", "latest"]  # no temporaries
    checkpoint.load(ckpts / "ckpt-00000007.npz")
    summary = run(make_config(tmp_path, "ref", cfg))
    assert summary["resumed_from"] == 7
    assert_same_state(summary["trainer"].state_arrays(), reference)
