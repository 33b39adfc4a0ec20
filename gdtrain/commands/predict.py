"""Using a trained run elsewhere: predictions for new inputs, and the weights as plain arrays.

Inputs come as npz (an array `x`, or the file's only array), CSV (rows of numbers,
an optional header) or IDX (MNIST's format; images are flattened). They are checked
against the model's input size before anything runs, and put on the scale of the
training features (`to_training_scale`): pixel bytes are decoded exactly as the mnist
dataset decodes them. Classifiers give the predicted class and the probability of each
class; a one-output sigmoid gives the class and P(label = 1); other models give their
output values.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from ..core.dataset import Split
from ..errors import CheckpointError, ConfigError, DataError
from ..run.npz import read_npz
from .out_file import write_output

# ---------------------------------------------------------------- reading inputs


def read_inputs(path: str | Path, input_dim: int, dtype: DTypeLike = np.float64,
                training: Split | None = None) -> np.ndarray:
    """(N, input_dim) features in `dtype` (the run's) from an npz, csv or IDX file; DataError
    if they do not fit. `training` is the split the model was trained on: inputs are put on
    its features' scale (`to_training_scale`); IDX bytes become exactly the features the
    mnist dataset gives the same bytes in training."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    idx = False
    if suffix == ".npz":
        x, what = _npz_features(path), f"{path}"
    elif suffix in (".csv", ".txt", ".tsv"):
        x, what = _csv_features(path, "\t" if suffix == ".tsv" else ","), f"{path}"
    else:
        x, what, idx = _idx_features(path), f"{path} (IDX)", True
    if x.ndim == 1:
        # one feature per row, or one example when the length is the input size
        x = x[:, None] if input_dim == 1 else x[None, :]
    if x.ndim != 2:
        raise DataError(f"{what}: inputs have shape {x.shape}; expected rows of {input_dim} features")
    if x.shape[1] != input_dim:
        raise DataError(f"{what}: {x.shape[1]} features per row, but the model takes {input_dim}")
    if len(x) == 0:
        raise DataError(f"{what}: no rows")
    bad = np.argwhere(~np.isfinite(x)) if x.dtype.kind == "f" else ()
    if len(bad):
        i, j = bad[0]
        raise DataError(f"{what}: row {i + 1}, feature {j + 1} is {x[i, j]}; expected finite numbers")
    if training is not None and training.scale is not None:
        codes = (training.scale, training.stored.dtype)
    elif idx and x.dtype == np.uint8:
        # IDX bytes are MNIST's pixel format: decoded as the mnist dataset decodes them
        from ..data.mnist import PIXEL_SCALE

        codes = (PIXEL_SCALE, np.dtype(np.uint8))
    else:
        codes = None
    return to_training_scale(x, what, dtype, codes)


def to_training_scale(x: np.ndarray, what: str, dtype: DTypeLike,
                      codes: tuple[float, np.dtype] | None) -> np.ndarray:
    """Features on the scale the model was trained on, in `dtype`.

    `codes` is (scale, integer dtype) when the training features were integer codes times
    a scale (what `Split.scale` records: mnist and fashion_mnist store pixel bytes, times
    1/255), else None: inputs are then taken as they are. Against codes, integer inputs
    (IDX, or an npz of integers) are codes, and so are whole numbers in the codes' range
    with some above the features' top (a CSV of 0..255): codes are decoded exactly as
    training decodes them (`data.decode`: the very bits of training). Values within the
    features' range are taken as they are; anything else is refused, saying which scale
    the model expects.
    """
    from ..core.dataset import decode

    if codes is None:
        return x.astype(np.float64).astype(dtype, copy=False)
    scale, code_dtype = codes
    info = np.iinfo(code_dtype)
    low, high = int(info.min), int(info.max)
    top = high * scale  # the features' range is [low·scale, high·scale]: [0, 1] for pixels
    expected = (f"the model was trained on features in [{low * scale:g}, {top:g}] (pixel values "
                f"{low} to {high} times {_fraction(scale)}): give features in that range, or whole "
                f"pixel values {low} to {high}, which are scaled as in training")
    if x.dtype.kind in "iu":
        outside = np.argwhere((x < low) | (x > high))
        if outside.size:
            i, j = outside[0]
            raise DataError(f"{what}: row {i + 1}, feature {j + 1} is {x[i, j]}; {expected}")
        return decode(x, scale, np.empty(x.shape, dtype))
    features = (x >= low * scale) & (x <= top)
    if features.all():
        return x.astype(dtype, copy=False)
    whole = (x >= low) & (x <= high) & (x == np.round(x))
    if whole.all():
        return decode(x, scale, np.empty(x.shape, dtype))
    either = features | whole
    if not either.all():
        (i, j), mixed = np.argwhere(~either)[0], ""
    else:  # each value fits one scale, but not all the same one: fractions among pixel values
        (i, j), mixed = np.argwhere(~whole)[0], " among whole pixel values"
    raise DataError(f"{what}: row {i + 1}, feature {j + 1} is {x[i, j]:g}{mixed}; {expected}")


def _fraction(scale: float) -> str:
    inverse = round(1 / scale)
    return f"1/{inverse}" if inverse * scale == 1 else f"{scale:g}"


def _npz_features(path: Path) -> np.ndarray:
    """The inputs as stored (integers stay integers: they may be pixel codes)."""
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
    x = x.reshape(len(x), -1) if x.ndim > 2 else x
    return x.astype(np.float64) if x.dtype.kind == "f" else x


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


def _idx_features(path: Path) -> np.ndarray:
    from ..data.idx import read_idx

    x = read_idx(path)
    x = x.reshape(len(x), -1) if x.ndim > 1 else x
    return x if x.dtype.kind in "iu" else x.astype(np.float64)


# ---------------------------------------------------------------- predicting


def predict(target: str | Path, input_path: str | Path, weights: str = "ema",
            which: str | int | None = None) -> dict:
    """Predictions of a run (or checkpoint) for the inputs in a file; `which`: latest
    (default), best or a step of the run."""
    from ..core.evaluate import outputs
    from ..run.inspect_run import load_trainer

    trainer, path, meta = load_trainer(target, which=which)
    used = trainer.weights_used(weights)
    ds, model, loss = trainer.dataset, trainer.model, trainer.loss
    x = read_inputs(input_path, ds.input_dim, trainer.dtype, ds.train)
    out = outputs(model, trainer.eval_params(used), x)
    result = {"checkpoint": str(path), "step": int(meta["step"]), "weights": used, "rows": len(x),
              "dtype": str(trainer.dtype)}
    if ds.has_classes and loss.classify is not None:
        probabilities = loss.predict(out).astype(np.float64)
        names = ds.class_names or [str(i) for i in range(ds.output_dim)]
        result.update(kind="classes", classes=loss.classify(out).astype(np.int64),
                      probabilities=probabilities, columns=[f"p_{n}" for n in names], class_names=names)
    elif loss.predicts == "per_output" and out.shape[1] == 1:
        # one 0/1 target through a sigmoid: the probability of label 1 (not of class 0, as
        # a column p_0 would say), and the class it gives
        p_1 = loss.predict(out).astype(np.float64)[:, 0]
        result.update(kind="probabilities", classes=(p_1 > 0.5).astype(np.int64), p_1=p_1,
                      columns=["p_1"])
    elif loss.predicts == "per_output":
        # several 0/1 targets through sigmoids: p_j is the probability that target j is 1
        probabilities = loss.predict(out).astype(np.float64)
        result.update(kind="probabilities", probabilities=probabilities,
                      columns=[f"p_{j}" for j in range(out.shape[1])])
    else:
        result.update(kind="values", values=np.asarray(out, np.float64),
                      columns=[f"y_{j}" for j in range(out.shape[1])])
    return result


# What an npz of predictions holds: `classes` (N,); then `probabilities` (N, K) whose column
# j is the CSV's column p_j, `p_1` (N,) for a one-output sigmoid (P(label = 1): a lone
# `probabilities` column would read as class 0's), or `values` (N, K).
PREDICTION_ARRAYS = ("classes", "probabilities", "p_1", "values")


def write_predictions(result: dict, out: str | Path | None) -> str | None:
    """CSV text (returned when `out` is None) or a file: .csv, or .npz with the arrays."""
    header, columns = [], []
    if "classes" in result:
        header.append("class")
        columns.append(result["classes"][:, None])
    matrix = result["p_1"][:, None] if "p_1" in result else result.get("probabilities", result.get("values"))
    header += result["columns"]
    columns.append(matrix)
    if out is not None and Path(out).suffix.lower() == ".npz":
        arrays = {k: result[k] for k in PREDICTION_ARRAYS if k in result}
        write_output(Path(out), lambda f: np.savez(f, **arrays))
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
    write_output(Path(out), lambda f: f.write(buf.getvalue().encode()))
    return None


# ---------------------------------------------------------------- export


def export(target: str | Path, out: str | Path, weights: str = "ema", which: str | int | None = None) -> dict:
    """Write the run's parameters as plain named arrays (W, b, ...) to an .npz file.

    The file is what `model.init: {from: FILE}` reads: exactly the model's parameter
    names and shapes, in the run's dtype. EMA weights by default, as `eval` uses.
    """
    from ..run.inspect_run import load_trainer

    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"--out {out}: expected a file name ending in .npz")
    trainer, path, meta = load_trainer(target, which=which)
    used = trainer.weights_used(weights)
    params = trainer.eval_params(used)
    arrays = {k: np.ascontiguousarray(params[k]) for k in trainer.model.names}
    write_output(out, lambda f: np.savez(f, **arrays))
    return {"file": str(out), "checkpoint": str(path), "step": int(meta["step"]), "weights": used,
            "arrays": {k: list(v.shape) for k, v in arrays.items()}, "dtype": str(trainer.dtype)}


