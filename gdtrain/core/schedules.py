"""Learning-rate schedules: each factory returns a function `step -> learning rate`.

`step` counts the updates already done (TF1's global_step), so update k (0-based)
uses lr(k). A factory receives the optimizer's `learning_rate` and the number of
steps per epoch (for `decay_steps: epoch`) from gdtrain, and is validated when it is
built. Every schedule also takes `warmup_steps` (a common option of the table, applied
by `warmup`): a linear ramp lr(k)·(k+1)/warmup_steps over the first warmup_steps updates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from .registry import Fraction, NonNegative, NonNegativeInt, Registry

Schedule = Callable[[int], float]


def warmup(schedule: Schedule, warmup_steps: int) -> Schedule:
    """Linear warm-up: update k < warmup_steps uses schedule(k)·(k+1)/warmup_steps."""
    if warmup_steps <= 0:
        return schedule

    def lr(step: int) -> float:
        base = schedule(step)
        return base * (step + 1) / warmup_steps if step < warmup_steps else base

    return lr


COMMON_OPTIONS = {"warmup_steps": (NonNegativeInt, 0, "linear warm-up over this many first steps")}

SCHEDULES = Registry("schedule", injected=("learning_rate", "steps_per_epoch", "total_steps"),
                     common=COMMON_OPTIONS, wrap=warmup)


def _steps(value: float | str, steps_per_epoch: float, name: str) -> float:
    """A step count given as a number, 'epoch' or 'N epochs'."""
    if isinstance(value, str):
        words = value.split()
        if words == ["epoch"]:
            return steps_per_epoch
        count = None
        if len(words) == 2 and words[1] in ("epoch", "epochs"):
            try:
                count = float(words[0])
            except ValueError:
                pass
        # '0 epochs', '-1 epochs', 'nan epochs' would divide by zero or decay backwards later
        if count is None or not (math.isfinite(count) and count > 0):
            raise ValueError(f"{name}: expected a number > 0, 'epoch' or 'N epochs' (N > 0), got {value!r}")
        return count * steps_per_epoch
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be > 0, got {value}")
    return float(value)


@SCHEDULES.register("constant")
def constant(learning_rate: float, steps_per_epoch: float, total_steps: int) -> Schedule:
    """The optimizer's learning_rate at every step."""
    return lambda step: learning_rate


@SCHEDULES.register("exponential")
def exponential(
    learning_rate: float,
    steps_per_epoch: float,
    total_steps: int,
    decay_rate: Fraction = 0.96,
    decay_steps: float | str = "epoch",
    staircase: bool = False,
    min_learning_rate: NonNegative = 0.0,
) -> Schedule:
    """tf.train.exponential_decay: lr · rate^(step / decay_steps), exponent floored with staircase.

    decay_rate: factor per decay_steps, in (0, 1]
    decay_steps: a number of steps, 'epoch' or 'N epochs'
    staircase: decay in whole steps of decay_steps
    min_learning_rate: a floor m (at most learning_rate): the rate is m + (lr - m) · rate^(step /
      decay_steps), from lr down towards m; 0: TF1's form
    """
    period = _steps(decay_steps, steps_per_epoch, "decay_steps")
    if min_learning_rate > learning_rate:
        raise ValueError(f"min_learning_rate: {min_learning_rate:g} is above the optimizer's "
                         f"learning_rate {learning_rate:g}; the rate decays from learning_rate down to it")

    def lr(step: int) -> float:
        exponent = step / period
        if staircase:
            exponent = math.floor(exponent)
        if not min_learning_rate:  # TF1's form, bit for bit
            return learning_rate * decay_rate**exponent
        return min_learning_rate + (learning_rate - min_learning_rate) * decay_rate**exponent

    return lr


@SCHEDULES.register("piecewise_constant")
def piecewise_constant(
    learning_rate: float,
    steps_per_epoch: float,
    total_steps: int,
    boundaries: list[int],
    values: list[float],
) -> Schedule:
    """tf.train.piecewise_constant: values[0] up to and including boundaries[0], then values[1], …

    The values replace the optimizer's learning_rate.
    boundaries: increasing step numbers
    values: one more learning rate than boundaries, each > 0
    """
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"values needs exactly one more entry than boundaries "
            f"(got {len(values)} values, {len(boundaries)} boundaries)"
        )
    if any(b2 <= b1 for b1, b2 in itertools.pairwise(boundaries)):
        raise ValueError(f"boundaries must be strictly increasing, got {boundaries}")
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"values must be finite and > 0, got {values}")

    def lr(step: int) -> float:
        for boundary, value in zip(boundaries, values[:-1], strict=True):
            if step <= boundary:
                return value
        return values[-1]

    return lr


def _without_decay_steps(options: dict) -> bool:
    """A schedule's `spans_run` trait: whether, with these options, its learning rates depend
    on the run's total_steps (decay_steps left at null: the whole run). A resume that
    changes the run's length then changes the schedule (config.drift asks this)."""
    return options.get("decay_steps") is None


@SCHEDULES.register("cosine", spans_run=_without_decay_steps)
def cosine(
    learning_rate: float,
    steps_per_epoch: float,
    total_steps: int,
    decay_steps: float | str | None = None,
    alpha: NonNegative = 0.0,
) -> Schedule:
    """tf.train.cosine_decay: lr · ((1-α)·(1 + cos(π·min(step, D)/D))/2 + α).

    decay_steps: D, a number of steps, 'epoch' or 'N epochs'; default the whole run
    alpha: the floor, as a fraction of learning_rate
    """
    period = total_steps if decay_steps is None else _steps(decay_steps, steps_per_epoch, "decay_steps")
    if alpha > 1:
        raise ValueError(f"alpha must be <= 1, got {alpha}")

    def lr(step: int) -> float:
        progress = min(step, period) / period
        return learning_rate * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)

    return lr


@SCHEDULES.register("linear", spans_run=_without_decay_steps)
def linear(
    learning_rate: float,
    steps_per_epoch: float,
    total_steps: int,
    end_factor: NonNegative = 0.0,
    decay_steps: float | str | None = None,
) -> Schedule:
    """Straight line from learning_rate to learning_rate·end_factor over decay_steps, then flat.

    end_factor: final learning rate as a fraction of the first
    decay_steps: length of the ramp: steps, 'epoch' or 'N epochs'; default the whole run
    """
    period = total_steps if decay_steps is None else _steps(decay_steps, steps_per_epoch, "decay_steps")

    def lr(step: int) -> float:
        t = min(step, period) / period
        return learning_rate * (1 - t + t * end_factor)

    return lr


def build_schedule(
    section: dict | None, learning_rate: float, steps_per_epoch: float, total_steps: int
) -> Schedule:
    """The schedule a resolved config's `schedule` section describes (constant if absent)."""
    options = dict(section or {"name": "constant"})
    name = options.pop("name", "constant")
    return SCHEDULES.build(
        name,
        options,
        "schedule",
        learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
