"""Scoring a set of parameters on a split: loss, accuracy, per-class accuracy, confusion.

Classifiers (class labels, or 0/1 targets) get accuracy, per-class accuracy and a
confusion matrix (rows: true class, columns: predicted); real-valued targets get MSE.
The loss reported is the `mean`-reduced loss over the whole split, whatever the
training reduction, so that figures compare across batch sizes.
"""

from __future__ import annotations

import numpy as np

from .dataset import Split
from .losses import Loss
from .models import Model

_CHUNK = 8192  # rows per forward pass: bounds memory on big splits


def outputs(model: Model, params: dict, x: np.ndarray) -> np.ndarray:
    parts = [model.forward(params, x[i : i + _CHUNK])[0] for i in range(0, len(x), _CHUNK)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _binary(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] == 1 and bool(np.isin(y, (0, 1)).all())


def class_labels(y: np.ndarray) -> np.ndarray | None:
    """Targets as integer classes: class labels as they are, one 0/1 column as 0 and 1,
    None for real values."""
    if y.ndim == 1:
        return y
    return y[:, 0].astype(np.int64) if _binary(y) else None


def predicted_classes(loss: Loss, out: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    if y.ndim == 1 and loss.classify is not None:
        return loss.classify(out)
    if _binary(y):
        return (loss.predict(out)[:, 0] > 0.5).astype(np.int64)
    return None


def reported_metrics(loss: Loss, y: np.ndarray) -> tuple[str, ...]:
    """The figures `evaluate` reports for targets like `y`, by the rules it uses."""
    names = ["loss"]
    if y.ndim == 2:
        names.append("mse")
    if (y.ndim == 1 and loss.classify is not None) or _binary(y):
        names.append("accuracy")
    return tuple(names)


def evaluate(model: Model, loss: Loss, params: dict, split: Split,
             num_classes: int | None) -> dict:
    # finite weights large enough to overflow the outputs give an inf or NaN loss, which says
    # it; NumPy's RuntimeWarnings would only print before the figures
    with np.errstate(all="ignore"):
        return _evaluate(model, loss, params, split, num_classes)


def _evaluate(model: Model, loss: Loss, params: dict, split: Split, num_classes: int | None) -> dict:
    out = outputs(model, params, split.x)
    result: dict = {"examples": len(split), "loss": loss.mean_over(out, split.y)}
    if split.y.ndim == 2:
        # against what the model predicts (sigmoid probabilities for sigmoid cross-entropy),
        # not against raw logits, whose distance to 0/1 targets means nothing
        diff = loss.predict(out) - split.y
        result["mse"] = float(np.mean(np.square(diff, dtype=np.float64)))
    pred = predicted_classes(loss, out, split.y)
    if pred is not None:
        truth = class_labels(split.y)
        k = num_classes or 2
        confusion = np.zeros((k, k), np.int64)
        np.add.at(confusion, (truth, pred), 1)
        per_class_total = confusion.sum(axis=1)
        result["accuracy"] = float(np.trace(confusion) / max(1, len(truth)))
        result["per_class_accuracy"] = [
            float(confusion[i, i] / per_class_total[i]) if per_class_total[i] else None
            for i in range(k)
        ]
        result["confusion"] = confusion.tolist()
    return result


def headline(result: dict) -> tuple[str, float]:
    """The figure to show for a run: accuracy for classifiers, else MSE."""
    if "accuracy" in result:
        return "accuracy", result["accuracy"]
    return "mse", result.get("mse", result["loss"])
