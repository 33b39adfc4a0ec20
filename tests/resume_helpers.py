"""Shared by the resume, fault, signal and watch tests: a small run that exercises every
piece of state a resume must restore, and ways to compare runs bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from tool_runs import merged

from gdtrain.config.validate import resolve
from gdtrain.run import checkpoint
from gdtrain.run.hooks import Reporter
from gdtrain.run.loop import RunOptions, train

# 100 examples in batches of 8: 12.5 steps per epoch, so 30 steps cross two epoch
# boundaries, both in the middle of a batch. Shuffling on; momentum slots; a staircase
# schedule that drops at each epoch; L2 on the weights; EMA with num_updates.
RESUME_RAW = {
    "run": {"name": "ref", "seed": 7},
    "data": {"name": "linear_sum", "samples": 100},
    "model": {"name": "mlp", "hidden": 4, "activation": "tanh"},
    "loss": {"name": "mse"},
    "optimizer": {"name": "momentum", "learning_rate": 0.2, "momentum": 0.9},
    "schedule": {"name": "exponential", "decay_rate": 0.5, "decay_steps": "epoch", "staircase": True},
    "l2": {"scale": 0.01},
    "ema": {"decay": 0.9, "num_updates": True},
    "train": {"batch_size": 8, "steps": 30, "log_every": 1, "checkpoint_every": 1,
              "keep_checkpoints": 100},
}

QUIET = RunOptions(handle_signals=False)


def make_config(run_root: Path, name: str = "ref", changes: dict | None = None) -> dict:
    """The resolved RESUME_RAW config (plus changes) writing into run_root/name."""
    raw = merged(RESUME_RAW, {"run": {"name": name, "dir": str(run_root)}, **(changes or {})})
    return resolve(raw)


def write_yaml(path: Path, run_root: Path, name: str, changes: dict | None = None) -> Path:
    raw = merged(RESUME_RAW, {"run": {"name": name, "dir": str(run_root)}, **(changes or {})})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Recorder(Reporter):
    """Keeps warnings and messages so that tests can assert on them."""

    def __init__(self):
        self.warnings: list[str] = []
        self.messages: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def message(self, text: str) -> None:
        self.messages.append(text)


def run(config: dict, reporter: Reporter | None = None, opts: RunOptions = QUIET) -> dict:
    return train(config, reporter or Recorder(), opts)


def checkpoint_arrays(run_dir: Path, step: int | None = None) -> dict[str, np.ndarray]:
    """Verified arrays of checkpoint `step` (default: the newest) of a run."""
    found = checkpoint.list_checkpoints(Path(run_dir) / "checkpoints")
    path = found[-1] if step is None else Path(run_dir) / "checkpoints" / checkpoint.checkpoint_name(step)
    arrays, _ = checkpoint.load(path)
    return arrays


def assert_same_state(actual: dict, expected: dict, context: str = "") -> None:
    """Same array names, dtypes and bits: params, optimizer slots and EMA shadows."""
    assert sorted(actual) == sorted(expected), context
    for name in expected:
        a, e = actual[name], expected[name]
        assert a.dtype == e.dtype and a.shape == e.shape, f"{context} {name}"
        assert a.tobytes() == e.tobytes(), f"{context}: {name} differs from the uninterrupted run"


def cut_back(source: Path, target: Path, step: int) -> Path:
    """A copy of run `source` as a crash right after checkpoint `step` would leave it:
    later checkpoints gone, the pointer on `step`, the log still holding later steps."""
    shutil.copytree(source, target)
    ckpts = target / "checkpoints"
    for p in checkpoint.list_checkpoints(ckpts):
        if checkpoint.step_of(p) > step:
            p.unlink()
    (ckpts / checkpoint.POINTER).write_text(checkpoint.checkpoint_name(step) + "\n")
    return target


def train_records(run_dir: Path) -> list[tuple]:
    """(step, loss, lr, l2) of each training log line: what must match across resumes."""
    import json

    out = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "train":
            out.append((r["step"], r["loss"], r["lr"], r["l2"]))
    return out
