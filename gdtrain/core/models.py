"""Models: named parameters, a forward pass that returns a cache, a backward pass.

A model factory receives `input_dim` and `output_dim` from the dataset plus its
options, and returns a `Model`. Parameters are one flat dict of named arrays; the
gradients `backward` returns use the same names. Outputs are raw (logits for the
classifiers): the loss owns the output non-linearity. A training step passes `forward`
a dropout key, (seed, step); evaluation passes none, so it never drops units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np

from .registry import NonEmpty, OneOf, PositiveInt, Range, Registry

MODELS = Registry("model", injected=("input_dim", "output_dim"))

Params = dict[str, np.ndarray]


@dataclass
class Model:
    shapes: dict[str, tuple[int, ...]]
    forward: Callable  # (params, x, dropout_key=None) -> (outputs, cache)
    backward: Callable  # (params, cache, d_outputs, wanted) -> grads for names in wanted
    weights: list[str]  # weight matrices: L2's default selection
    default_init: dict[str, str | dict] = field(default_factory=dict)
    dropout: bool = False  # whether forward drops units when given a dropout_key
    # what the model does beyond its shapes, one phrase each, for `plan` to show
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def parameter_count(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes.values()))


def _dense(input_dim: int, output_dim: int, use_bias: bool, weight_init: str) -> Model:
    shapes = {"W": (input_dim, output_dim)}
    if use_bias:
        shapes["b"] = (output_dim,)

    def forward(p, x, dropout_key=None):  # one layer: nothing to drop
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


def _elu_in_place(z: np.ndarray) -> np.ndarray:
    # TF1 tf.nn.elu: exp(z) - 1 below 0, z above; expm1 of min(z, 0) never overflows and
    # keeps the small negative values exact
    np.copyto(z, np.expm1(np.minimum(z, 0)), where=z < 0)
    return z


def _relu_in_place(z: np.ndarray) -> np.ndarray:
    # max(z, 0) against a row of zeros rather than the scalar 0: NumPy's maximum runs its SIMD
    # loop for two arrays but a slow one for an array and a scalar (34.5 vs 11.8 µs for the
    # MLP's 200x500 layer); the same values, bit for bit, NaN and -0.0 included
    return np.maximum(z, _zeros(z.shape[-1:], z.dtype.str), out=z)


@functools.lru_cache(maxsize=32)
def _zeros(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    zeros = np.zeros(shape, dtype)
    zeros.flags.writeable = False
    return zeros


LEAKY_RELU_ALPHA = 0.2  # TF1 tf.nn.leaky_relu's default slope below 0


def _leaky_relu_in_place(z: np.ndarray) -> np.ndarray:
    # TF1's LeakyRelu kernel: z > 0 ? z : z·alpha (alpha cast to z's dtype, as TF does)
    return np.multiply(z, z.dtype.type(LEAKY_RELU_ALPHA), out=z, where=z <= 0)


def _leaky_relu_slope(h: np.ndarray) -> np.ndarray:
    t = h.dtype.type
    return np.where(h > 0, t(1), t(LEAKY_RELU_ALPHA))


def _softplus_in_place(z: np.ndarray) -> np.ndarray:
    # log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): exp of a non-positive number never
    # overflows (exp(z) does above 88 in float32), and log1p keeps small values exact
    e = np.exp(-np.abs(z))
    np.log1p(e, out=e)
    np.maximum(z, 0, out=z)
    z += e
    return z


def _softplus_slope(h: np.ndarray) -> np.ndarray:
    # softplus'(z) = σ(z) = 1 - exp(-h), h = softplus(z), exactly; -expm1(-h) keeps it to a
    # few ulps of σ(z) wherever h is a normal number (tests/test_models.py measures it)
    s = np.negative(h)
    np.expm1(s, out=s)
    return np.negative(s, out=s)


# Activation table: function (in place on the pre-activation z), and derivative written
# from the activation's output h (exact for each: see the comments and TF1's grad kernels,
# which take the output too for relu, relu6, leaky_relu and elu); None: the identity.
ACTIVATIONS: dict[str, tuple[Callable, Callable | None]] = {
    "relu": (_relu_in_place, lambda h: h > 0),
    "tanh": (lambda z: np.tanh(z, out=z), lambda h: 1 - h * h),
    "sigmoid": (_sigmoid_in_place, lambda h: h * (1 - h)),
    "identity": (lambda z: z, None),
    "elu": (_elu_in_place, lambda h: np.minimum(h, 0) + 1),  # exp(z) = h + 1 below 0
    "leaky_relu": (_leaky_relu_in_place, _leaky_relu_slope),
    "softplus": (_softplus_in_place, _softplus_slope),
    "relu6": (lambda z: np.clip(z, 0, 6, out=z), lambda h: (h > 0) & (h < 6)),
}

# Separates the dropout streams from the initialisation (0, train.py) and data-order
# (1, batching.py) streams of the same seed.
_DROPOUT_STREAM = 2

Widths = PositiveInt | Annotated[list[PositiveInt], NonEmpty()]
DropoutRate = Annotated[float, Range(ge=0, lt=1)]
DropoutRates = DropoutRate | Annotated[list[DropoutRate], NonEmpty()]


def dropout_mask(key: tuple[int, int], layer: int, shape: tuple[int, ...], keep, dtype) -> np.ndarray:
    """TF1 tf.nn.dropout's binary tensor, floor(keep_prob + uniform[0, 1)), for hidden layer
    `layer` of the update `key` = (seed, step) names: a function of (seed, step, layer) only,
    so a resumed run draws the very masks an uninterrupted one does."""
    seed, step = key
    rng = np.random.default_rng([seed, _DROPOUT_STREAM, step, layer])
    random_tensor = rng.random(shape, dtype=dtype)
    random_tensor += keep
    return np.floor(random_tensor, out=random_tensor)


@MODELS.register("mlp")
def mlp(
    input_dim: int,
    output_dim: int,
    hidden: Widths = 500,
    activation: Annotated[str, OneOf(*ACTIVATIONS)] = "relu",
    use_bias: bool = True,
    dropout: DropoutRates = 0.0,
) -> Model:
    """Perceptron of any depth: h1 = act(x·W1 + b1), h2 = act(h1·W2 + b2), …, outputs h·Wn + bn.

    hidden: width of the hidden layer, or a list of widths, one hidden layer each
      ([200, 100, 60, 30]: five layers, parameters W1, b1, …, W5, b5)
    activation: of every hidden layer, as TF1's tf.nn function of that name (leaky_relu: TF1's
      default slope 0.2, fixed; identity: the seeds' 2-3-1 net)
    use_bias: false drops every b
    dropout: TF1 tf.nn.dropout rate on every hidden layer's output, or a list with one rate per
      hidden layer; training steps only (evaluation, predict and export never drop); 0: none
    """
    act, dact = ACTIVATIONS[activation]
    widths = list(hidden) if isinstance(hidden, list) else [hidden]
    rates = list(dropout) if isinstance(dropout, list) else [dropout] * len(widths)
    if len(rates) != len(widths):
        raise ValueError(f"dropout: {len(rates)} rates for {len(widths)} hidden layers; "
                         "give one rate for all, or one per hidden layer")
    sizes = [input_dim, *widths, output_dim]
    n = len(sizes) - 1  # layers; 1 … n-1 are hidden
    W = [f"W{i}" for i in range(1, n + 1)]
    b = [f"b{i}" for i in range(1, n + 1)] if use_bias else [None] * n
    shapes: dict[str, tuple[int, ...]] = {}
    init: dict[str, str | dict] = {}
    for i in range(n):
        shapes[W[i]], init[W[i]] = (sizes[i], sizes[i + 1]), "glorot_uniform"
        if use_bias:
            shapes[b[i]], init[b[i]] = (sizes[i + 1],), "zeros"
    # keep_prob = 1 - rate, as TF1's dropout computes it; None where the layer drops nothing
    keeps = [1 - r if r > 0 else None for r in rates]

    def forward(p, x, dropout_key=None):
        """Outputs and the cache (each layer's input, each hidden layer's activation output
        and dropout mask); dropout_key = (seed, step) drops units, None (evaluation) never."""
        inputs, outputs, masks = [x], [], []
        a = x
        for i in range(n):
            z = a @ p[W[i]]
            if use_bias:
                z += p[b[i]]
            if i == n - 1:
                return z, (inputs, outputs, masks)
            h = act(z)  # in place: z is not needed once h exists
            mask = None
            if keeps[i] is not None and dropout_key is not None:
                keep = h.dtype.type(keeps[i])
                mask = dropout_mask(dropout_key, i + 1, h.shape, keep, h.dtype)
                a = h / keep  # TF1's order: x / keep_prob * binary_tensor
                a *= mask
            else:
                a = h
            outputs.append(h)
            masks.append(mask)
            inputs.append(a)

    def backward(p, cache, dout, wanted):
        inputs, outputs, masks = cache
        grads = {}
        d = dout
        for i in reversed(range(n)):
            if W[i] in wanted:
                grads[W[i]] = inputs[i].T @ d
            if use_bias and b[i] in wanted:
                grads[b[i]] = d.sum(axis=0)
            if i == 0 or not any(W[j] in wanted or b[j] in wanted for j in range(i)):
                break  # nothing below this layer is asked for
            d = d @ p[W[i]].T
            mask = masks[i - 1]
            if mask is not None:
                d *= mask  # the gradient of x / keep_prob * binary: (g · binary) / keep_prob
                d /= d.dtype.type(keeps[i - 1])
            if dact is not None:
                d *= dact(outputs[i - 1])
        return grads

    notes = [f"{activation} on {len(widths)} hidden layer{'s' * (len(widths) > 1)}"]
    if any(k is not None for k in keeps):
        notes.append("dropout " + ", ".join(f"{r:g}" for r in rates) + " on the hidden layers' outputs "
                     "(training steps only; kept units scaled by 1/(1 - rate))")
    return Model(shapes, forward, backward, list(W), init, dropout=any(k is not None for k in keeps),
                 notes=notes)
