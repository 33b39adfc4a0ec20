"""Parameter initializers, picked by name; each is `(shape, rng, dtype, **options) -> array`.

`rng` is a numpy Generator derived from the run seed and the parameter's name, so a
parameter's initial value does not depend on which other parameters exist.
"""

from __future__ import annotations

import numpy as np

from .registry import Positive, Registry

INITIALIZERS = Registry("initializer", injected=("shape", "rng", "dtype"))


@INITIALIZERS.register("zeros")
def zeros(shape, rng, dtype):
    """All zeros (the seed's softmax regression)."""
    return np.zeros(shape, dtype)


@INITIALIZERS.register("ones")
def ones(shape, rng, dtype):
    """All ones."""
    return np.ones(shape, dtype)


@INITIALIZERS.register("constant")
def constant(shape, rng, dtype, value: float = 0.0):
    """Every element equal to `value`.

    value: the constant
    """
    return np.full(shape, value, dtype)


@INITIALIZERS.register("normal")
def normal(shape, rng, dtype, stddev: Positive = 1.0, mean: float = 0.0):
    """Normal(mean, stddev), like tf.random_normal.

    stddev: standard deviation
    mean: mean
    """
    return (mean + stddev * rng.standard_normal(shape)).astype(dtype)


@INITIALIZERS.register("truncated_normal")
def truncated_normal(shape, rng, dtype, stddev: Positive = 0.1, mean: float = 0.0):
    """Normal(mean, stddev) redrawn beyond two stddevs, like tf.truncated_normal.

    stddev: standard deviation before truncation
    mean: mean
    """
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return (mean + stddev * z).astype(dtype)


@INITIALIZERS.register("uniform")
def uniform(shape, rng, dtype, low: float = -0.05, high: float = 0.05):
    """Uniform on [low, high).

    low: lower bound
    high: upper bound
    """
    if not high > low:
        raise ValueError(f"high ({high}) must be greater than low ({low})")
    return rng.uniform(low, high, shape).astype(dtype)


def _fans(shape) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    return shape[0], shape[1]


@INITIALIZERS.register("glorot_uniform")
def glorot_uniform(shape, rng, dtype, gain: Positive = 1.0):
    """Uniform on ±gain·sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, Keras' default).

    gain: scale factor on the limit
    """
    fan_in, fan_out = _fans(shape)
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


@INITIALIZERS.register("he_normal")
def he_normal(shape, rng, dtype):
    """Truncated normal with variance 2 / fan_in after truncation (He et al.; Keras' form)."""
    fan_in, _ = _fans(shape)
    # 0.8796... is the stddev of a unit normal truncated at ±2: dividing by it makes
    # the truncated distribution's variance 2/fan_in, as Keras' VarianceScaling does.
    stddev = float(np.sqrt(2.0 / fan_in)) / 0.87962566103423978
    return truncated_normal(shape, rng, dtype, stddev=stddev)
