"""Gradient clipping, in TF1's exact forms (tensorflow/python/ops/clip_ops.py, TF 1.15).

A clip is a registered factory returning a `Clip`: `clip(grads) -> scalars` clips the
gradients (a dict of named arrays) in place, in the gradients' dtype as TF's kernels
compute, and returns what it measured for the training log (the global norm before
clipping), possibly nothing. It comes in two halves, so that the step (elementwise.py)
can run the clipping itself block by block over views of the gradients: `measure`, the
reduction over the whole gradients a clip needs first (a norm; None for clip_by_value),
and `apply`, the element-wise rest. It runs after the penalties have added their
gradients and before the optimizer: TF1 practice clips the gradient of the whole
objective, `tf.gradients(loss + regularization)` then `clip_by_global_norm`. To add a
clip, write one registered factory here; tests/test_chain.py's tables then ask for its
closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .registry import Positive, Registry


@dataclass(frozen=True)
class Clip:
    # (grads, measured) -> None: clips in place, each entry from itself and `measured` only,
    # so that it gives the same bits on any views of the gradients, block by block
    apply: Callable[[dict[str, np.ndarray], object], None]
    # whole grads -> (measured, scalars for the log): once per step, before `apply`
    measure: Callable[[dict[str, np.ndarray]], tuple[object, dict[str, float]]] | None = None

    def __call__(self, grads: dict[str, np.ndarray]) -> dict[str, float]:
        """Clip whole gradients in place; what was measured for the training log."""
        measured, scalars = self.measure(grads) if self.measure is not None else (None, {})
        self.apply(grads, measured)
        return scalars


CLIPS = Registry("clip")


def _dtype(grads: dict[str, np.ndarray]):
    return next(iter(grads.values())).dtype.type if grads else np.float64


@CLIPS.register("value")
def value(min: float, max: float) -> Clip:
    """tf.clip_by_value: every gradient entry to [min, max], as maximum(minimum(g, max), min).

    min: the smallest value a gradient entry keeps
    max: the largest value a gradient entry keeps
    """
    low, high = min, max
    if not low <= high:
        # TF1 documents min <= max as needed "for correct results" and computes garbage otherwise
        raise ValueError(f"min ({low:g}) must be <= max ({high:g})")

    def apply(grads, measured):
        for g in grads.values():
            np.minimum(g, g.dtype.type(high), out=g)
            np.maximum(g, g.dtype.type(low), out=g)

    return Clip(apply)


@CLIPS.register("norm")
def norm(clip_norm: Positive) -> Clip:
    """tf.clip_by_norm on each parameter's gradient: g · clip_norm / max(‖g‖, clip_norm).

    TF1 multiplies first and divides after, also when ‖g‖ <= clip_norm; a zero gradient
    stays zero (its norm is taken as 0, not sqrt(0)'s NaN gradient).
    clip_norm: the largest L2 norm a parameter's gradient keeps
    """

    def measure(grads):
        divisors = {}
        for k, g in grads.items():
            t = g.dtype.type
            flat = g.reshape(-1)
            l2sum = t(np.dot(flat, flat))
            l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
            divisors[k] = np.maximum(l2norm, t(clip_norm))
        return divisors, {}

    def apply(grads, divisors):
        with np.errstate(invalid="ignore", over="ignore"):  # inf/inf: NaN, caught as divergence
            for k, g in grads.items():
                g *= g.dtype.type(clip_norm)
                g /= divisors[k]

    return Clip(apply, measure)


@CLIPS.register("global_norm")
def global_norm(clip_norm: Positive) -> Clip:
    """tf.clip_by_global_norm: every gradient times clip_norm · min(1/global_norm, 1/clip_norm).

    That is g · clip_norm / max(global_norm, clip_norm) over all the trainable
    parameters' gradients, global_norm = sqrt(2 · Σ l2_loss(g)) = sqrt(Σ ‖g‖²), computed
    as TF1 does (so gradients below the threshold are multiplied by clip_norm · (1/clip_norm),
    which is 1 up to one rounding); a non-finite global norm makes every gradient NaN, and
    training stops as diverged at the next step. The norm before clipping is logged as
    `global_norm`.
    clip_norm: the largest global norm the gradients keep
    """

    def measure(grads):
        t = _dtype(grads)
        # overflow to inf and inf·NaN give NaN gradients, which end the run as diverged
        with np.errstate(invalid="ignore", over="ignore"):
            half_squared = t(0)
            for g in grads.values():
                flat = g.reshape(-1)
                half_squared += t(np.dot(flat, flat)) / t(2)  # tf.nn.l2_loss per gradient
            use_norm = np.sqrt(half_squared * t(2))
            if math.isfinite(use_norm):
                inverse = t(1) / use_norm if use_norm > 0 else t(np.inf)  # TF's 1/0 = inf
                scale = t(clip_norm) * np.minimum(inverse, t(1) / t(clip_norm))
            else:
                scale = t(np.nan)
        return scale, {"global_norm": float(use_norm)}

    def apply(grads, scale):
        with np.errstate(invalid="ignore", over="ignore"):
            for g in grads.values():
                g *= scale

    return Clip(apply, measure)
