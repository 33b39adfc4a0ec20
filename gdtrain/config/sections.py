"""The config's sections: the plain ones (run, train, train.early_stopping, l2, ema) as
registered factories whose signatures are their schema, the list of top-level sections
and how each is written, and the component tables the other sections are checked against.
"""

from __future__ import annotations

from typing import Annotated, Any

from ..core.registry import (
    NonNegative,
    NonNegativeInt,
    OneOf,
    OpenFraction,
    PathText,
    Positive,
    PositiveInt,
    Registry,
)

SECTIONS = Registry("section")


@SECTIONS.register("run")
def run_section(
    name: str | None = None,
    seed: NonNegativeInt = 0,
    dtype: Annotated[str, OneOf("float32", "float64")] = "float32",
    dir: PathText = "runs",
    threads: PositiveInt | None = None,
    flush_subnormals: bool = False,
):
    """Run identity and numerics.

    name: run directory name under dir (default: the config file's name)
    seed: seeds initialisation and data order
    dtype: float32 (fast) or float64 (about 2x slower)
    dir: where run directories live; a relative path is relative to the config file's directory
      (to the working directory when given with --set or left at the default: ./runs)
    threads: BLAS threads for the matrix products (default: the library's, one per core);
      the count changes results in the last bits: set it for resumes bit-exact across machines
    flush_subnormals: compute as TF1's CPU kernels do, with values below the dtype's smallest
      normal (1.2e-38 in float32) flushed to zero (the CPU's FTZ/DAZ flags), in the training
      loop and evaluation: on many Intel CPUs a subnormal costs 20-100x per operation, and
      Adam or momentum without L2 drive the slots of unused inputs into them (see
      docs/performance.md); false: IEEE arithmetic, the same bits on every platform.
      Linux (glibc) on x86-64 or AArch64 only; elsewhere a warning, and no flush
    """


@SECTIONS.register("train")
def train_section(
    batch_size: PositiveInt = 100,
    steps: PositiveInt | None = None,
    epochs: Positive | None = None,
    trainable: list[str] = ["*"],  # noqa: B006 (read only)
    shuffle: bool = True,
    log_every: NonNegativeInt = 100,
    eval_every: NonNegativeInt = 0,
    eval_split: Annotated[str, OneOf("test", "validation", "train")] = "test",
    checkpoint_every: NonNegativeInt = 0,
    keep_checkpoints: PositiveInt = 5,
    early_stopping: dict[str, Any] | None = None,
    keep_best: bool = False,
    best_metric: Annotated[str, OneOf("loss", "accuracy", "mse")] | None = None,
    tensorboard: bool = False,
):
    """The training loop.

    batch_size: examples per step
    steps: number of updates (give steps or epochs)
    epochs: passes over the training set, rounded up to whole steps
    trainable: parameter names or glob patterns to update (TF1's var_list); default all
    shuffle: reshuffle every epoch from run.seed; false takes rows in order
    log_every: log line every N steps (0: none)
    eval_every: evaluate every N steps (0: only at the end)
    eval_split: split evaluated during and after training (without a test split: train;
      without a validation split: an error)
    checkpoint_every: checkpoint every N steps (0: only at the end)
    keep_checkpoints: newest checkpoints kept
    early_stopping: stop when the evaluation metric stops improving: {metric, mode, patience,
      min_delta} (train.early_stopping below); needs eval_every; null: off
    keep_best: also keep the best-scoring checkpoint, named by checkpoints/best (judged like
      early_stopping, or by best_metric); needs eval_every
    best_metric: without early_stopping, the metric keep_best judges by (default loss;
      accuracy is maximised, loss and mse minimised)
    tensorboard: also write the logged scalars to <run dir>/tb for TensorBoard (needs gdtrain[tensorboard])
    """


@SECTIONS.register("train.early_stopping")
def early_stopping_section(
    metric: Annotated[str, OneOf("loss", "accuracy", "mse")] = "loss",
    mode: Annotated[str, OneOf("min", "max")] | None = None,
    patience: NonNegativeInt = 5,
    min_delta: NonNegative = 0.0,
):
    """Early stopping (Keras's EarlyStopping rule), judged at each train.eval_every evaluation.

    metric: a figure every evaluation of train.eval_split reports: loss; accuracy (classifiers);
      mse (real-valued or 0/1 targets)
    mode: min or max (default: min for loss and mse, max for accuracy)
    patience: evaluations in a row without improvement after which training stops
    min_delta: an improvement must beat the best by more than this
    """


@SECTIONS.register("l2")
def l2_section(scale: NonNegative, params: list[str] | None = None):
    """L2 weight decay with TF semantics: scale · sum(w²)/2 added to the loss.

    scale: the regularizer's scale (tf.contrib.layers.l2_regularizer)
    params: parameter names or patterns; default every weight matrix (no biases)
    """


@SECTIONS.register("ema")
def ema_section(decay: OpenFraction = 0.99, num_updates: bool = True):
    """Exponential moving average of the trainable parameters (tf.train.ExponentialMovingAverage).

    decay: the decay; with num_updates the effective decay is min(decay, (1+n)/(10+n))
    num_updates: pass the step count as num_updates, as TF1's tutorials do
    """


TOP_LEVEL = ("run", "data", "model", "loss", "optimizer", "schedule", "l2", "penalties", "clip", "ema",
             "train")
REQUIRED = ("data", "model", "loss", "optimizer", "train")
OPTIONAL_SECTIONS = ("schedule", "l2", "penalties", "clip", "ema")

# How each top-level section is written, for the JSON Schema of a config that schema.py
# generates (`gdtrain components --json-schema`): "section" is a plain section, its keys
# the options of SECTIONS' entry of the same name; a component kind of components.KINDS
# ("dataset", "model", ...) is {name: <a component of that kind>, <its options>}; a list
# [kind] is a list of such components. A new top-level section is its key in TOP_LEVEL
# (and REQUIRED if it must be given) plus one entry here.
SECTION_SHAPES: dict[str, str | list[str]] = {
    "run": "section", "data": "dataset", "model": "model", "loss": "loss", "optimizer": "optimizer",
    "schedule": "schedule", "l2": "section", "penalties": ["penalty"], "clip": "clip", "ema": "section",
    "train": "section",
}


def component_tables():
    # imported here so that `gdtrain --help` does not pay for numpy
    from ..core.initializers import INITIALIZERS
    from ..core.losses import LOSSES
    from ..core.models import MODELS
    from ..core.optimizers import OPTIMIZERS
    from ..core.schedules import SCHEDULES
    from ..data import DATASETS

    return DATASETS, MODELS, LOSSES, OPTIMIZERS, SCHEDULES, INITIALIZERS


def chain_tables():
    from ..core.clipping import CLIPS
    from ..core.penalties import PENALTIES

    return PENALTIES, CLIPS
