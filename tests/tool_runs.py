"""Small runs for the inspection-tool tests: configs, data files and finished run directories.

Everything is written under the test's tmp_path; runs train in-process through
run.loop.train, in a second or less each. `SMALL` and `merged` are also the base config
and the merge of conftest, test_bad_input, test_config_fuzz and resume_helpers.
"""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import numpy as np
import yaml

from gdtrain.config.validate import resolve
from gdtrain.run.hooks import Reporter
from gdtrain.run.loop import RunOptions, train

# A small generator-backed config: fast, real-valued targets, every section plain.
SMALL = {
    "run": {"name": "small", "seed": 0},
    "data": {"name": "linear_sum", "samples": 32},
    "model": {"name": "linear"},
    "loss": {"name": "mse", "reduction": "mean"},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "train": {"batch_size": 8, "steps": 20, "log_every": 0},
}


def merged(base: dict, changes: dict, _top: bool = True) -> dict:
    """A deep copy of `base` with `changes` merged in, dict into dict at every depth.

    A None value deletes the key. A dict naming a different component ("name": adam where
    base has sgd) replaces the old one instead of merging: sgd's options mean nothing to
    adam. The top-level run section always merges: its name is the run's, not a component.
    """
    out = copy.deepcopy(base)
    for key, value in changes.items():
        old = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(old, dict) and (
            (_top and key == "run") or value.get("name", old.get("name")) == old.get("name")
        ):
            out[key] = merged(old, value, _top=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def classes_npz(directory: Path, n: int = 60, k: int = 3, d: int = 2, seed: int = 0) -> Path:
    """Blobs of `k` classes in `d` features: x float, y integer labels (an npz dataset)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = np.arange(n) % k
    x = centers[y] + rng.normal(0, 1, (n, d))
    path = directory / f"classes{k}x{d}.npz"
    np.savez(path, x=x, y=y, x_test=x[: n // 3] + 0.1, y_test=y[: n // 3])
    return path


def values_npz(directory: Path, n: int = 40, d: int = 3, outputs: int = 2, seed: int = 1) -> Path:
    """Real-valued targets: y = x·A + noise, (n, outputs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, d))
    y = x @ rng.normal(0, 1, (d, outputs)) + 0.1 * rng.normal(0, 1, (n, outputs))
    path = directory / f"values{d}to{outputs}.npz"
    np.savez(path, x=x, y=y)
    return path


def config(tmp_path: Path, name: str = "small", **sections) -> dict:
    """A raw config: SMALL (linear regression on linear_sum) logging every 5 steps into
    tmp_path/runs/name, with `sections` merged in (see `merged`)."""
    raw = merged(SMALL, {"run": {"name": name, "dir": str(tmp_path / "runs")}, "train": {"log_every": 5}})
    return merged(raw, sections)


def classifier(tmp_path: Path, name: str = "clf", **sections) -> dict:
    """Softmax regression on 3 blobs in two features, with EMA and evaluations."""
    data = {"name": "npz", "path": str(classes_npz(tmp_path))}
    base = {"data": data, "model": {"name": "softmax"}, "loss": {"name": "cross_entropy"},
            "optimizer": {"name": "sgd", "learning_rate": 0.5}, "ema": {"decay": 0.9},
            "train": {"batch_size": 10, "steps": 30, "log_every": 5, "eval_every": 10}}
    return merged(config(tmp_path, name, **base), sections)


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(raw: dict, reporter: Reporter | None = None) -> dict:
    """Train a raw config to the end (or to the exception it raises)."""
    return train(resolve(copy.deepcopy(raw)), reporter, RunOptions())


def run_dir(raw: dict) -> Path:
    return Path(raw["run"]["dir"]) / raw["run"]["name"]


class SignalAt(Reporter):
    """Sends this process SIGINT after update `step`: the runner's own handler catches it."""

    def __init__(self, step: int):
        self.at = step

    def step(self, result) -> None:
        if result.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)
