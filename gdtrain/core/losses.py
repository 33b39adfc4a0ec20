"""Losses computed from raw model outputs (logits), in the numerically stable forms.

Each loss returns the reduced value and the gradient with respect to the outputs in
one pass. The loss owns the output non-linearity: softmax or sigmoid are applied
here, never in the model, and never as log(softmax(x)).
Reductions follow TF1: `mean` averages the per-row losses for softmax cross-entropy
(one per example) and every element for MSE and sigmoid cross-entropy
(tf.reduce_mean over the matrix); `sum` adds them all (the seed's
-tf.reduce_sum(y_ * tf.log(y))).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from .registry import OneOf, Registry

LOSSES = Registry("loss")

Reduction = Annotated[str, OneOf("mean", "sum")]


@dataclass
class Loss:
    # (outputs, targets) -> (reduced loss, d loss / d outputs)
    value_and_grad: Callable
    # (outputs, targets) -> per-example losses, summed over outputs: shape (N,)
    per_example: Callable
    # outputs -> what the model predicts (probabilities or values)
    predict: Callable
    # outputs -> (N,) predicted class, or None when the loss does not classify
    classify: Callable | None
    accepts_classes: bool  # integer class labels as targets
    accepts_values: bool  # real-valued (N, K) targets
    elements_per_example: Callable  # output_dim -> divisor that turns per-example sums into `mean`
    # What the loss asks of real-valued targets, and how its outputs read: the checks of
    # train.check_loss_fits and the columns of `gdtrain predict` ask these, not the name.
    min_outputs: int = 1  # outputs it needs (a softmax over one output is constant)
    distribution_targets: bool = False  # each target row must be a distribution
    # what predict() gives: "distribution" (one over the outputs), "per_output" (each
    # output's probability that its target is 1) or "values"
    predicts: str = "values"

    def mean_over(self, outputs, targets) -> float:
        """The `mean`-reduced loss over a whole split (what eval reports)."""
        rows = self.per_example(outputs, targets)
        return float(rows.sum(dtype=np.float64) / (len(rows) * self.elements_per_example(outputs.shape[1])))


def _one_hot(labels: np.ndarray, k: int, dtype) -> np.ndarray:
    out = np.zeros((labels.shape[0], k), dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _log_softmax_parts(x: np.ndarray):
    """Shifted exponentials, their row sums and the row log-sum-exp, without overflow."""
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    return e, s, m + np.log(s)


def _sparse_softmax_xent(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses and softmax(x) - onehot(labels), the training step's case.

    The same formulas as `_softmax_rows`, worked on a class-major copy of the logits: with
    few classes, NumPy reduces over the short row of each example slowly (one inner loop
    per example) but over the leading axis of a (classes, batch) array quickly (whole
    rows at once), 4x faster for 10 classes. The row sums then add the classes in order.
    """
    n = x.shape[0]
    t = np.ascontiguousarray(x.T)  # (classes, batch)
    # each example's own class, as positions in t's flat view: take/put there are ~3x
    # faster than indexing t[labels, examples]
    at_label = labels * n
    at_label += _arange(n)
    flat = t.reshape(-1)
    m = t.max(axis=0)
    picked = flat.take(at_label)
    t -= m
    np.exp(t, out=t)
    s = t.sum(axis=0)
    lse = np.log(s)
    lse += m
    rows = lse - picked
    t /= s
    chosen = flat.take(at_label)
    chosen -= 1
    flat.put(at_label, chosen)
    return rows, np.ascontiguousarray(t.T)


@functools.lru_cache(maxsize=8)
def _arange(n: int) -> np.ndarray:
    r = np.arange(n)
    r.flags.writeable = False
    return r


def _softmax_rows(x, y):
    e, s, lse = _log_softmax_parts(x)
    if y.ndim == 1:
        picked = np.take_along_axis(x, y[:, None], axis=1)
        rows = (lse - picked)[:, 0]
    else:
        # soft targets: logsumexp(x)·sum(z) - sum(z·x), TF's form for any target rows
        rows = (lse[:, 0] * y.sum(axis=1)) - np.einsum("ij,ij->i", y, x)
    return rows, e, s


DISTRIBUTION_TOLERANCE = 1e-3  # float rounding in a target row's entries and sum
NOT_A_DISTRIBUTION = (
    f"loss cross_entropy needs each target row to be a distribution (entries >= 0 summing to 1, "
    f"within {DISTRIBUTION_TOLERANCE:g}): normalise the rows, give integer class labels, or use "
    "sigmoid_cross_entropy for independent 0/1 targets"
)


def non_distribution(y: np.ndarray) -> tuple[int, str] | None:
    """(index, what is wrong) of the first row of (N, K) targets that is not a distribution
    (an entry below 0 or a sum away from 1, beyond DISTRIBUTION_TOLERANCE), or None.
    Softmax cross-entropy's gradient softmax(x) - z is the loss's only for such rows."""
    sums = y.sum(axis=1, dtype=np.float64)
    negative = (y < -DISTRIBUTION_TOLERANCE).any(axis=1)
    rows = np.flatnonzero((np.abs(sums - 1) > DISTRIBUTION_TOLERANCE) | negative)
    if not rows.size:
        return None
    i = int(rows[0])
    entry = f", entry {float(y[i][y[i] < -DISTRIBUTION_TOLERANCE][0]):g} is below 0" if negative[i] else ""
    return i, f"targets sum to {sums[i]:g}{entry}"


@LOSSES.register("cross_entropy")
def cross_entropy(reduction: Reduction = "mean") -> Loss:
    """Softmax cross-entropy from logits, as tf.nn.softmax_cross_entropy_with_logits.

    reduction: mean over examples, or sum (the seed's softmax regression uses sum)
    """

    def value_and_grad(x, y):
        if y.ndim == 1:
            rows, grad = _sparse_softmax_xent(x, y)
        else:
            rows, e, s = _softmax_rows(x, y)
            grad = e
            grad /= s  # softmax
            # d/dx of logsumexp(x)·sum(z) - sum(z·x); equals softmax - z for one-hot rows
            grad *= y.sum(axis=1, keepdims=True)
            grad -= y
        n = x.shape[0]
        if reduction == "mean":
            grad /= n
            return float(rows.sum(dtype=np.float64) / n), grad
        return float(rows.sum(dtype=np.float64)), grad

    def per_example(x, y):
        return _softmax_rows(x, y)[0]

    def predict(x):
        e, s, _ = _log_softmax_parts(x)
        return e / s

    return Loss(
        value_and_grad, per_example, predict, lambda x: x.argmax(axis=1), True, True, lambda k: 1,
        min_outputs=2, distribution_targets=True, predicts="distribution",
    )


def _sigmoid(x):
    # exp(-|x|) never overflows; both branches of the logistic use it
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _as_targets(y, k, dtype):
    return _one_hot(y, k, dtype) if y.ndim == 1 else y


@LOSSES.register("sigmoid_cross_entropy")
def sigmoid_cross_entropy(reduction: Reduction = "mean") -> Loss:
    """Sigmoid cross-entropy from logits, as tf.nn.sigmoid_cross_entropy_with_logits.

    Per element max(x, 0) - x·z + log(1 + exp(-|x|)); class labels become one-hot targets.
    reduction: mean over every element, or sum
    """

    def elements(x, y):
        z = _as_targets(y, x.shape[1], x.dtype)
        return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x))), z

    def value_and_grad(x, y):
        el, z = elements(x, y)
        grad = _sigmoid(x) - z
        if reduction == "mean":
            grad /= el.size
            return float(el.sum(dtype=np.float64) / el.size), grad
        return float(el.sum(dtype=np.float64)), grad

    def classify(x):
        return x.argmax(axis=1) if x.shape[1] > 1 else (x[:, 0] > 0).astype(np.int64)

    return Loss(
        value_and_grad,
        lambda x, y: elements(x, y)[0].sum(axis=1),
        _sigmoid,
        classify,
        True,
        True,
        lambda k: k,
        predicts="per_output",
    )


@LOSSES.register("mse")
def mse(reduction: Reduction = "mean") -> Loss:
    """Squared error, as tf.reduce_mean(tf.square(y - y_)): mean over every element.

    reduction: mean over every element (batch × outputs), or sum
    """

    def value_and_grad(x, y):
        diff = x - y
        total = float(np.vdot(diff, diff))
        if reduction == "mean":
            diff *= 2.0 / diff.size
            return total / diff.size, diff
        diff *= 2.0
        return total, diff

    def per_example(x, y):
        diff = x - y
        return np.einsum("ij,ij->i", diff, diff)

    return Loss(value_and_grad, per_example, lambda x: x, None, False, True, lambda k: k)
