"""Gradient clipping, in TF1's exact forms (tensorflow/python/ops/clip_ops.py, TF 1.15).

A clip is a registered factory returning a function `clip(grads) -> scalars` that
clips the gradients (a dict of named arrays) in place, in the gradients' dtype as TF's
kernels compute, and returns what it measured for the training log (the global norm
before clipping), possibly nothing. It runs after the penalties have added their
gradients and before the optimizer: TF1 practice clips the gradient of the whole
objective, `tf.gradients(loss + regularization)` then `clip_by_global_norm`. To add a
clip, write one registered factory here; tests/test_chain.py's tables then ask for its
closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .registry import Positive, Registry

Clip = Callable[[dict[str, np.ndarray]], dict[str, float]]

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

    def clip(grads):
        for g in grads.values():
            np.minimum(g, g.dtype.type(high), out=g)
            np.maximum(g, g.dtype.type(low), out=g)
        return {}

    return clip


@CLIPS.register("norm")
def norm(clip_norm: Positive) -> Clip:
    """tf.clip_by_norm on each parameter's gradient: g · clip_norm / max(‖g‖, clip_norm).

    TF1 multiplies first and divides after, also when ‖g‖ <= clip_norm; a zero gradient
    stays zero (its norm is taken as 0, not sqrt(0)'s NaN gradient).
    clip_norm: the largest L2 norm a parameter's gradient keeps
    """

    def clip(grads):
        for g in grads.values():
            t = g.dtype.type
            flat = g.reshape(-1)
            l2sum = t(np.dot(flat, flat))
            l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
            with np.errstate(invalid="ignore", over="ignore"):  # inf/inf: NaN, caught as divergence
                g *= t(clip_norm)
                g /= np.maximum(l2norm, t(clip_norm))
        return {}

    return clip


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

    def clip(grads):
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
            for g in grads.values():
                g *= scale
        return {"global_norm": float(use_norm)}

    return clip
