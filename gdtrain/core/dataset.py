"""What a dataset is to the math: splits of float features and targets.

A `Dataset` holds `Split`s (train, and optionally test and validation); the loaders of
gdtrain.data build them from files or generators. Training, evaluation and the batch
stream need only these types, so they live here and gdtrain.data imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike


def decode(codes: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """Features from integer codes: codes·scale, written into the float array `out`.

    One cast and one multiply in out's dtype, so a whole split and a gathered batch get
    the same bits (for MNIST's bytes and 1/255, those of TF1's read_data_sets).
    """
    np.copyto(out, codes)
    return np.multiply(out, scale, out=out)


class Split:
    """One split: features x, (N, D) float, and targets y, int64 (N,) class labels or
    float (N, K) values.

    `Split.coded` keeps the features as integer codes with a scale instead (MNIST's
    pixel bytes and 1/255): a quarter of the memory, and training gathers a quarter of
    the bytes per batch and decodes only those rows. `x` is then decoded on first use
    (evaluation, plots) and kept.

    `where(i)`, when the loader knows it, names where example i's targets came from, for
    messages about them found later ("data.npz: array 'y' row 3", "train.csv:5").
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, where: Callable[[int], str] | None = None):
        self.stored, self.y = x, y
        self.scale: float | None = None
        self.dtype = x.dtype  # of the features
        self._x: np.ndarray | None = x
        self.where = where

    @classmethod
    def coded(cls, codes: np.ndarray, scale: float, dtype: DTypeLike, y: np.ndarray) -> Split:
        split = cls(codes, y)
        split.scale, split.dtype, split._x = scale, np.dtype(dtype), None
        return split

    @property
    def x(self) -> np.ndarray:
        if self._x is None:
            self._x = decode(self.stored, self.scale, np.empty(self.stored.shape, self.dtype))
        return self._x

    @property
    def num_features(self) -> int:
        return int(self.stored.shape[1])

    @property
    def nbytes(self) -> int:
        return self.stored.nbytes + self.y.nbytes

    def rows(self, start: int | None = None, stop: int | None = None) -> Split:
        """Rows start:stop, stored the same way (views, no copy)."""
        if self.scale is None:
            part = Split(self.x[start:stop], self.y[start:stop])
        else:
            part = Split.coded(self.stored[start:stop], self.scale, self.dtype, self.y[start:stop])
        if self.where is not None:
            offset, where = range(len(self))[start:stop].start, self.where
            part.where = lambda i: where(i + offset)
        return part

    def __len__(self) -> int:
        return int(self.stored.shape[0])


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
        return self.train.num_features

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.num_classes is not None else int(self.train.y.shape[1])

    @property
    def has_classes(self) -> bool:
        return self.num_classes is not None

    def split(self, name: str) -> Split | None:
        return {"train": self.train, "test": self.test, "validation": self.validation}[name]

    def split_or_train(self, name: str, where: str) -> tuple[str, Split, str | None]:
        """(name used, split, note) to evaluate on. A dataset without a test split (the
        small generators) is scored on its training set, with a note saying so; a missing
        validation split is an error, since it exists only when data.validation asks for
        it. `where` names the option for the error (`--split`, `train.eval_split`)."""
        chosen = self.split(name)
        if chosen is not None:
            return name, chosen, None
        if name == "validation":
            from ..errors import ConfigError

            raise ConfigError(f"{where}: {self.name} has no validation split "
                              "(set data.validation: N to hold some out)")
        return "train", self.train, f"dataset {self.name} has no {name} split; evaluated on the training set"


def head(dataset: Dataset, train_rows: int, test_rows: int) -> Dataset:
    """The first rows of each split: a small slice for smoke runs."""

    def cut(split: Split | None, n: int) -> Split | None:
        return None if split is None else split.rows(None, n)

    return Dataset(dataset.name, cut(dataset.train, train_rows), cut(dataset.test, test_rows),
                   cut(dataset.validation, test_rows), dataset.num_classes, dataset.class_names)
