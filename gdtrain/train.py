"""The training step and the state it carries, built from a resolved config.

`Trainer` owns the parameters, optimizer slots, EMA shadows and step counter; one
call to `step()` does exactly one update in TF1's order: forward, loss, backward,
L2 gradient, optimizer update applied, then the EMA of the updated values. It knows
nothing about files or printing; `runner.py` drives it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from . import compute
from .batching import BatchStream
from .config import match_patterns
from .data import Dataset
from .errors import CheckpointError, ConfigError, DataError, DivergedError
from .initializers import INITIALIZERS
from .losses import LOSSES, Loss
from .models import MODELS, Model
from .optimizers import OPTIMIZERS, Optimizer
from .schedules import build_schedule

_INIT_STREAM = 0
WEIGHTS = ("ema", "raw")  # what evaluation, prediction and export may use


def check_loss_fits(loss_name: str, loss: Loss, dataset: Dataset, model_cfg: dict) -> None:
    """Refuse a loss that cannot be computed on these labels."""
    y = dataset.train.y
    if dataset.has_classes and not loss.accepts_classes:
        raise ConfigError(
            f"loss.name: {loss_name} needs real-valued targets, but dataset "
            f"'{dataset.name}' has class labels; use cross_entropy or sigmoid_cross_entropy"
        )
    if not dataset.has_classes and loss_name == "cross_entropy" and y.shape[1] < 2:
        raise ConfigError(
            f"loss.name: cross_entropy needs two or more outputs, but dataset '{dataset.name}' "
            "has one target column; use sigmoid_cross_entropy for 0/1 labels or mse"
        )


def total_steps(train_cfg: dict, n_train: int) -> int:
    if train_cfg.get("steps") is not None:
        return int(train_cfg["steps"])
    return max(1, math.ceil(train_cfg["epochs"] * n_train / train_cfg["batch_size"]))


def _param_rng(seed: int, name: str) -> np.random.Generator:
    # one stream per parameter name, so adding a parameter never shifts another's values
    return np.random.default_rng([seed, _INIT_STREAM, zlib.crc32(name.encode())])


def initial_params(model: Model, init_cfg, seed: int, dtype) -> dict[str, np.ndarray]:
    """Initial values per model.init: a name, {name, options}, {from: npz} or per parameter."""
    if isinstance(init_cfg, dict) and "from" in init_cfg:
        from .checkpoint import read_npz

        path = init_cfg["from"]
        try:
            arrays = read_npz(path, expected=model.shapes)
        except CheckpointError as exc:
            raise DataError(f"model.init.from: {exc}") from None
        missing = [k for k in model.shapes if k not in arrays]
        if missing:
            raise DataError(f"model.init.from: {path} lacks {', '.join(missing)} "
                            f"(has {', '.join(arrays) or 'nothing'})")
        return {k: arrays[k].astype(dtype) for k in model.shapes}
    specs: dict = dict(model.default_init)
    if isinstance(init_cfg, str) or (isinstance(init_cfg, dict) and "name" in init_cfg):
        # one initializer for the model: the weight matrices; biases stay at zero
        for name in model.weights:
            specs[name] = init_cfg
    elif isinstance(init_cfg, dict):
        specs.update(init_cfg)
    params = {}
    for name, shape in model.shapes.items():
        spec = specs[name]
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        kind = spec.pop("name")
        params[name] = INITIALIZERS.build(
            kind, spec, f"model.init.{name}", shape=shape, rng=_param_rng(seed, name), dtype=dtype
        )
    return params


@dataclass(slots=True)  # one per step: slots make it cheaper to create
class StepResult:
    step: int  # updates done, this one included
    loss: float  # data loss of the batch before the update
    lr: float


class Trainer:
    def __init__(self, config: dict, dataset: Dataset):
        compute.reuse_freed_memory()  # else every step faults its temporaries in anew
        self.config = config
        self.dataset = dataset
        run, train = config["run"], config["train"]
        self.seed = run["seed"]
        self.dtype = np.dtype(run["dtype"])
        model_opts = {k: v for k, v in config["model"].items() if k not in ("name", "init")}
        self.model: Model = MODELS.build(
            config["model"]["name"], model_opts, "model",
            input_dim=dataset.input_dim, output_dim=dataset.output_dim,
        )
        loss_opts = {k: v for k, v in config["loss"].items() if k != "name"}
        self.loss: Loss = LOSSES.build(config["loss"]["name"], loss_opts, "loss")
        check_loss_fits(config["loss"]["name"], self.loss, dataset, config["model"])
        opt_opts = {k: v for k, v in config["optimizer"].items() if k != "name"}
        self.optimizer: Optimizer = OPTIMIZERS.build(config["optimizer"]["name"], opt_opts, "optimizer")

        n_train = len(dataset.train)
        if train["batch_size"] > n_train:
            # every batch would repeat examples; it is nearly always a typo (and a huge one
            # would only fail later, allocating the batch buffers)
            raise ConfigError(
                f"train.batch_size: {train['batch_size']} is more than the {n_train} training "
                f"examples of dataset '{dataset.name}'; use at most {n_train}"
            )
        dataset.split_or_train(train["eval_split"], "train.eval_split")  # refused now, not mid-run
        self.stream = BatchStream(dataset.train, train["batch_size"], run["seed"], train["shuffle"])
        self.total_steps = total_steps(train, len(dataset.train))
        self.schedule = build_schedule(config.get("schedule"), self.optimizer.learning_rate,
                                       self.stream.steps_per_epoch, self.total_steps)

        names = self.model.names
        self.trainable, _ = match_patterns(train["trainable"], names)
        self.trainable_set = frozenset(self.trainable)
        l2 = config.get("l2")
        self.l2_scale = float(l2["scale"]) if l2 else 0.0
        self.l2_params = match_patterns(l2["params"], names)[0] if l2 else []
        ema = config.get("ema")
        self.ema_decay = float(ema["decay"]) if ema else None
        self.ema_num_updates = bool(ema["num_updates"]) if ema else False

        self.params = initial_params(self.model, config["model"].get("init"), run["seed"], self.dtype)
        self.step_count = 0
        self.opt_state = self.optimizer.init({k: self.params[k] for k in self.trainable})
        # TF1: shadows start at the variables' initial values, for trainable variables only
        self.ema = {k: self.params[k].copy() for k in self.trainable} if ema else None

    # ------------------------------------------------------------ one update

    def lr(self, step: int) -> float:
        return float(self.schedule(step))

    def ema_decay_at(self, updates_done: int) -> float:
        d = self.ema_decay
        if self.ema_num_updates:
            d = min(d, (1.0 + updates_done) / (10.0 + updates_done))
        return d

    def gradients(self, params: dict, x, y, dropout_key=None) -> tuple[float, dict]:
        """(data loss, gradients of data loss + L2) of the trainable parameters on (x, y):
        what a step descends, and what `gradcheck` checks. dropout_key: (seed, step), the
        dropout masks' source (None: no dropout)."""
        out, cache = self.model.forward(params, x, dropout_key)
        loss, dout = self.loss.value_and_grad(out, y)
        grads = self.model.backward(params, cache, dout, self.trainable_set)
        for k in self.l2_params:
            if k in grads:
                grads[k] += self.l2_scale * params[k]
        return loss, grads

    def step(self) -> StepResult:
        step = self.step_count
        x, y = self.stream.batch(step)
        # dropout masks from (seed, step), like the batch: a resume draws the same ones
        loss, grads = self.gradients(self.params, x, y, (self.seed, step))
        if not math.isfinite(loss):
            raise DivergedError(self.divergence_message(step, f"loss is {loss}"))
        lr = self.lr(step)
        updates, self.opt_state = self.optimizer.update(grads, self.opt_state, lr)
        for k, u in updates.items():
            self.params[k] += u
        self.step_count = step + 1
        if self.ema is not None:
            t = self.dtype.type
            one_minus_decay = t(1) - t(self.ema_decay_at(self.step_count))
            for k, shadow in self.ema.items():
                shadow -= (shadow - self.params[k]) * one_minus_decay
        return StepResult(self.step_count, loss, lr)

    def divergence_message(self, step: int, what: str) -> str:
        """Name the step and the array to blame: the non-finite parameters, or, when every
        parameter is still finite (the outputs overflowed), the largest one."""
        bad = [k for k, v in self.params.items() if not np.isfinite(v).all()]
        if bad:
            # the loss before this step's update was finite, so an earlier update did it
            where = f"; non-finite parameter {', '.join(bad)}"
        else:
            sizes = {k: float(np.abs(v).max()) for k, v in self.params.items() if v.size}
            big = max(sizes, key=sizes.get) if sizes else None
            where = (f"; parameters are finite but {big} reaches {sizes[big]:.3g}, so the outputs "
                     f"overflow {self.dtype}") if big else ""
        return (f"training diverged at step {step + 1}: {what}{where} "
                f"(learning rate {self.lr(step):g}); lower optimizer.learning_rate")

    def l2_term(self, params: dict | None = None) -> float:
        params = self.params if params is None else params
        total = 0.0
        for k in self.l2_params:
            w = params[k].ravel()
            total += float(np.dot(w, w)) / 2
        return self.l2_scale * total

    def non_finite(self) -> str | None:
        """Name of the first array holding NaN/inf (params, slots, shadows), or None."""
        for name, arr in self.state_arrays().items():
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                return name
        return None

    # ------------------------------------------------------------ state for checkpoints

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        for slot, per_param in self.opt_state.items():
            for k, v in per_param.items():
                arrays[f"slot/{slot}/{k}"] = v
        if self.ema is not None:
            arrays.update({f"ema/{k}": v for k, v in self.ema.items()})
        return arrays

    def check_state(self, arrays: dict[str, np.ndarray]) -> None:
        """CheckpointError unless `arrays` hold exactly this trainer's state: the same array
        names, shapes and dtypes (a checkpoint of another config, or a forged one)."""
        expected = self.state_arrays()
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        if missing or extra:
            raise CheckpointError(
                "does not match this config's state"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unexpected {', '.join(extra)}" if extra else "")
            )
        for name, target in expected.items():
            src = arrays[name]
            if src.shape != target.shape or src.dtype != target.dtype:
                raise CheckpointError(f"array {name!r} is {src.dtype}{list(src.shape)}, "
                                      f"expected {target.dtype}{list(target.shape)}")

    def load_state(self, arrays: dict[str, np.ndarray], step: int) -> None:
        self.check_state(arrays)
        for name, target in self.state_arrays().items():
            target[...] = arrays[name]
        self.step_count = step

    def weights_used(self, weights: str) -> str:
        """'ema' or 'raw': the weights `eval_params(weights)` gives (EMA only if the run has it)."""
        if weights not in WEIGHTS:
            raise ConfigError(f"--weights: expected ema or raw, got {weights!r}")
        return "ema" if weights == "ema" and self.ema is not None else "raw"

    def eval_params(self, weights: str = "ema") -> dict[str, np.ndarray]:
        """Parameters to evaluate: EMA shadows for the trainable ones when asked and present."""
        if self.weights_used(weights) == "ema":
            return {**self.params, **self.ema}
        return self.params
