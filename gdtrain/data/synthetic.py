"""Seeded toy datasets that rebuild the seed experiments' data exactly.

Each generator draws from `np.random.RandomState(seed)` in the same order as the seed
script did, so the default options give the seed's numbers (computed in float64, then
converted to `dtype`). All targets are real-valued (N, 1) arrays, as the seeds fed them
to MSE or sigmoid cross-entropy. `test_fraction` moves the last rows into a test split.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from numpy.typing import DTypeLike

from ..core.dataset import Dataset, Split
from ..core.registry import NonNegative, Positive, PositiveInt, Range
from . import DATASETS

Seed = Annotated[int, Range(ge=0, lt=2**32)]  # what RandomState accepts
TestFraction = Annotated[float, Range(ge=0, lt=1)]


@DATASETS.register("linear_sum")
def linear_sum(
    samples: PositiveInt = 32,
    noise: NonNegative = 0.05,
    seed: Seed = 23455,
    test_fraction: TestFraction = 0.0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """y = x0 + x1 + uniform noise, x uniform in [0, 1)^2 (the linear-regression experiment).

    samples: number of examples
    noise: half-width of the uniform noise added to each target
    seed: RandomState seed (23455 in the experiment)
    test_fraction: share of the rows, taken from the end, that form the test split
    """
    rng = np.random.RandomState(seed)
    x = rng.rand(samples, 2)
    # The seed calls rng.rand() once per row after drawing X; rand(samples) yields the same
    # stream. It computed rand() / 10.0 - 0.05: keep that form (scaled by noise / 0.05,
    # exactly 1.0 by default) since u * 0.1 differs from u / 10.0 in the last bit.
    u = rng.rand(samples)
    y = x[:, 0] + x[:, 1] + (u / 10.0 * (noise / 0.05) - noise)
    return _dataset("linear_sum", x, y[:, None], test_fraction, dtype)


@DATASETS.register("sum_below_one")
def sum_below_one(
    samples: PositiveInt = 32,
    seed: Seed = 23455,
    test_fraction: TestFraction = 0.0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Label 1.0 where x0 + x1 < 1, else 0.0, x uniform in [0, 1)^2
    (the 2-3-1 network MSE experiment).

    samples: number of examples
    seed: RandomState seed (23455 in the experiment)
    test_fraction: share of the rows, taken from the end, that form the test split
    """
    x = np.random.RandomState(seed).rand(samples, 2)
    y = (x[:, 0] + x[:, 1] < 1).astype(np.float64)
    return _dataset("sum_below_one", x, y[:, None], test_fraction, dtype)


@DATASETS.register("two_gaussians")
def two_gaussians(
    samples_per_class: PositiveInt = 50,
    seed: Seed = 0,
    mean0: float = -1.0,
    mean1: float = 3.0,
    stddev: NonNegative = 1.0,
    test_fraction: TestFraction = 0.0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """One feature from N(mean0, stddev) labelled 0.0, then N(mean1, stddev) labelled 1.0.

    The scalar shift + sigmoid cross-entropy experiment. Rows are class 0 then class 1,
    as in the seed; `test_fraction` takes the last rows of each class, so that the test
    split holds both classes.

    samples_per_class: examples drawn for each class
    seed: RandomState seed
    mean0: mean of class 0
    mean1: mean of class 1
    stddev: standard deviation of both classes
    test_fraction: share of each class's rows, taken from its end, that form the test split
    """
    rng = np.random.RandomState(seed)
    n = samples_per_class
    features = rng.normal(mean0, stddev, n), rng.normal(mean1, stddev, n)  # seed's draw order
    parts = [
        _split(x[:, None], np.full((n, 1), float(label)), test_fraction, dtype)
        for label, x in enumerate(features)
    ]
    train = _concat([train for train, _ in parts])
    test = _concat([test for _, test in parts]) if test_fraction > 0 else None
    return Dataset(name="two_gaussians", train=train, test=test)


@DATASETS.register("constant_target")
def constant_target(
    samples: PositiveInt = 100,
    mean: float = 1.0,
    stddev: NonNegative = 0.1,
    target: float = 10.0,
    seed: Seed = 0,
    test_fraction: TestFraction = 0.0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """One feature from N(mean, stddev), every target the same constant
    (the scalar scale + MSE experiment).

    samples: number of examples
    mean: mean of the feature
    stddev: standard deviation of the feature
    target: the value of every target
    seed: RandomState seed
    test_fraction: share of the rows, taken from the end, that form the test split
    """
    x = np.random.RandomState(seed).normal(mean, stddev, samples)[:, None]
    y = np.full((samples, 1), target, dtype=np.float64)
    return _dataset("constant_target", x, y, test_fraction, dtype)


@DATASETS.register("circle")
def circle(
    samples: PositiveInt = 300,
    radius_squared: Positive = 2.0,
    seed: Seed = 2,
    test_fraction: TestFraction = 0.0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Label 1.0 inside the circle x0^2 + x1^2 < radius_squared, x ~ N(0, 1)^2
    (the L2 regularisation experiment).

    samples: number of examples
    radius_squared: squared radius of the class-1 disc
    seed: RandomState seed (2 in the experiment, which called np.random.seed(2))
    test_fraction: share of the rows, taken from the end, that form the test split
    """
    x = np.random.RandomState(seed).randn(samples, 2)
    y = (x[:, 0] * x[:, 0] + x[:, 1] * x[:, 1] < radius_squared).astype(np.float64)
    return _dataset("circle", x, y[:, None], test_fraction, dtype)


def _dataset(
    name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, dtype: DTypeLike
) -> Dataset:
    train, test = _split(x, y, test_fraction, dtype)
    return Dataset(name=name, train=train, test=test)


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, dtype: DTypeLike
) -> tuple[Split, Split | None]:
    """Convert to `dtype`; with test_fraction > 0 the last round(N * fraction) rows are test."""
    x = np.ascontiguousarray(x, dtype=dtype)
    y = np.ascontiguousarray(y, dtype=dtype)
    if test_fraction <= 0:
        return Split(x, y), None
    n = len(x)
    count = round(n * test_fraction)
    if not 0 < count < n:
        # ValueError: Registry.build reports it as a config error on this option.
        raise ValueError(
            f"test_fraction {test_fraction} of {n} rows gives {count} test rows; "
            f"expected between 1 and {n - 1}"
        )
    return Split(x[: n - count], y[: n - count]), Split(x[n - count :], y[n - count :])


def _concat(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits]))
