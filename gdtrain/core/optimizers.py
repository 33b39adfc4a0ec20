"""Optimizers as (init, update) pairs, in TF1's exact update forms.

`init(params) -> state` creates slots for the parameters it is given (the trainable
ones only). `update(grads, state, lr, params) -> (updates, state)` returns the change
to add to each parameter; the loop applies it. `params` are the values before this
step, to read (decoupled weight decay does), never to change. Slots are nested dicts
of arrays keyed by slot name then parameter name, plus scalar arrays (Adam's beta
powers), so a checkpoint holds them by name. The optimizer is the part of the step
(chain.py) after the penalties and clipping have made the gradients, and before the
moving average. To add an optimizer, write one registered factory here.

An update must be element-wise: it changes the per-parameter slots in place, each entry
from the same entries of the gradient, the parameter and the slots only, and returns
the updates. The step (elementwise.py) calls it on views of one block of every array
at a time, with the bits of one call on the whole arrays. The other entries of the
state (per-step scalars: Adam's beta powers) it may read and advance as it would on whole
arrays: every block's call sees their values at the start of the step, and they advance
once per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .registry import Fraction, NonNegative, OpenFraction, Positive, Registry

OPTIMIZERS = Registry("optimizer")

State = dict[str, dict[str, np.ndarray]]


@dataclass
class Optimizer:
    init: Callable  # params -> state
    update: Callable  # (grads, state, lr, params=None) -> (updates, state)
    learning_rate: float


def _like(params, fill: float = 0.0) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, fill) for k, v in params.items()}


@OPTIMIZERS.register("sgd")
def sgd(learning_rate: Positive) -> Optimizer:
    """Plain gradient descent, tf.train.GradientDescentOptimizer: var -= lr·g.

    learning_rate: step size (the schedule's starting value)
    """

    def init(params):
        return {}

    def update(grads, state, lr, params=None):
        return {k: g * -lr for k, g in grads.items()}, state

    return Optimizer(init, update, learning_rate)


@OPTIMIZERS.register("momentum")
def momentum(learning_rate: Positive, momentum: NonNegative = 0.9, nesterov: bool = False) -> Optimizer:
    """tf.train.MomentumOptimizer: accum = m·accum + g; var -= lr·accum.

    With nesterov: var -= lr·g + lr·m·accum (TF1's use_nesterov form).
    learning_rate: step size
    momentum: m, the decay of the accumulator
    nesterov: use Nesterov's look-ahead form
    """
    m = momentum

    def init(params):
        return {"accum": _like(params)}

    def update(grads, state, lr, params=None):
        accum = state["accum"]
        updates = {}
        for k, g in grads.items():
            a = accum[k]
            a *= m
            a += g
            if nesterov:
                updates[k] = -(g * lr + a * m * lr)
            else:
                updates[k] = a * -lr
        return updates, state

    return Optimizer(init, update, learning_rate)


@OPTIMIZERS.register("adam")
def adam(
    learning_rate: Positive = 0.001,
    beta1: OpenFraction = 0.9,
    beta2: OpenFraction = 0.999,
    epsilon: Positive = 1e-8,
) -> Optimizer:
    """tf.train.AdamOptimizer, with TF1's epsilon placement and bias correction in the step.

    m += (g - m)(1 - b1); v += (g² - v)(1 - b2); var -= lr·sqrt(1 - b2^t)/(1 - b1^t) · m/(sqrt(v) + eps).
    learning_rate: step size
    beta1: decay of the first moment
    beta2: decay of the second moment
    epsilon: added to sqrt(v)
    """
    return _adam(learning_rate, beta1, beta2, epsilon, weight_decay=0.0)


@OPTIMIZERS.register("adamw")
def adamw(
    learning_rate: Positive = 0.001,
    beta1: OpenFraction = 0.9,
    beta2: OpenFraction = 0.999,
    epsilon: Positive = 1e-8,
    weight_decay: NonNegative = 0.01,
) -> Optimizer:
    """Adam with decoupled weight decay (Loshchilov & Hutter), as Keras 3 and PyTorch define AdamW.

    var -= lr·wd·var besides Adam's TF1 step (adam above, unchanged): the decay reads the
    value before this step's update and uses the scheduled learning rate, as Keras 3
    (`var - var·wd·lr` before the Adam step, lr the schedule's current value) and
    torch.optim.AdamW (`param *= 1 - lr·wd` first, lr as the scheduler set it) do. It
    decays every trainable parameter, biases included (one PyTorch parameter group; no
    Keras exclusions); for a decay through the gradient, on chosen parameters, use an l2
    penalty instead. Computed as one update: var += -(m·alpha)/(sqrt(v) + eps) - var·wd·lr (Keras rounds
    var - var·wd·lr first, so the last bit may differ).
    learning_rate: step size
    beta1: decay of the first moment
    beta2: decay of the second moment
    epsilon: added to sqrt(v)
    weight_decay: wd, the decay per unit of learning rate (PyTorch's default 0.01)
    """
    return _adam(learning_rate, beta1, beta2, epsilon, weight_decay)


def _adam(learning_rate: float, beta1: float, beta2: float, epsilon: float,
          weight_decay: float) -> Optimizer:
    def init(params):
        dtype = next(iter(params.values())).dtype if params else np.float32
        # TF1 keeps beta^t as variables multiplied after each step, in the params' dtype
        return {
            "m": _like(params),
            "v": _like(params),
            "power": {"beta1": np.array(beta1, dtype), "beta2": np.array(beta2, dtype)},
        }

    def update(grads, state, lr, params=None):
        p1, p2 = state["power"]["beta1"], state["power"]["beta2"]
        dtype = p1.dtype.type
        # constants in the parameters' dtype, as TF1's kernel computes them
        one_minus_b1, one_minus_b2 = dtype(1) - dtype(beta1), dtype(1) - dtype(beta2)
        alpha = dtype(lr) * np.sqrt(dtype(1) - p2) / (dtype(1) - p1)
        if weight_decay:
            if params is None:
                raise TypeError("adamw's update needs the parameters (decoupled weight decay)")
            wd, rate = dtype(weight_decay), dtype(lr)
        updates = {}
        for k, g in grads.items():
            m, v = state["m"][k], state["v"][k]
            m += (g - m) * one_minus_b1
            v += (g * g - v) * one_minus_b2
            updates[k] = -(m * alpha) / (np.sqrt(v) + dtype(epsilon))
            if weight_decay:
                updates[k] -= params[k] * wd * rate  # Keras 3's var·wd·lr
        p1 *= dtype(beta1)
        p2 *= dtype(beta2)
        return updates, state

    return Optimizer(init, update, learning_rate)


@OPTIMIZERS.register("rmsprop")
def rmsprop(
    learning_rate: Positive,
    decay: Fraction = 0.9,
    momentum: NonNegative = 0.0,
    epsilon: Positive = 1e-10,
) -> Optimizer:
    """tf.train.RMSPropOptimizer: ms = ρ·ms + (1-ρ)·g²; mom = μ·mom + lr·g/sqrt(ms + ε); var -= mom.

    As in TF1, the mean-square slot starts at ones.
    learning_rate: step size
    decay: ρ, the decay of the mean square
    momentum: μ
    epsilon: ε, added inside the square root
    """

    def init(params):
        return {"ms": _like(params, 1.0), "mom": _like(params)}

    def update(grads, state, lr, params=None):
        updates = {}
        for k, g in grads.items():
            ms, mom = state["ms"][k], state["mom"][k]
            one_minus_rho = g.dtype.type(1) - g.dtype.type(decay)
            ms += (g * g - ms) * one_minus_rho  # TF1's kernel form of rho·ms + (1-rho)·g²
            mom *= momentum
            mom += (g * lr) / np.sqrt(ms + epsilon)
            updates[k] = -mom
        return updates, state

    return Optimizer(init, update, learning_rate)


@OPTIMIZERS.register("adagrad")
def adagrad(learning_rate: Positive, initial_accumulator_value: Positive = 0.1) -> Optimizer:
    """tf.train.AdagradOptimizer: accum += g²; var -= lr·g/sqrt(accum).

    learning_rate: step size
    initial_accumulator_value: starting value of the accumulator
    """

    def init(params):
        return {"accum": _like(params, initial_accumulator_value)}

    def update(grads, state, lr, params=None):
        updates = {}
        for k, g in grads.items():
            a = state["accum"][k]
            a += g * g
            updates[k] = -(g * lr) / np.sqrt(a)
        return updates, state

    return Optimizer(init, update, learning_rate)
