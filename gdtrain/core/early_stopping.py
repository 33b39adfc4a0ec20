"""Early stopping and the best checkpoint: which evaluations improve, and when to stop.

The rule is Keras's EarlyStopping (keras/src/callbacks/early_stopping.py): each judged
evaluation adds one to `wait`; a value better than the best by more than `min_delta`
(`value - min_delta > best` for max, `value + min_delta < best` for min) becomes the
best and sets `wait` back to 0; otherwise, once `wait >= patience`, training stops. The
first finite value is always an improvement; a non-finite one never is.

Judged evaluations are those of the train.eval_every schedule (steps k·eval_every; the
final evaluation of a run whose length is not a multiple is shown but not judged), so a
run's decisions depend on its eval_every alone, not on where it was cut or resumed.
Unlike Keras (keras#17012), the state (best, its step, wait, stopped) is saved in every
checkpoint's metadata: a resumed run judges exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import CheckpointError, ConfigError

# The direction each metric improves in: early stopping's default mode.
NATURAL_MODE = {"loss": "min", "mse": "min", "accuracy": "max"}


@dataclass
class Tracker:
    metric: str
    mode: str  # "min" or "max"
    patience: int | None  # None: judged for keep_best only, never stops
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    wait: int = 0
    stopped: bool = False

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def judge(self, step: int, value: float) -> bool:
        """Take the evaluation of `step`; return whether it is the new best. Sets `stopped`
        when patience has run out."""
        self.wait += 1
        if self.improves(value):
            self.best, self.best_step, self.wait = float(value), step, 0
            return True
        if self.patience is not None and self.wait >= self.patience:
            self.stopped = True
        return False

    def state(self) -> dict:
        """What a checkpoint saves (JSON: `best` is finite, since only finite values improve)."""
        return {"metric": self.metric, "mode": self.mode, "best": self.best,
                "best_step": self.best_step, "wait": self.wait, "stopped": self.stopped}

    def restore(self, saved, where: str) -> str | None:
        """Continue from a checkpoint's state. Another metric or mode starts afresh (a note
        says so); more patience than the counter reached lifts a stop."""
        if saved is None:
            return None
        if not _valid_state(saved):
            raise CheckpointError(f"{where}: its early-stopping state is malformed: {saved!r:.200}")
        if (saved["metric"], saved["mode"]) != (self.metric, self.mode):
            return (f"the best evaluation is now judged by {self.metric} ({self.mode}), was "
                    f"{saved['metric']} ({saved['mode']}): best value and patience counter start afresh")
        self.best, self.best_step, self.wait = saved["best"], saved["best_step"], saved["wait"]
        self.stopped = bool(saved["stopped"]) and self.patience is not None and self.wait >= self.patience
        return None

    def describe(self) -> str:
        """'test loss 0.1234 at step 40' style: the best so far."""
        if self.best is None:
            return f"no finite {self.metric} yet"
        return f"best {self.metric} {self.best:.6g} at step {self.best_step}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_state(saved) -> bool:
    if not isinstance(saved, dict):
        return False
    best, step, wait = saved.get("best"), saved.get("best_step"), saved.get("wait")
    return (isinstance(saved.get("metric"), str) and saved.get("mode") in ("min", "max")
            and (best is None or (_number(best) and math.isfinite(best)))
            and (step is None or (isinstance(step, int) and not isinstance(step, bool) and step >= 0))
            and isinstance(wait, int) and not isinstance(wait, bool) and wait >= 0
            and isinstance(saved.get("stopped"), bool))


def from_config(train: dict) -> Tracker | None:
    """The tracker a resolved train section asks for: early stopping's, keep_best's, or None."""
    es = train.get("early_stopping")
    if es:
        return Tracker(es["metric"], es["mode"], es["patience"], float(es["min_delta"]))
    if train.get("keep_best"):
        metric = train.get("best_metric") or "loss"
        return Tracker(metric, NATURAL_MODE[metric], None)
    return None


def check_metric(train: dict, loss, loss_name: str, dataset) -> None:
    """ConfigError unless the evaluations report the metric early stopping or keep_best judge by."""
    from .evaluate import reported_metrics

    es = train.get("early_stopping")
    if es:
        key, metric = "train.early_stopping.metric", es["metric"]
    elif train.get("keep_best") and train.get("best_metric"):
        key, metric = "train.best_metric", train["best_metric"]
    else:
        return
    _, split, _ = dataset.split_or_train(train["eval_split"], "train.eval_split")
    reported = reported_metrics(loss, split.y)
    if metric not in reported:
        targets = "class labels" if dataset.has_classes else "real-valued targets"
        raise ConfigError(f"{key}: {metric} is not reported on dataset '{dataset.name}' ({targets}, "
                          f"loss {loss_name}); its evaluations report {', '.join(reported)}")
