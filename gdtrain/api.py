"""gdtrain from Python: the functions a notebook (and `gdtrain sweep`) calls.

    from gdtrain import api
    config = api.load_config("configs/mnist_softmax.yaml", {"optimizer.learning_rate": 0.1})
    summary = api.train(config, on_metrics=print)
    api.evaluate(summary["run_dir"])["accuracy"]
    api.read_metrics(summary["run_dir"])

Everything here is what the commands do, without printing: `train` is `gdtrain run` (it
resumes a run that has checkpoints), `evaluate` is `gdtrain eval`. Errors are the
exceptions of gdtrain.errors (ConfigError, DataError, DivergedError, ...), each with the
one-line message the command line would print.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .run.hooks import Reporter
from .run.loop import RunOptions


def load_config(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> dict:
    """Read, override, validate and resolve a config file, every default filled in.

    `overrides` are dotted keys, as `--set` takes them: a mapping of Python values
    ({"optimizer.learning_rate": 0.1, "train.trainable": ["W"]}) or a list of
    "key=YAML value" strings (["optimizer.learning_rate=0.1"]).
    """
    from .config.loading import load

    return load(path, as_set_options(overrides))


def as_set_options(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """`--set` strings for overrides given as a mapping of values or as strings already."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # JSON is YAML: a value written as JSON reads back as the same value
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


class _Callback(Reporter):
    """Forwards the loop's log and evaluation records to a function; keeps its warnings."""

    def __init__(self, on_metrics: Callable[[dict], None] | None):
        self.on_metrics = on_metrics
        self.warnings: list[str] = []

    def log(self, record: dict) -> None:
        if self.on_metrics is not None:
            self.on_metrics(record)

    evaluation = log

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def train(config: dict, *, on_metrics: Callable[[dict], None] | None = None, restart: bool = False,
          allow_config_change: bool = False, stop_at: int | None = None, stopped_by: str = "stop_at",
          reporter: Reporter | None = None, dataset=None) -> dict:
    """Train (or resume) the run a resolved config describes; return its summary.

    `on_metrics(record)` is called with each record the run writes to metrics.jsonl: the
    training log lines ({"event": "train", "step", "loss", "lr", ...}) and evaluations
    ({"event": "eval", "step", "loss", "accuracy" or "mse", ...}). `stop_at` stops the
    run at that step (saved, status "stopped", `stopped_by` recorded) without changing
    train.steps; training it again resumes. `reporter` replaces the callback with a whole
    run.hooks.Reporter. Called from the main thread, SIGINT/SIGTERM save and stop the run
    (raising errors.Interrupted); from any other thread (a notebook's worker, a Ray
    actor) no signal handlers are installed.

    The summary holds "status" (finished or stopped), "steps", "eval" (the final
    evaluation), "run_dir", "checkpoint", timings and "trainer" (the in-memory state).
    """
    from .run.loop import train as run_training

    callback = _Callback(on_metrics)
    opts = RunOptions(restart=restart, allow_config_change=allow_config_change,
                      handle_signals=threading.current_thread() is threading.main_thread(),
                      stop_at=stop_at, stopped_by=stopped_by)
    summary = run_training(config, reporter or callback, opts, dataset)
    summary.setdefault("warnings", callback.warnings)
    return summary


def evaluate(target: str | Path, split: str = "test", weights: str = "ema") -> dict:
    """Score a run's newest checkpoint (or a checkpoint file): loss, accuracy or MSE,
    per-class accuracy and confusion matrix, as `gdtrain eval --json` prints them."""
    from .core.train import WEIGHTS
    from .errors import ConfigError
    from .run.inspect_run import evaluate_checkpoint

    if weights not in WEIGHTS:
        raise ConfigError(f"weights: expected one of {', '.join(WEIGHTS)}, got {weights!r}")
    return evaluate_checkpoint(target, split, weights)


def read_metrics(run: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl, oldest first (see `train`'s on_metrics)."""
    from .run.rundir import RunDir

    return RunDir(run).read_metrics()


def run_status(run: str | Path) -> dict:
    """One run as `gdtrain runs` shows it: status, step, last and best evaluation, wall time."""
    from .run.runs_table import describe

    return describe(run)


def sweep(path: str | Path, *, workers: int | None = None, backend: str = "local",
          address: str | None = None, on_update: Callable[[dict], None] | None = None) -> dict:
    """Run a sweep file (`gdtrain sweep`) and return what sweep.json holds: the trials
    and the groups of trials that differ only in their seed, best first.

    `on_update(trial_state)` is called whenever a trial's state changes.
    """
    from .sweep.driver import run_sweep
    from .sweep.spec import load_sweep

    return run_sweep(load_sweep(path), workers=workers, backend=backend, address=address,
                     on_update=on_update)
