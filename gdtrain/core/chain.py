"""The training step as a chain of parts, each built from its config section.

One step, in this order (`Trainer.step`; TF1's order):

    1. forward, data loss and its gradient      model, loss              Trainer.gradients
    2. penalties add their gradients            `l2`, then `penalties`   in that order, list order
    3. clipping transforms the gradients        `clip`
    4. the optimizer turns them into updates    `optimizer`              at the scheduled rate
    5. the updates are applied                  var += update
    6. moving average of the new values         `ema`

Penalties come before clipping as in TF1 practice, where the regularisation is part of
the loss whose gradient is clipped (`tf.gradients(loss + reg)`, then
`clip_by_global_norm`): a clip bounds the gradient of the whole objective.

Every part has a `label` (its name in metrics.jsonl, summaries and TensorBoard) and
`describe()` (what `plan` and `gradcheck` show); penalties add `term(params)`, parts
that measure something add `scalars()` for the training log, parts that keep state say
under which prefix of the checkpoint (`slot/`, `ema/`). The modules that report iterate
over the parts and never name one: a new penalty or clip is one registered factory in
penalties.py or clipping.py.

Steps 2-6 are element-wise, and `Trainer.step` runs them as one pass (elementwise.py):
over whole arrays, or together block by block over cache-sized views of them, whichever
it measured faster on this CPU, with the bits of running each part over the whole arrays
in turn; what needs the whole gradients (a clip's norm) or changes once per step (Adam's
beta powers, the EMA's decay) runs once per step, between blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .clipping import CLIPS, Clip
from .penalties import PENALTIES, Penalty
from .selection import match_patterns, penalty_sections


def _options_text(options: dict) -> str:
    def show(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} {show(v)}" for k, v in options.items())


class Part:
    """What every part of the step tells the modules that report: its stage, its label, a
    description, and, for parts with state, the prefix of its arrays in a checkpoint."""

    stage = ""  # each part also has a `label`: its name in metrics and listings
    state_prefix: str | None = None  # slot/..., ema/... in a checkpoint
    memory_name: str | None = None  # its group in `plan`'s memory figures

    def describe(self) -> dict:
        raise NotImplementedError

    def plan(self, total: int) -> dict:
        """What `plan` shows for a run of `total` steps."""
        return self.describe()


@dataclass
class PenaltyPart(Part):
    """A penalty on some parameters: its term joins the objective, its gradient the gradients."""

    label: str  # the kind, or kind_2, kind_3, ... for a second, third penalty of one kind
    kind: str
    where: str  # its config path: 'l2' or 'penalties.0'
    options: dict
    params: list[str]  # the parameters its term reads; the trainable ones get its gradient
    penalty: Penalty
    stage = "penalty"

    def term(self, params: dict[str, np.ndarray]) -> float:
        return self.penalty.term([params[k] for k in self.params])

    def add_gradient(self, grads: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> None:
        add = self.penalty.add_gradient
        for k in self.params:
            if k in grads:  # frozen parameters have no gradient to add to
                add(grads[k], params[k])

    def describe(self) -> dict:
        name = self.kind if self.label == self.kind else f"{self.label} ({self.kind})"
        return {"stage": self.stage, "label": self.label, "kind": self.kind, "options": dict(self.options),
                "params": list(self.params),
                "text": f"{name} {_options_text(self.options)} on {', '.join(self.params)}"}


@dataclass
class ClipPart(Part):
    """A gradient clip; keeps what it measured at the last step for the training log."""

    kind: str
    options: dict
    clip: Clip
    last: dict = field(default_factory=dict)
    label = "clip"
    stage = "clip"

    def apply(self, grads: dict[str, np.ndarray]) -> None:
        self.last = self.clip(grads)

    def measure(self, grads: dict[str, np.ndarray]):
        """The clip's reduction over the whole gradients (kept for the log); what apply needs."""
        measured, self.last = self.clip.measure(grads) if self.clip.measure is not None else (None, {})
        return measured

    def scalars(self) -> dict[str, float]:
        return dict(self.last)

    def describe(self) -> dict:
        return {"stage": self.stage, "label": self.label, "kind": self.kind, "options": dict(self.options),
                "text": f"{self.kind} {_options_text(self.options)}"}


@dataclass
class OptimizerPart(Part):
    """How the optimizer is described; the Trainer calls its `Optimizer` directly."""

    kind: str
    options: dict
    label = "optimizer"
    stage = "optimizer"
    state_prefix = "slot"
    memory_name = "optimizer_slots"

    def describe(self) -> dict:
        return {"stage": self.stage, "label": self.label, "kind": self.kind, "options": dict(self.options),
                "text": f"{self.kind} {_options_text(self.options)}"}


class MovingAverage(Part):
    """tf.train.ExponentialMovingAverage of the trainable parameters, applied after each update.

    d = min(decay, (1 + n)/(10 + n)) with num_updates (n: updates done, this one
    included), else decay; shadow -= (shadow - var)·(1 - d); the shadows start at the
    parameters' initial values.
    """

    label = "ema"
    stage = "average"
    state_prefix = "ema"
    memory_name = "ema_shadows"

    def __init__(self, decay: float, num_updates: bool, dtype: np.dtype):
        self.decay = float(decay)
        self.num_updates = bool(num_updates)
        self.dtype = np.dtype(dtype)
        self.shadows: dict[str, np.ndarray] = {}

    def init(self, params: dict[str, np.ndarray]) -> None:
        self.shadows = {k: v.copy() for k, v in params.items()}

    def decay_at(self, updates_done: int) -> float:
        d = self.decay
        if self.num_updates:
            d = min(d, (1.0 + updates_done) / (10.0 + updates_done))
        return d

    def one_minus_decay(self, updates_done: int):
        t = self.dtype.type
        return t(1) - t(self.decay_at(updates_done))

    def update(self, params: dict[str, np.ndarray], updates_done: int) -> None:
        self.update_views(self.shadows, params, self.one_minus_decay(updates_done))

    @staticmethod
    def update_views(shadows: dict[str, np.ndarray], params: dict[str, np.ndarray], one_minus_decay) -> None:
        """The moving average's step on these shadows (whole, or views of one block)."""
        for k, shadow in shadows.items():
            shadow -= (shadow - params[k]) * one_minus_decay

    def scalars(self, updates_done: int) -> dict[str, float]:
        return {"ema_decay": self.decay_at(updates_done)}

    def describe(self) -> dict:
        return {"stage": self.stage, "label": self.label, "kind": "ema",
                "options": {"decay": self.decay, "num_updates": self.num_updates},
                "text": f"EMA decay {self.decay:g}{' with num_updates' if self.num_updates else ''}"}

    def plan(self, total: int) -> dict:
        """The effective decay after n updates, at a few n, and when it reaches `decay`."""
        decay = self.decay
        reaches = None
        if self.num_updates:
            # min(decay, (1+n)/(10+n)) = decay from n >= (10·decay - 1)/(1 - decay) on
            n = max(1, math.ceil((10 * decay - 1) / (1 - decay)) - 1)
            while self.decay_at(n) < decay:
                n += 1
            reaches = n
        marks = {1, 10, 100, 1000, 10_000, 100_000, 1_000_000, total} | ({reaches} if reaches else set())
        points = [{"updates": n, "decay": self.decay_at(n)} for n in sorted(marks) if 1 <= n <= total]
        out = self.describe()
        out["text"] += ((f"; reaches {decay} after {reaches} updates" if reaches else "")
                        + "; effective decay after n updates: "
                        + ", ".join(f"{p['updates']}: {p['decay']:.4g}" for p in points))
        out.update(decay=decay, num_updates=self.num_updates, reaches_decay_at=reaches,
                   window=1 / (1 - decay),  # updates that carry most of the average's weight
                   points=points)
        return out


def build_penalties(config: dict, names: list[str], weights: list[str]) -> list[PenaltyPart]:
    """The penalties of a resolved config, in step order, labelled by kind (l2, l2_2, ...)."""
    parts = []
    seen: dict[str, int] = {}
    for where, section in penalty_sections(config):
        kind = section["name"]
        options = {k: v for k, v in section.items() if k != "name"}
        penalty = PENALTIES.build(kind, options, where)
        patterns = penalty.params if penalty.params is not None else weights
        params, unmatched = match_patterns(patterns, names)
        if unmatched:
            raise ConfigError([f"{where}.params: {p!r} matches no parameter; the model has "
                               f"{', '.join(names)}" for p in unmatched])
        seen[kind] = seen.get(kind, 0) + 1
        label = kind if seen[kind] == 1 else f"{kind}_{seen[kind]}"
        own = {k: v for k, v in options.items() if k not in PENALTIES.common}
        parts.append(PenaltyPart(label, kind, where, own, params, penalty))
    return parts


def build_clip(config: dict) -> ClipPart | None:
    section = config.get("clip")
    if not section:
        return None
    options = {k: v for k, v in section.items() if k != "name"}
    return ClipPart(section["name"], options, CLIPS.build(section["name"], options, "clip"))


def build_average(config: dict, dtype: np.dtype) -> MovingAverage | None:
    ema = config.get("ema")
    return MovingAverage(ema["decay"], ema["num_updates"], dtype) if ema else None
