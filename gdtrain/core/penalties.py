"""Penalties: terms added to the data loss, each with its gradient, in TF1's forms.

A penalty is a registered factory returning a `Penalty`: `term(arrays) -> float`, its
value over the parameters it selects, and `add_gradient(g, w)`, which adds the
derivative of the term with respect to one of them to that parameter's gradient, in
place, element by element (each entry of g from the same entry of w only: the step
runs it on views of the arrays, block by block, elementwise.py). Every penalty also
takes `params` (a common option of the table): the names or glob patterns of the
parameters it reads, by default every weight matrix (no biases), as l2 has always done.
The term is reported under the penalty's name in metrics, summaries and TensorBoard
(chain.py names a second penalty of the same kind `l2_2`).
To add a penalty, write one registered factory here; tests/test_chain.py's tables then
ask for its closed form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .registry import NonNegative, Registry


@dataclass(frozen=True)
class Penalty:
    term: Callable[[Sequence[np.ndarray]], float]  # value over the selected parameters
    add_gradient: Callable[[np.ndarray, np.ndarray], None]  # (gradient, parameter): g += d term / d w
    params: list[str] | None = None  # names or patterns; None: the model's weight matrices


def _select(penalty: Penalty, params: list[str] | None) -> Penalty:
    return dataclasses.replace(penalty, params=params)


COMMON_OPTIONS = {
    "params": (list[str] | None, None,
               "parameter names or glob patterns; default every weight matrix (no biases)"),
}

PENALTIES = Registry("penalty", common=COMMON_OPTIONS, wrap=_select)


@PENALTIES.register("l2")
def l2(scale: NonNegative) -> Penalty:
    """TF's l2_regularizer: scale · Σ w²/2 (tf.nn.l2_loss halves it); gradient scale · w.

    scale: the regularizer's scale (tf.contrib.layers.l2_regularizer)
    """

    def term(arrays):
        total = 0.0
        for w in arrays:
            w = w.ravel()
            total += float(np.dot(w, w)) / 2
        return scale * total

    def add_gradient(g, w):
        g += scale * w

    return Penalty(term, add_gradient)


@PENALTIES.register("l1")
def l1(scale: NonNegative) -> Penalty:
    """TF's l1_regularizer: scale · Σ |w|; gradient scale · sign(w), 0 where w is 0.

    With plain (sub)gradient descent a weight does not land on 0 but oscillates around it
    by about lr · scale per step: count the weights within a small threshold of 0.
    scale: the regularizer's scale (tf.contrib.layers.l1_regularizer)
    """

    def term(arrays):
        total = 0.0
        for w in arrays:
            total += float(np.abs(w).sum())
        return scale * total

    def add_gradient(g, w):
        g += scale * np.sign(w)

    return Penalty(term, add_gradient)
