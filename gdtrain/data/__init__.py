"""Datasets: each is a registered factory returning a `Dataset` of float arrays.

A dataset factory takes its options as keyword arguments plus the injected `dtype`
(numpy dtype for features) and returns a `Dataset`. To add one: write a function in
a module of this package, decorate it with `@DATASETS.register("name")`, and import
that module at the bottom of this file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from ..core.dataset import Dataset
from ..core.registry import Registry

DATASETS = Registry("dataset", injected=("dtype",))


@contextlib.contextmanager
def file_errors(path, expected: str, *, directory: str | None = None,
                unreadable: str = "cannot read: {reason}", also: tuple[type[Exception], ...] = ()
                ) -> Iterator[None]:
    """Turn an error opening or reading the data file `path` into a one-line DataError:

        {path}: no such file; expected {expected}
        {path}: is a directory; expected {directory, or else expected}
        {path}: {unreadable}   for any other OSError, and for the exceptions in `also`;
                               formatted with {reason} (the OS's strerror, else the error)
                               and {exc} (the error)
    """
    from ..errors import DataError

    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; expected {expected}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; expected {directory or expected}") from None
    except (OSError, *also) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DataError(f"{path}: " + unreadable.format(reason=reason, exc=exc)) from None


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
    dataset.validation = tr.rows(None, count)
    dataset.train = tr.rows(count)
    return dataset


def load_dataset(data_cfg: dict, dtype: str) -> Dataset:
    """The dataset a resolved config's `data` section names."""
    options = {k: v for k, v in data_cfg.items() if k != "name"}
    return DATASETS.build(data_cfg["name"], options, "data", dtype=np.dtype(dtype))


# Importing the modules registers their datasets.
from . import files, mnist, synthetic  # noqa: E402,F401
