"""float32 stays float32 through training, and float64 works.

Every array that crosses a component boundary in a training step (model outputs and
gradients, the loss gradient, optimizer updates and slots, EMA shadows, evaluation
outputs) is checked against run.dtype, for every model × optimizer and every loss, with
an exponential schedule, L2 and an EMA switched on so that each of their paths runs.
A float64 scalar sneaking into a float32 computation (NumPy promotes to float64 when a
np.float64 meets a float32 array) would silently double the step's cost.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gdtrain.config.validate import resolve
from gdtrain.core.dataset import Dataset, Split
from gdtrain.core.evaluate import evaluate
from gdtrain.core.models import MODELS
from gdtrain.core.optimizers import OPTIMIZERS
from gdtrain.core.train import Trainer

STEPS = 6
FEATURES, CLASSES, TARGETS = 4, 3, 2


def _dataset(dtype: str, classes: bool) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, FEATURES)).astype(dtype)
    if classes:
        y = rng.integers(0, CLASSES, 48)
        return Dataset("blobs", Split(x[:40], y[:40]), Split(x[40:], y[40:]), num_classes=CLASSES)
    y = rng.standard_normal((48, TARGETS)).astype(dtype)
    return Dataset("values", Split(x[:40], y[:40]), Split(x[40:], y[40:]))


def _config(tmp_path, dtype: str, model: str, loss: str, optimizer: str) -> dict:
    model_cfg = {"name": model, **({"hidden": 5} if model == "mlp" else {})}
    if model == "softmax":
        model_cfg["init"] = "glorot_uniform"  # zeros would leave the first steps trivial
    raw = {
        "run": {"name": "dtype", "seed": 0, "dtype": dtype, "dir": str(tmp_path)},
        "data": {"name": "linear_sum"},  # validated only: the test hands the Trainer its own data
        "model": model_cfg,
        "loss": {"name": loss},
        "optimizer": {"name": optimizer, "learning_rate": 0.05},
        "schedule": {"name": "exponential", "decay_rate": 0.9, "decay_steps": 2},
        "l2": {"scale": 1e-3},
        "ema": {"decay": 0.9, "num_updates": True},
        "train": {"batch_size": 8, "steps": STEPS},
    }
    return resolve(raw)


def _float_arrays(value, where: str):
    """(where, array) for every floating array inside nested tuples, lists and dicts."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _float_arrays(v, f"{where}[{k!r}]")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _float_arrays(v, f"{where}[{i}]")


def _checked(fn, name: str, dtype: np.dtype, seen: list[str]):
    """`fn`, asserting that every float array it returns has `dtype`."""

    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        for where, arr in _float_arrays(out, name):
            assert arr.dtype == dtype, f"{where} is {arr.dtype}, expected {dtype}"
            seen.append(where)
        if isinstance(out, tuple) and isinstance(out[0], float):
            assert np.isfinite(out[0]), f"{name} gave a non-finite loss"
        return out

    return wrapper


def _instrumented_trainer(tmp_path, dtype: str, model: str, loss: str, optimizer: str):
    classes = loss != "mse"
    trainer = Trainer(_config(tmp_path, dtype, model, loss, optimizer), _dataset(dtype, classes))
    want = np.dtype(dtype)
    seen: list[str] = []
    trainer.model = dataclasses.replace(
        trainer.model,
        forward=_checked(trainer.model.forward, "forward", want, seen),
        backward=_checked(trainer.model.backward, "backward", want, seen),
    )
    trainer.loss = dataclasses.replace(
        trainer.loss, value_and_grad=_checked(trainer.loss.value_and_grad, "loss", want, seen)
    )
    trainer.optimizer = dataclasses.replace(
        trainer.optimizer, update=_checked(trainer.optimizer.update, "optimizer.update", want, seen)
    )
    return trainer, want, seen


def _train_and_check(tmp_path, dtype: str, model: str, loss: str, optimizer: str) -> Trainer:
    trainer, want, seen = _instrumented_trainer(tmp_path, dtype, model, loss, optimizer)
    for _ in range(STEPS):
        trainer.step()
    # every boundary was crossed and checked on every step
    for part in ("forward", "backward", "loss", "optimizer.update"):
        assert any(w.startswith(part) for w in seen), f"{part} returned no float array"
    for name, arr in trainer.state_arrays().items():
        assert arr.dtype == want, f"{name} is {arr.dtype} after {STEPS} steps, expected {want}"
        assert np.isfinite(arr).all(), name
    ds = trainer.dataset
    result = evaluate(trainer.model, trainer.loss, trainer.eval_params(), ds.test, ds.num_classes)
    assert np.isfinite(result["loss"])
    assert trainer.penalty_terms()["l2"] > 0
    return trainer


def _loss_for(model: str) -> str:
    return "mse" if model == "linear" else "cross_entropy"


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_float32_stays_float32_for_every_model_and_optimizer(tmp_path, model, optimizer):
    _train_and_check(tmp_path, "float32", model, _loss_for(model), optimizer)


@pytest.mark.parametrize("loss", ["cross_entropy", "sigmoid_cross_entropy", "mse"])
def test_float32_stays_float32_for_every_loss(tmp_path, loss):
    _train_and_check(tmp_path, "float32", "mlp", loss, "momentum")


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_float64_trains_in_float64_and_agrees_with_float32(tmp_path, model, optimizer):
    loss = _loss_for(model)
    wide = _train_and_check(tmp_path / "64", "float64", model, loss, optimizer)
    narrow = _train_and_check(tmp_path / "32", "float32", model, loss, optimizer)
    # same initial values (drawn in float64, rounded to float32) and the same batches:
    # the two precisions differ by rounding only
    for name, arr in wide.state_arrays().items():
        other = narrow.state_arrays()[name]
        np.testing.assert_allclose(other, arr, rtol=2e-3, atol=2e-5, err_msg=name)


def test_the_dataset_keeps_its_dtype_through_batching(tmp_path):
    trainer, want, _ = _instrumented_trainer(tmp_path, "float32", "mlp", "cross_entropy", "sgd")
    x, y = trainer.stream.batch(0)
    assert x.dtype == want and y.dtype == np.int64
