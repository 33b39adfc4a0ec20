"""Questions asked of a finished (or running) run: its config, its weights, its scores,
and the TF1 evaluator pattern: watch a training run and score each checkpoint it saves."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..config.identity import canonical, config_hash
from ..config.validate import resolve
from ..core import compute, fpenv
from ..core.evaluate import evaluate
from ..core.train import Trainer
from ..data import load_dataset
from ..errors import CheckpointError, ConfigError
from . import checkpoint
from .npz import read_npz
from .rundir import RunDir


class TrainerCache:
    """Trainers (and the datasets under them) already built, so that a watcher scoring
    checkpoint after checkpoint of one run loads MNIST once, not once per checkpoint."""

    def __init__(self):
        self.datasets: dict[str, object] = {}
        self.trainers: dict[str, Trainer] = {}

    def trainer(self, config: dict) -> Trainer:
        key = config_hash(config)
        if key not in self.trainers:
            data_key = canonical({"data": config["data"], "dtype": config["run"]["dtype"]})
            if data_key not in self.datasets:
                self.datasets[data_key] = load_dataset(config["data"], config["run"]["dtype"])
            self.trainers[key] = Trainer(config, self.datasets[data_key], read_arrays=read_npz)
        return self.trainers[key]


def load_trainer(target: str | Path, cache: TrainerCache | None = None, which: str | int | None = None):
    """(trainer with the checkpoint's state, checkpoint path, meta) for a run or checkpoint;
    `which` picks the run's checkpoint: latest (default), best or a step (checkpoint.select).

    The file is read once and verified (every array's sha256); `Trainer.load_state`
    then checks that it holds every array the stored config needs, at the right shape.
    """
    path = checkpoint.select(target, which)
    arrays, meta = checkpoint.load(path)
    saved = checkpoint.saved_config(path, meta)
    try:
        config = resolve(saved, str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: the config stored in it is invalid: {exc}") from None
    trainer = (cache or TrainerCache()).trainer(config)
    try:
        trainer.load_state(arrays, int(meta["step"]))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return trainer, path, meta


def evaluate_checkpoint(target: str | Path, split: str = "test", weights: str = "ema",
                        cache: TrainerCache | None = None, which: str | int | None = None) -> dict:
    trainer, path, meta = load_trainer(target, cache, which)
    ds = trainer.dataset
    split, chosen, note = ds.split_or_train(split, f"--split {split}")
    used = trainer.weights_used(weights)
    # run.threads holds here too: `eval --watch` beside a training run shares its cores
    run = trainer.config["run"]
    with compute.threads(run.get("threads")), fpenv.flushed(run.get("flush_subnormals", False)):
        result = evaluate(trainer.model, trainer.loss, trainer.eval_params(used), chosen, ds.num_classes)
    out = {"checkpoint": str(path), "step": int(meta["step"]), "split": split, "weights": used,
           **result}
    out.update(trainer.penalty_terms(trainer.eval_params(used)))  # each under its label, as in training
    if note:
        out["note"] = note
    return out


# ---------------------------------------------------------------- continuous evaluation

# What status.json says once nothing more will be saved (until someone resumes).
STOPPED = ("finished", "stopped", "interrupted", "diverged", "failed")
# Polls a checkpoint that fails to load gets before it is given up on: a file being
# copied in by hand completes within that; a damaged one never does.
ATTEMPTS = 3


class WatchTimeout(Exception):
    """No new checkpoint appeared within the watcher's timeout."""

    def __init__(self, seconds: float, evaluated: int):
        super().__init__(f"no new checkpoint for {seconds:g}s")
        self.seconds, self.evaluated = seconds, evaluated


def watch(run: str | Path, split: str = "test", weights: str = "ema", timeout: float | None = None,
          interval: float = 2.0, warn: Callable[[str], None] = lambda text: None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> Iterator[dict]:
    """Score each checkpoint of a run as it appears, oldest first; stop when the run has.

    The TF1 evaluator pattern. It never writes into the run directory and never takes
    its lock. A checkpoint deleted (pruned) before it is read is skipped with a warning;
    one that fails to load is retried on the next polls and given up after ATTEMPTS.
    The watch ends once status.json says the run stopped (finished, stopped early,
    interrupted, diverged, failed), or says running for a process that no longer exists (kill -9),
    and every checkpoint then present has been dealt with. `timeout`: seconds without
    a new checkpoint after which WatchTimeout is raised.
    """
    run = Path(run)
    if run.is_file():
        raise ConfigError(f"--watch: {run} is a file; give the run directory")
    if run.name == "checkpoints" and (run.parent / "status.json").exists():
        run = run.parent  # given RUN/checkpoints: the status that ends the watch is in RUN
    rd = RunDir(run)
    cache = TrainerCache()
    done: set[str] = set()
    failures: dict[str, int] = {}
    evaluated = 0
    last_progress = clock()
    while True:
        # status before listing: a run that says it stopped has all its checkpoints on disk
        status = rd.read_status().get("status")
        stopped = status in STOPPED or (status == "running" and not rd.writer_alive())
        directory = rd.checkpoints if rd.checkpoints.is_dir() else run
        waiting = False
        for path in checkpoint.list_checkpoints(directory):
            if path.name in done:
                continue
            try:
                result = evaluate_checkpoint(path, split, weights, cache)
            except CheckpointError as exc:
                if not path.exists():
                    done.add(path.name)
                    warn(f"{path.name} was deleted before it could be evaluated; skipped")
                    continue
                failures[path.name] = failures.get(path.name, 0) + 1
                if failures[path.name] >= ATTEMPTS:
                    done.add(path.name)
                    warn(f"skipped {path.name} after {ATTEMPTS} attempts: {exc}")
                else:
                    waiting = True  # half-written or being replaced: try again next poll
                continue
            done.add(path.name)
            evaluated += 1
            last_progress = clock()
            yield result
        if stopped and not waiting:
            return
        if timeout is not None and clock() - last_progress >= timeout:
            raise WatchTimeout(timeout, evaluated)
        sleep(interval)
