"""Using a trained run elsewhere: predictions for new inputs, and the weights as plain arrays.

Inputs come as npz (an array `x`, or the file's only array), CSV (rows of numbers,
an optional header) or IDX (MNIST's format; unsigned bytes are scaled by 1/255 exactly
as the mnist dataset does, and images are flattened). They are checked against the
model's input size before anything runs. Classifiers give the predicted class and
the probability of each class; other models give their output values.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from . import checkpoint
from .checkpoint import read_npz
from .errors import CheckpointError, ConfigError, DataError

# ---------------------------------------------------------------- reading inputs


def read_inputs(path: str | Path, input_dim: int, dtype: DTypeLike = np.float64) -> np.ndarray:
    """(N, input_dim) features in `dtype` (the run's) from an npz, csv or IDX file; DataError
    if they do not fit. Numbers are read as float64, checked, then cast; IDX bytes become
    exactly the features the mnist dataset gives the same bytes in training."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, what = _npz_features(path), f"{path}"
    elif suffix in (".csv", ".txt", ".tsv"):
        x, what = _csv_features(path, "\t" if suffix == ".tsv" else ","), f"{path}"
    else:
        x, what = _idx_features(path, dtype), f"{path} (IDX)"
    if x.ndim == 1:
        # one feature per row, or one example when the length is the input size
        x = x[:, None] if input_dim == 1 else x[None, :]
    if x.ndim != 2:
        raise DataError(f"{what}: inputs have shape {x.shape}; expected rows of {input_dim} features")
    if x.shape[1] != input_dim:
        raise DataError(f"{what}: {x.shape[1]} features per row, but the model takes {input_dim}")
    if len(x) == 0:
        raise DataError(f"{what}: no rows")
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        i, j = bad[0]
        raise DataError(f"{what}: row {i + 1}, feature {j + 1} is {x[i, j]}; expected finite numbers")
    return x.astype(dtype, copy=False)


def _npz_features(path: Path) -> np.ndarray:
    try:
        arrays = read_npz(path)
    except CheckpointError as exc:
        raise DataError(str(exc)) from None
    if "x" in arrays:
        x = arrays["x"]
    elif len(arrays) == 1:
        x = next(iter(arrays.values()))
    else:
        raise DataError(f"{path}: holds {', '.join(sorted(arrays)) or 'no arrays'}; "
                        "expected an array named 'x' (or a single array)")
    if x.dtype.kind not in "iuf":
        raise DataError(f"{path}: x has dtype {x.dtype}; expected numbers")
    return x.reshape(len(x), -1).astype(np.float64) if x.ndim > 2 else x.astype(np.float64)


def _csv_features(path: Path, delimiter: str) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    rows, width = [], None
    for line_no, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            values = [float(cell) for cell in row]
        except ValueError:
            if not rows and width is None:
                width = len(row)  # a header line: names, not numbers
                continue
            raise DataError(f"{path}:{line_no}: not a number in {row!r}") from None
        if width is not None and len(values) != width:
            raise DataError(f"{path}:{line_no}: {len(values)} columns, expected {width}")
        width = len(values)
        rows.append(values)
    if not rows:
        raise DataError(f"{path}: no rows of numbers")
    return np.array(rows, dtype=np.float64)


def _idx_features(path: Path, dtype: DTypeLike) -> np.ndarray:
    from .data import decode
    from .data.idx import read_idx
    from .data.mnist import PIXEL_SCALE

    x = read_idx(path)
    x = x.reshape(len(x), -1) if x.ndim > 1 else x
    if x.dtype == np.uint8:
        # pixels decoded as the mnist dataset decodes them (in the run's dtype), so that they
        # are the very features an image gave in training and evaluation
        return decode(x, PIXEL_SCALE, np.empty(x.shape, dtype))
    return x.astype(np.float64)


# ---------------------------------------------------------------- predicting


def predict(target: str | Path, input_path: str | Path, weights: str = "ema",
            which: str | int | None = None) -> dict:
    """Predictions of a run (or checkpoint) for the inputs in a file; `which`: latest
    (default), best or a step of the run."""
    from .evaluate import outputs
    from .inspect_run import load_trainer

    trainer, path, meta = load_trainer(target, which=which)
    used = trainer.weights_used(weights)
    ds, model, loss = trainer.dataset, trainer.model, trainer.loss
    x = read_inputs(input_path, ds.input_dim, trainer.dtype)
    out = outputs(model, trainer.eval_params(used), x)
    result = {"checkpoint": str(path), "step": int(meta["step"]), "weights": used, "rows": len(x),
              "dtype": str(trainer.dtype)}
    if ds.has_classes and loss.classify is not None:
        probabilities = loss.predict(out).astype(np.float64)
        names = ds.class_names or [str(i) for i in range(ds.output_dim)]
        result.update(kind="classes", classes=loss.classify(out).astype(np.int64),
                      probabilities=probabilities, columns=[f"p_{n}" for n in names], class_names=names)
    elif trainer.config["loss"]["name"] == "sigmoid_cross_entropy":
        # 0/1 targets through a sigmoid: probabilities of label 1, and the class they give
        probabilities = loss.predict(out).astype(np.float64)
        result.update(kind="probabilities", probabilities=probabilities,
                      columns=[f"p_{j}" for j in range(out.shape[1])])
        if out.shape[1] == 1:
            result["classes"] = (probabilities[:, 0] > 0.5).astype(np.int64)
    else:
        result.update(kind="values", values=np.asarray(out, np.float64),
                      columns=[f"y_{j}" for j in range(out.shape[1])])
    return result


def write_predictions(result: dict, out: str | Path | None) -> str | None:
    """CSV text (returned when `out` is None) or a file: .csv, or .npz with the arrays."""
    header, columns = [], []
    if "classes" in result:
        header.append("class")
        columns.append(result["classes"][:, None])
    matrix = result.get("probabilities", result.get("values"))
    header += result["columns"]
    columns.append(matrix)
    if out is not None and Path(out).suffix.lower() == ".npz":
        arrays = {k: result[k] for k in ("classes", "probabilities", "values") if k in result}
        checkpoint.write_output(Path(out), lambda f: np.savez(f, **arrays))
        return None
    if out is not None and Path(out).suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: expected a .csv or .npz file name")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    table = np.hstack([c.astype(np.float64) for c in columns])
    ints = 1 if "classes" in result else 0
    digits = 9 if result.get("dtype") == "float32" else 17  # enough to give back the model's exact value
    for row in table:
        writer.writerow([str(int(v)) for v in row[:ints]] + [f"{v:.{digits}g}" for v in row[ints:]])
    if out is None:
        return buf.getvalue()
    checkpoint.write_output(Path(out), lambda f: f.write(buf.getvalue().encode()))
    return None


# ---------------------------------------------------------------- export


def export(target: str | Path, out: str | Path, weights: str = "ema", which: str | int | None = None) -> dict:
    """Write the run's parameters as plain named arrays (W, b, ...) to an .npz file.

    The file is what `model.init: {from: FILE}` reads: exactly the model's parameter
    names and shapes, in the run's dtype. EMA weights by default, as `eval` uses.
    """
    from .inspect_run import load_trainer

    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"--out {out}: expected a file name ending in .npz")
    trainer, path, meta = load_trainer(target, which=which)
    used = trainer.weights_used(weights)
    params = trainer.eval_params(used)
    arrays = {k: np.ascontiguousarray(params[k]) for k in trainer.model.names}
    checkpoint.write_output(out, lambda f: np.savez(f, **arrays))
    return {"file": str(out), "checkpoint": str(path), "step": int(meta["step"]), "weights": used,
            "arrays": {k: list(v.shape) for k, v in arrays.items()}, "dtype": str(trainer.dtype)}


