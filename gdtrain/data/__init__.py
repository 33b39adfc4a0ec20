"""Datasets: each is a registered factory returning a `Dataset` of float arrays.

A dataset factory takes its options as keyword arguments plus the injected `dtype`
(numpy dtype for features) and returns a `Dataset`. To add one: write a function in
a module of this package, decorate it with `@DATASETS.register("name")`, and import
that module at the bottom of this file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Registry

DATASETS = Registry("dataset", injected=("dtype",))


@dataclass
class Split:
    """One split: x is (N, D) float; y is int64 (N,) class labels or float (N, K) targets."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split | None = None
    validation: Split | None = None
    num_classes: int | None = None  # set for class labels; None for real-valued targets
    class_names: list[str] | None = None

    @property
    def input_dim(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.num_classes is not None else int(self.train.y.shape[1])

    @property
    def has_classes(self) -> bool:
        return self.num_classes is not None

    def split(self, name: str) -> Split | None:
        return {"train": self.train, "test": self.test, "validation": self.validation}[name]


def hold_out(dataset: Dataset, count: int) -> Dataset:
    """Move the first `count` training examples into a validation split (as TF1's
    `read_data_sets(validation_size=...)` does)."""
    from ..errors import DataError

    if count <= 0:
        return dataset
    n = len(dataset.train)
    if count >= n:
        raise DataError(f"data.validation: {count} leaves no training examples (have {n})")
    tr = dataset.train
    dataset.validation = Split(tr.x[:count], tr.y[:count])
    dataset.train = Split(tr.x[count:], tr.y[count:])
    return dataset


# Importing the modules registers their datasets.
from . import files, mnist, synthetic  # noqa: E402,F401


def load_dataset(data_cfg: dict, dtype: str) -> Dataset:
    """The dataset a resolved config's `data` section names."""
    options = {k: v for k, v in data_cfg.items() if k != "name"}
    return DATASETS.build(data_cfg["name"], options, "data", dtype=np.dtype(dtype))


def head(dataset: Dataset, train_rows: int, test_rows: int) -> Dataset:
    """The first rows of each split: a small slice for smoke runs."""

    def cut(split: Split | None, n: int) -> Split | None:
        return None if split is None else Split(split.x[:n], split.y[:n])

    return Dataset(dataset.name, cut(dataset.train, train_rows), cut(dataset.test, test_rows),
                   cut(dataset.validation, test_rows), dataset.num_classes, dataset.class_names)
