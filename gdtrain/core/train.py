"""The training step and the state it carries, built from a resolved config.

`Trainer` owns the parameters, optimizer slots, EMA shadows and step counter; one
call to `step()` does exactly one update, as the chain of parts of chain.py in TF1's
order: forward, loss, backward, the penalties' gradients, clipping, the optimizer's
update applied, then the moving average of the updated values (those last five as one
pass, over whole arrays or block by block over views of them: elementwise.py). It knows
nothing about files or printing; `run/loop.py` drives it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError, ConfigError, DataError, DivergedError
from . import compute, early_stopping
from .batching import BatchStream
from .chain import OptimizerPart, build_average, build_clip, build_penalties
from .dataset import Dataset
from .elementwise import ElementwisePass
from .initializers import INITIALIZERS
from .losses import LOSSES, NOT_A_DISTRIBUTION, Loss, non_distribution
from .models import MODELS, Model
from .optimizers import OPTIMIZERS, Optimizer
from .schedules import build_schedule
from .selection import match_patterns

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
    if not dataset.has_classes and y.shape[1] < loss.min_outputs:
        raise ConfigError(
            f"loss.name: {loss_name} needs {_count(loss.min_outputs)} or more outputs, but dataset "
            f"'{dataset.name}' has {_count(y.shape[1])} target column{'s' * (y.shape[1] != 1)}; "
            "use sigmoid_cross_entropy for 0/1 labels or mse"
        )
    if not dataset.has_classes and loss.distribution_targets:
        for name in ("validation", "train", "test"):  # file order: validation rows come first
            split = dataset.split(name)
            bad = None if split is None else non_distribution(split.y)
            if bad is not None:
                i, problem = bad
                where = split.where(i) if split.where else f"dataset '{dataset.name}' {name} row {i}"
                raise DataError(f"{where}: {problem}; {NOT_A_DISTRIBUTION}")


def _count(n: int) -> str:
    return ("no", "one", "two", "three")[n] if 0 <= n <= 3 else str(n)


def total_steps(train_cfg: dict, n_train: int) -> int:
    if train_cfg.get("steps") is not None:
        return int(train_cfg["steps"])
    return max(1, math.ceil(train_cfg["epochs"] * n_train / train_cfg["batch_size"]))


def _param_rng(seed: int, name: str) -> np.random.Generator:
    # one stream per parameter name, so adding a parameter never shifts another's values
    return np.random.default_rng([seed, _INIT_STREAM, zlib.crc32(name.encode())])


def initial_params(model: Model, init_cfg, seed: int, dtype, read_arrays=None) -> dict[str, np.ndarray]:
    """Initial values per model.init: a name, {name, options}, {from: npz} or per parameter.
    `read_arrays(path, expected=shapes)` reads the arrays of {from: npz} (the core reads no
    files: the caller gives run.npz.read_npz)."""
    if isinstance(init_cfg, dict) and "from" in init_cfg:
        path = init_cfg["from"]
        if read_arrays is None:
            raise ValueError("model.init.from: no reader of array files was given (read_arrays)")
        try:
            arrays = read_arrays(path, expected=model.shapes)
        except CheckpointError as exc:
            raise DataError(f"model.init.from: {exc}") from None
        missing = [k for k in model.shapes if k not in arrays]
        if missing:
            raise DataError(f"model.init.from: {path} lacks {', '.join(missing)} "
                            f"(has {', '.join(arrays) or 'nothing'})")
        params = {}
        for k in model.shapes:
            with np.errstate(all="ignore"):  # an overflow is reported below, not as a warning
                params[k] = arrays[k].astype(dtype)
            if not np.isfinite(params[k]).all():
                source = arrays[k][~np.isfinite(params[k])].flat[0]
                why = "not finite" if not np.isfinite(source) else f"beyond the range of {np.dtype(dtype)}"
                raise DataError(f"model.init.from: {path}: array {k!r} holds {source:g}, {why}")
        return params
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
    def __init__(self, config: dict, dataset: Dataset, read_arrays=None):
        """read_arrays: what reads model.init.from's file (see initial_params)."""
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
        early_stopping.check_metric(train, self.loss, config["loss"]["name"], dataset)
        self.stream = BatchStream(dataset.train, train["batch_size"], run["seed"], train["shuffle"])
        self.total_steps = total_steps(train, len(dataset.train))
        self.schedule = build_schedule(config.get("schedule"), self.optimizer.learning_rate,
                                       self.stream.steps_per_epoch, self.total_steps)

        names = self.model.names
        self.trainable, _ = match_patterns(train["trainable"], names)
        self.trainable_set = frozenset(self.trainable)
        # the parts of the step after the loss's gradient, in the order step() runs them
        self.penalties = build_penalties(config, names, self.model.weights)
        self.clip = build_clip(config)
        self.optimizer_part = OptimizerPart(config["optimizer"]["name"], opt_opts)
        self.average = build_average(config, self.dtype)
        self.elementwise = ElementwisePass()  # keeps its views of the arrays from step to step

        self.params = initial_params(self.model, config["model"].get("init"), run["seed"], self.dtype,
                                     read_arrays)
        self.step_count = 0
        self.opt_state = self.optimizer.init({k: self.params[k] for k in self.trainable})
        if self.average is not None:
            # TF1: shadows start at the variables' initial values, for trainable variables only
            self.average.init({k: self.params[k] for k in self.trainable})

    @property
    def ema(self) -> dict[str, np.ndarray] | None:
        """The moving averages of the trainable parameters, or None without an `ema` section."""
        return self.average.shadows if self.average is not None else None

    def parts(self) -> list:
        """The step's parts in the order it runs them (chain.py): each has a label and describe()."""
        return [*self.penalties, *([self.clip] if self.clip else []), self.optimizer_part,
                *([self.average] if self.average else [])]

    # ------------------------------------------------------------ one update

    def lr(self, step: int) -> float:
        return float(self.schedule(step))

    def gradients(self, params: dict, x, y, dropout_key=None) -> tuple[float, dict]:
        """(data loss, gradients of data loss + every penalty) of the trainable parameters on
        (x, y): what a step descends, and what `gradcheck` checks. dropout_key: (seed, step),
        the dropout masks' source (None: no dropout)."""
        loss, grads = self.data_gradients(params, x, y, dropout_key)
        for penalty in self.penalties:
            penalty.add_gradient(grads, params)
        return loss, grads

    def data_gradients(self, params: dict, x, y, dropout_key=None) -> tuple[float, dict]:
        """(data loss, gradients of the data loss alone): forward, loss, backward."""
        out, cache = self.model.forward(params, x, dropout_key)
        loss, dout = self.loss.value_and_grad(out, y)
        return loss, self.model.backward(params, cache, dout, self.trainable_set)

    def step(self) -> StepResult:
        step = self.step_count
        x, y = self.stream.batch(step)
        # dropout masks from (seed, step), like the batch: a resume draws the same ones
        loss, grads = self.data_gradients(self.params, x, y, (self.seed, step))
        if not math.isfinite(loss):
            raise self.diverged(step, f"loss is {loss}")
        lr = self.lr(step)
        # penalties, clip, optimizer, var += update, EMA: one pass (by blocks where that is
        # faster), the bits of running each over the whole arrays in turn
        self.elementwise.run(grads, lr, step + 1, self.params, self.opt_state, self.optimizer,
                             self.penalties, self.clip, self.average)
        self.step_count = step + 1
        return StepResult(self.step_count, loss, lr)

    def penalty_terms(self, params: dict | None = None) -> dict[str, float]:
        """Each penalty's term by its label: what the objective adds to the data loss."""
        params = self.params if params is None else params
        return {p.label: p.term(params) for p in self.penalties}

    def scalars(self) -> dict[str, float]:
        """What the other parts measure for the training log (a clip's global norm, the
        EMA's decay), after the updates done so far."""
        out = self.clip.scalars() if self.clip is not None else {}
        if self.average is not None:
            out.update(self.average.scalars(self.step_count))
        return out

    def diverged(self, step: int, what: str) -> DivergedError:
        """The error for update `step` + 1 (the one whose loss, or whose result, was not
        finite), naming it and the array to blame: the non-finite parameters, or, when
        every parameter is still finite (the outputs overflowed), the largest one."""
        bad = [k for k, v in self.params.items() if not np.isfinite(v).all()]
        if bad:
            # the loss before this step's update was finite, so an earlier update did it
            where = f"; non-finite parameter {', '.join(bad)}"
        else:
            sizes = {k: float(np.abs(v).max()) for k, v in self.params.items() if v.size}
            big = max(sizes, key=sizes.get) if sizes else None
            where = (f"; parameters are finite but {big} reaches {sizes[big]:.3g}, so the outputs "
                     f"overflow {self.dtype}") if big else ""
        return DivergedError(f"training diverged at step {step + 1}: {what}{where} "
                             f"(learning rate {self.lr(step):g}); lower optimizer.learning_rate", step + 1)

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
                arrays[f"{self.optimizer_part.state_prefix}/{slot}/{k}"] = v
        if self.average is not None:
            arrays.update({f"{self.average.state_prefix}/{k}": v for k, v in self.average.shadows.items()})
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
        if weights not in WEIGHTS:  # the commands check their --weights before this
            raise ValueError(f"weights: expected one of {', '.join(WEIGHTS)}, got {weights!r}")
        return "ema" if weights == "ema" and self.ema is not None else "raw"

    def eval_params(self, weights: str = "ema") -> dict[str, np.ndarray]:
        """Parameters to evaluate: EMA shadows for the trainable ones when asked and present."""
        if self.weights_used(weights) == "ema":
            return {**self.params, **self.ema}
        return self.params
