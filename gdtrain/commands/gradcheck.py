"""Gradient check: the analytic gradient of the objective against central differences.

The objective is the data loss plus every configured penalty's term (core/chain.py), built
by the Trainer in float64 from the same parts a step uses, on a small batch (the first
training examples). The parameters are the run's initial values plus a little seeded
noise, so that symmetric initialisations (all zeros) cannot hide an error and no ReLU
unit (nor an L1 penalty's weight) sits exactly on its kink. For every trainable
parameter a sample of entries is perturbed by ±h; the error of a parameter is

    max |analytic - numeric| / max(|analytic|, |numeric|)   over its checked entries,

a relative error that stays meaningful when single entries of the gradient are 0.

A model with dropout is checked with its masks held fixed: every evaluation, the analytic
gradient's and each perturbed one, uses the dropout key of the run's first step, so the
differences see the very function the backward pass differentiates.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..core.dataset import Split
from ..core.train import Trainer
from ..data import load_dataset
from ..run.npz import read_npz

TOLERANCE = 1e-6
STEP = 1e-6  # h, relative to max(1, |value|): float64 central differences are best near 1e-5..1e-6


def gradcheck(config: dict, batch: int = 8, entries: int = 20, tolerance: float = TOLERANCE,
              jitter: float = 0.01, seed: int = 0) -> dict:
    """Check the configured gradient; a dict with one row per trainable parameter."""
    full = load_dataset(config["data"], config["run"]["dtype"])
    batch = max(1, min(batch, len(full.train)))
    # the first `batch` training examples, in float64: converting only them keeps MNIST cheap
    x = full.train.x[:batch].astype(np.float64)
    y = full.train.y[:batch]
    y = y if y.dtype.kind == "i" else y.astype(np.float64)
    # the other splits stay as they are: the Trainer checks the config against them
    # (train.eval_split: validation), though the check itself uses the training batch only
    dataset = dataclasses.replace(full, train=Split(x, y))
    cfg = copy.deepcopy(config)
    cfg["run"]["dtype"] = "float64"
    cfg["train"]["batch_size"] = batch
    trainer = Trainer(cfg, dataset, read_arrays=read_npz)
    model, loss = trainer.model, trainer.loss
    rng = np.random.default_rng(seed)
    params = {k: v + jitter * rng.standard_normal(v.shape) for k, v in trainer.params.items()}
    # one key for every evaluation: the masks stay fixed while entries are perturbed
    dropout_key = (trainer.seed, 0) if model.dropout else None

    def objective() -> float:
        out, _ = model.forward(params, x, dropout_key)
        value, _ = loss.value_and_grad(out, y)
        return value + sum(trainer.penalty_terms(params).values())

    value, grads = trainer.gradients(params, x, y, dropout_key)  # the very code a training step runs

    rows = []
    for name in trainer.trainable:
        flat = params[name].reshape(-1)  # a view: perturbing it perturbs the parameter
        size = flat.size
        picked = np.arange(size) if size <= entries else np.sort(rng.choice(size, entries, replace=False))
        analytic = grads.get(name)
        if analytic is None or np.shape(analytic) != params[name].shape:
            rows.append({"name": name, "shape": list(params[name].shape), "checked": 0, "size": size,
                         "max_abs_grad": None, "max_abs_error": None, "relative_error": float("inf"),
                         "ok": False, "problem": "backward returned no gradient of this shape"
                         if analytic is not None else "backward returned no gradient"})
            continue
        a = np.asarray(analytic, np.float64).reshape(-1)[picked]
        numeric = np.array([_central(objective, flat, int(i), STEP) for i in picked])
        # an entry far off may have crossed a kink within h: try a smaller h, keep the closer
        scale = max(float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(numeric), initial=0)))
        for j in np.flatnonzero(~(np.abs(a - numeric) <= tolerance * scale)):
            finer = _central(objective, flat, int(picked[j]), STEP / 100)
            if abs(a[j] - finer) < abs(a[j] - numeric[j]):
                numeric[j] = finer
        error = np.abs(a - numeric)
        scale = max(float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(numeric), initial=0)))
        worst = float(np.max(error, initial=0))
        relative = worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))
        if not np.isfinite(scale):
            relative = float("nan")
        rows.append({"name": name, "shape": list(params[name].shape), "checked": int(len(picked)),
                     "size": int(size), "max_abs_grad": scale, "max_abs_error": worst,
                     "relative_error": relative, "ok": bool(relative <= tolerance)})
    return {
        "model": cfg["model"]["name"],
        "loss": cfg["loss"]["name"],
        "penalties": [p.describe() for p in trainer.penalties],
        "batch": batch,
        "dropout_key": list(dropout_key) if dropout_key else None,
        "objective": value + sum(trainer.penalty_terms(params).values()),
        "tolerance": tolerance,
        "frozen": [k for k in trainer.model.names if k not in trainer.trainable_set],
        "params": rows,
        "ok": all(r["ok"] for r in rows),
    }


def _central(objective, flat: np.ndarray, i: int, step: float) -> float:
    original = flat[i]
    h = step * max(1.0, abs(float(original)))
    h = (original + h) - original  # the step the float64 grid really takes
    flat[i] = original + h
    plus = objective()
    flat[i] = original - h
    minus = objective()
    flat[i] = original
    return (plus - minus) / (2 * h)
