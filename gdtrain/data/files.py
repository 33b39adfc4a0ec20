"""Datasets from the user's own files: `npz` (numpy arrays) and `csv` (a table of numbers).

Both check everything a model would otherwise trip over later, with messages that say
where (file, array or line) and what was expected: shapes, numeric types, NaN/inf,
class labels in range.
"""

from __future__ import annotations

import csv
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from numpy.typing import DTypeLike

from ..core.dataset import Dataset, Split
from ..core.registry import NonNegativeInt, OneOf, PathText, PositiveInt
from ..errors import DataError
from . import DATASETS, file_errors, hold_out

# ----------------------------------------------------------------------------- npz


@DATASETS.register("npz")
def npz(
    path: PathText,
    num_classes: PositiveInt | None = None,
    validation: NonNegativeInt = 0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Arrays from a .npz file: x, y and optionally x_test, y_test.

    x is (N, D) numbers (a 1-D x is one feature). An integer y holds class labels; a
    float y holds real-valued targets, (N,) or (N, K).

    path: the .npz file (np.savez); a relative path is relative to the config file's directory
      (to the working directory when given with --set)
    num_classes: number of classes for integer labels (default: largest label + 1)
    validation: move the first N training examples into a validation split
    """
    arrays = _load_npz(path)
    has_test = _test_arrays_present(arrays, path)
    names = ("x", "y", "x_test", "y_test") if has_test else ("x", "y")
    what = {name: f"{path}: array '{name}'" for name in names}
    xs = [_features(arrays[name], what[name], dtype) for name in names[::2]]
    ys = [arrays[name] for name in names[1::2]]
    if _npz_is_classes(ys[0], num_classes, what["y"]):
        ys = [_labels(y, what[name]) for y, name in zip(ys, names[1::2], strict=True)]
        num_classes = num_classes or _max_label_plus_one(ys)
        for y, name in zip(ys, names[1::2], strict=True):
            _check_label_range(y, num_classes, lambda i, name=name: f"{what[name]} index {i}")
    else:
        ys = [_targets(y, what[name], dtype) for y, name in zip(ys, names[1::2], strict=True)]
    for x, y, xn, yn in zip(xs, ys, names[::2], names[1::2], strict=True):
        _same_rows(x, y, f"{path}: arrays '{xn}' and '{yn}'")
    if has_test:
        _same_width(xs[0], xs[1], f"{path}: arrays 'x' and 'x_test'")
        if num_classes is None:
            _same_width(ys[0], ys[1], f"{path}: arrays 'y' and 'y_test'")
    test = Split(xs[1], ys[1], lambda i: f"{what['y_test']} row {i}") if has_test else None
    train = Split(xs[0], ys[0], lambda i: f"{what['y']} row {i}")
    ds = Dataset(name="npz", train=train, test=test, num_classes=num_classes)
    return hold_out(ds, validation)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array in the file; object (pickled) arrays are refused, not unpickled."""
    with file_errors(path, "a .npz file with arrays x and y", directory="a .npz file",
                     unreadable="not a readable .npz file ({exc})",
                     also=(ValueError, EOFError, zipfile.BadZipFile)):
        f = np.load(path, allow_pickle=False)
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array; expected a .npz with arrays x and y")
    with f:
        try:
            return {name: _npz_array(f, name, path) for name in f.files}
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: damaged .npz file ({exc})") from None


def _npz_array(f: np.lib.npyio.NpzFile, name: str, path: str) -> np.ndarray:
    try:
        return f[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: array '{name}' holds Python objects (dtype object); "
                "expected a numeric array (save with e.g. x.astype(float))"
            ) from None
        raise


def _test_arrays_present(arrays: dict[str, np.ndarray], path: str) -> bool:
    present = ", ".join(sorted(arrays)) or "none"
    for name in ("x", "y"):
        if name not in arrays:
            raise DataError(
                f"{path}: no array '{name}'; arrays present: {present}; "
                "expected x, y and optionally x_test, y_test"
            )
    has = [name in arrays for name in ("x_test", "y_test")]
    if any(has) and not all(has):
        only, other = ("x_test", "y_test") if has[0] else ("y_test", "x_test")
        raise DataError(f"{path}: has '{only}' but no '{other}'; arrays present: {present}")
    return all(has)


def _npz_is_classes(y: np.ndarray, num_classes: int | None, what: str) -> bool:
    """Integer (or bool) y holds class labels, float y targets unless num_classes is set."""
    if y.dtype.kind not in "iubf":
        raise DataError(f"{what} has dtype {y.dtype}; expected integer labels or float targets")
    return y.dtype.kind != "f" or num_classes is not None


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    """int64 (N,) class labels from integer or whole-valued float labels, (N,) or (N, 1)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{what} has shape {y.shape}; expected (N,) class labels "
            "(float targets for several outputs)"
        )
    if y.dtype.kind not in "iubf":
        raise DataError(f"{what} has dtype {y.dtype}; expected integer class labels")
    return _whole_labels(y, lambda i: f"{what} index {i}", "expected integer class labels")


def _whole_labels(y: np.ndarray, where, expected: str) -> np.ndarray:
    """int64 labels from integers or whole-valued floats: a fraction, NaN or inf is refused,
    not truncated, as `{where(i)}: label {value} is not a whole number; {expected}`."""
    if y.dtype.kind == "f":
        fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if fractional.size:
            i = int(fractional[0])
            raise DataError(f"{where(i)}: label {float(y[i])} is not a whole number; {expected}")
    return y.astype(np.int64)


def _max_label_plus_one(label_arrays: list[np.ndarray]) -> int:
    """The default class count: one more than the largest label anywhere (at least 1)."""
    return max([int(a.max()) + 1 for a in label_arrays if a.size] + [1])


def _targets(y: np.ndarray, what: str, dtype: DTypeLike) -> np.ndarray:
    """(N, K) finite real targets of `dtype`; a 1-D y becomes (N, 1)."""
    if y.dtype.kind != "f":
        raise DataError(f"{what} has dtype {y.dtype}; expected float targets like 'y'")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise DataError(f"{what} has shape {y.shape}; expected (N,) or (N, K) targets")
    targets = _contiguous(y, dtype)
    _check_finite(targets, y, lambda i, j: f"{what} row {i}, column {j}")
    return targets


def _features(x: np.ndarray, what: str, dtype: DTypeLike) -> np.ndarray:
    """(N, D) finite features of `dtype`, C-contiguous."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {x.dtype}; expected numbers")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(
            f"{what} has shape {x.shape}; expected 2-D (N, features): "
            "flatten it first, e.g. x.reshape(len(x), -1)"
        )
    if len(x) == 0:
        raise DataError(f"{what} has no rows; expected at least one example")
    out = _contiguous(x, dtype)
    _check_finite(out, x, lambda i, j: f"{what} row {i}, column {j}")
    return out


def _same_rows(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if len(a) != len(b):
        raise DataError(f"{what} have {len(a)} and {len(b)} rows; expected the same count")


def _same_width(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"{what} have {a.shape[1]} and {b.shape[1]} columns; expected the same count"
        )


# ----------------------------------------------------------------------- checks


def _check_finite(converted: np.ndarray, original: np.ndarray, where) -> None:
    """Refuse NaN/inf, including finite values that overflow the target dtype.

    `where(i, j)` names the cell at row i, column j (0-based) in the message.
    """
    bad = ~np.isfinite(converted)
    if not bad.any():
        return
    i, j = (int(k) for k in np.argwhere(bad)[0])
    value = (original[i, j] if original.ndim == 2 else original[i]).item()
    if np.isfinite(value):
        problem = f"value {value!r} overflows {converted.dtype}"
    else:
        problem = f"non-finite value {float(value)}"
    raise DataError(f"{where(i, j)}: {problem}; expected finite numbers")


def _contiguous(a: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """C-contiguous copy in `dtype`; overflow to inf is reported by _check_finite instead."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(a, dtype=dtype)


def _check_label_range(labels: np.ndarray, num_classes: int | None, where) -> None:
    """Labels must be in 0..num_classes-1; `where(i)` names example i in the message."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where(i)}: class label {int(labels[i])} ({bad.size} bad in all); "
            f"expected 0 to {num_classes - 1} (num_classes {num_classes})"
        )


# ----------------------------------------------------------------------------- csv

_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_BLOCK_ROWS = 4096  # rows converted per numpy call: bounds the memory held as strings


@dataclass
class _Table:
    """A parsed CSV file: every cell as float64, plus what error messages need."""

    values: np.ndarray  # (N, columns) float64
    lines: np.ndarray  # (N,) line number of each row in the file
    columns: int
    labels_are_integers: bool  # every cell of the label columns is an integer literal


@DATASETS.register("csv")
def csv_dataset(
    path: PathText,
    test_path: PathText | None = None,
    label_columns: PositiveInt = 1,
    labels: Annotated[str, OneOf("auto", "class", "value")] = "auto",
    header: Annotated[str, OneOf("auto", "yes", "no")] = "auto",
    delimiter: str = ",",
    num_classes: PositiveInt | None = None,
    validation: NonNegativeInt = 0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """A table of numbers in a CSV file: feature columns, then the label column(s) last.

    path: the training CSV file; a relative path is relative to the config file's directory
      (to the working directory when given with --set)
    test_path: an optional test CSV file with the same columns, relative like path
    label_columns: how many trailing columns are targets
    labels: auto (class if num_classes is set or all label cells are integers), class or value
    header: auto (a header if the first row has a non-numeric cell), yes or no
    delimiter: the single character between cells
    num_classes: number of classes for class labels (default: largest label + 1)
    validation: move the first N training rows into a validation split
    """
    if len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character, got {delimiter!r}")
    if (labels == "class" or num_classes is not None) and label_columns != 1:
        raise ValueError(f"class labels take one label column, got label_columns {label_columns}")
    if labels == "value" and num_classes is not None:
        raise ValueError("num_classes applies to class labels, not to labels: value")
    sources = [(path, _read_table(path, delimiter, header, label_columns))]
    if test_path is not None:
        test = _read_table(test_path, delimiter, header, label_columns)
        if test.columns != sources[0][1].columns:
            raise DataError(
                f"{test_path}: {test.columns} columns but {path} has {sources[0][1].columns}; "
                "expected the same columns"
            )
        sources.append((test_path, test))
    if labels == "auto":
        whole = label_columns == 1 and all(t.labels_are_integers for _, t in sources)
        labels = "class" if num_classes is not None or whole else "value"
    if labels == "class":
        ys = [_table_labels(t, p) for p, t in sources]
        num_classes = num_classes or _max_label_plus_one(ys)
        for (p, t), y in zip(sources, ys, strict=True):
            _check_label_range(y, num_classes, lambda i, p=p, t=t: f"{p}:{t.lines[i]}")
    else:
        ys = [_table_targets(t, p, label_columns, dtype) for p, t in sources]
    splits = [
        Split(_table_features(t, p, label_columns, dtype), y, lambda i, p=p, t=t: f"{p}:{t.lines[i]}")
        for (p, t), y in zip(sources, ys, strict=True)
    ]
    ds = Dataset(
        name="csv",
        train=splits[0],
        test=splits[1] if len(splits) > 1 else None,
        num_classes=num_classes if labels == "class" else None,
    )
    return hold_out(ds, validation)


def _table_features(table: _Table, path: str, label_columns: int, dtype: DTypeLike) -> np.ndarray:
    features = table.values[:, :-label_columns]
    x = _contiguous(features, dtype)
    _check_finite(x, features, lambda i, j: f"{path}:{table.lines[i]}: column {j + 1}")
    return x


def _table_targets(table: _Table, path: str, label_columns: int, dtype: DTypeLike) -> np.ndarray:
    targets = table.values[:, -label_columns:]
    y = _contiguous(targets, dtype)
    first = table.columns - label_columns + 1  # 1-based column of the first label

    def where(i: int, j: int) -> str:
        return f"{path}:{table.lines[i]}: column {first + j} (a label)"

    _check_finite(y, targets, where)
    return y


def _table_labels(table: _Table, path: str) -> np.ndarray:
    """int64 class labels from the last column; fractions are refused, not truncated."""
    return _whole_labels(table.values[:, -1], lambda i: f"{path}:{table.lines[i]}",
                         "expected class labels 0, 1, ... (labels: value for real-valued targets)")


def _read_table(path: str, delimiter: str, header: str, label_columns: int) -> _Table:
    """Parse the file; ragged rows and non-numeric cells fail with their line and column."""
    blocks, lines = [], []
    all_int = True
    columns = None
    for block, block_lines, width in _row_blocks(path, delimiter, header):
        columns = width
        if columns <= label_columns:
            raise DataError(
                f"{path}: {columns} columns but label_columns is {label_columns}; "
                "expected at least one feature column before the labels"
            )
        blocks.append(_to_numbers(block, block_lines, path))
        lines.extend(block_lines)
        all_int = all_int and all(
            _INTEGER.fullmatch(cell) for row in block for cell in row[-label_columns:]
        )
    if not blocks:
        raise DataError(f"{path}: no data rows; expected rows of numbers")
    return _Table(np.concatenate(blocks), np.asarray(lines), columns, all_int)


def _row_blocks(
    path: str, delimiter: str, header: str
) -> Iterator[tuple[list[list[str]], list[int], int]]:
    """Yield (rows, line numbers, column count) in blocks, checking every row's width."""
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        rows = _nonblank_rows(reader, path)
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}: empty file; expected rows of numbers")
        first_line, first_row = first
        width = len(first_row)
        skip_first = header == "yes" or (header == "auto" and _has_text(first_row))
        origin = f"the {'header' if skip_first else 'first row'} on line {first_line}"
        block, block_lines = ([], []) if skip_first else ([first_row], [first_line])
        for line, row in rows:
            if len(row) != width:
                raise DataError(
                    f"{path}:{line}: {len(row)} columns; expected {width} (as in {origin})"
                )
            block.append(row)
            block_lines.append(line)
            if len(block) == _BLOCK_ROWS:
                yield block, block_lines, width
                block, block_lines = [], []
        if block:
            yield block, block_lines, width


def _nonblank_rows(reader, path: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for each non-blank row; csv.Error becomes DataError."""
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _open_text(path: str):
    with file_errors(path, "a CSV file"):
        # utf-8-sig drops the byte-order mark that spreadsheet exports often start with.
        return open(path, newline="", encoding="utf-8-sig")


def _has_text(row: list[str]) -> bool:
    """A non-numeric, non-empty cell: a header row (an empty cell alone is a data error)."""
    return not _is_numeric([cell for cell in row if cell.strip()])


def _is_numeric(row: list[str]) -> bool:
    try:
        np.array(row).astype(np.float64)
    except ValueError:
        return False
    return True


def _to_numbers(rows: list[list[str]], lines: list[int], path: str) -> np.ndarray:
    """Convert a block in one numpy call; on failure, find the first bad cell to report."""
    try:
        return np.array(rows).astype(np.float64)
    except ValueError:
        pass
    # The same parser, cell by cell, so "bad" means exactly what failed above.
    for line, row in zip(lines, rows, strict=True):
        for column, cell in enumerate(row, start=1):
            if not _is_numeric([cell]):
                raise DataError(
                    f"{path}:{line}: column {column}: {cell!r} is not a number; "
                    "expected a number in every cell after the header"
                )
    raise DataError(f"{path}: lines {lines[0]}-{lines[-1]}: cells could not be read as numbers")
