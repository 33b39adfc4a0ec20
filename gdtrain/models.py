"""Models: named parameters, a forward pass that returns a cache, a backward pass.

A model factory receives `input_dim` and `output_dim` from the dataset plus its
options, and returns a `Model`. Parameters are one flat dict of named arrays; the
gradients `backward` returns use the same names. Outputs are raw (logits for the
classifiers): the loss owns the output non-linearity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np

from .registry import OneOf, PositiveInt, Registry

MODELS = Registry("model", injected=("input_dim", "output_dim"))

Params = dict[str, np.ndarray]


@dataclass
class Model:
    shapes: dict[str, tuple[int, ...]]
    forward: Callable  # (params, x) -> (outputs, cache)
    backward: Callable  # (params, cache, d_outputs, wanted) -> grads for names in wanted
    weights: list[str]  # weight matrices: L2's default selection
    default_init: dict[str, str | dict] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def parameter_count(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes.values()))


def _dense(input_dim: int, output_dim: int, use_bias: bool, weight_init: str) -> Model:
    shapes = {"W": (input_dim, output_dim)}
    if use_bias:
        shapes["b"] = (output_dim,)

    def forward(p, x):
        out = x @ p["W"]
        if use_bias:
            out += p["b"]
        return out, x

    def backward(p, x, dout, wanted):
        grads = {}
        if "W" in wanted:
            grads["W"] = x.T @ dout
        if "b" in wanted:
            grads["b"] = dout.sum(axis=0)
        return grads

    return Model(shapes, forward, backward, ["W"], {"W": weight_init, "b": "zeros"})


@MODELS.register("linear")
def linear(input_dim: int, output_dim: int, use_bias: bool = True) -> Model:
    """y = x·W + b: regression outputs (parameters W, b).

    use_bias: false drops b (the seeds' y = x·a)
    """
    return _dense(input_dim, output_dim, use_bias, "glorot_uniform")


@MODELS.register("softmax")
def softmax(input_dim: int, output_dim: int, use_bias: bool = True) -> Model:
    """Softmax regression: class logits x·W + b (parameters W, b; zeros init, as TF1's tutorial).

    use_bias: false drops b
    """
    return _dense(input_dim, output_dim, use_bias, "zeros")


def _sigmoid_in_place(z: np.ndarray) -> np.ndarray:
    # exp(-|z|) <= 1 never overflows (1/(1 + exp(-z)) does, with a warning, for z < -88 in
    # float32): σ(z) = 1/(1 + e) for z >= 0 and e/(1 + e) below.
    e = np.exp(-np.abs(z))
    return np.divide(np.where(z >= 0, 1, e), 1 + e, out=z)


# Activation table: function, and derivative written from the activation's output.
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (lambda z: np.maximum(z, 0, out=z), lambda h: h > 0),
    "tanh": (lambda z: np.tanh(z, out=z), lambda h: 1 - h * h),
    "sigmoid": (_sigmoid_in_place, lambda h: h * (1 - h)),
    "identity": (lambda z: z, None),
}


@MODELS.register("mlp")
def mlp(
    input_dim: int,
    output_dim: int,
    hidden: PositiveInt = 500,
    activation: Annotated[str, OneOf(*ACTIVATIONS)] = "relu",
    use_bias: bool = True,
) -> Model:
    """Two-layer perceptron: act(x·W1 + b1)·W2 + b2 (parameters W1, b1, W2, b2).

    hidden: width of the hidden layer
    activation: relu | tanh | sigmoid | identity (identity: the seeds' 2-3-1 net)
    use_bias: false drops b1 and b2
    """
    act, dact = ACTIVATIONS[activation]
    shapes = {"W1": (input_dim, hidden)}
    if use_bias:
        shapes["b1"] = (hidden,)
    shapes["W2"] = (hidden, output_dim)
    if use_bias:
        shapes["b2"] = (output_dim,)

    def forward(p, x):
        z = x @ p["W1"]
        if use_bias:
            z += p["b1"]
        h = act(z)  # in place: z is not needed once h exists
        out = h @ p["W2"]
        if use_bias:
            out += p["b2"]
        return out, (x, h)

    def backward(p, cache, dout, wanted):
        x, h = cache
        grads = {}
        if "W2" in wanted:
            grads["W2"] = h.T @ dout
        if "b2" in wanted:
            grads["b2"] = dout.sum(axis=0)
        if "W1" in wanted or "b1" in wanted:
            dh = dout @ p["W2"].T
            if dact is not None:
                dh *= dact(h)
            if "W1" in wanted:
                grads["W1"] = x.T @ dh
            if "b1" in wanted:
                grads["b1"] = dh.sum(axis=0)
        return grads

    init = {"W1": "glorot_uniform", "b1": "zeros", "W2": "glorot_uniform", "b2": "zeros"}
    return Model(shapes, forward, backward, ["W1", "W2"], init)
