"""Whether and from where a run resumes: one decision, for `gdtrain run` and `gdtrain plan`.

`find_resume` is the search: the newest checkpoint that verifies and holds this
trainer's state, with the decision on resuming from it (`resume_decision`: refused for
a change to what defines the run or a length below its step, guarded for a new update
rule). A refusal stops the search. The loop acts on what it finds (`resume`), `plan`
reports it; nothing on disk changes either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config.drift import GUARDED_ON_RESUME, classify_drift
from ..core import compute
from ..errors import CheckpointError, ConfigError
from . import checkpoint
from .hooks import Reporter
from .rundir import RunDir


def _show(value) -> str:
    return "(unset)" if value is None else repr(value)


def _changes(changes: list) -> str:
    return ", ".join(f"{key}: {_show(old)} -> {_show(new)}" for key, old, new in changes)


# what a user can do instead of resuming: part of every resume refusal
ALTERNATIVES = ("--restart to train it again from step 0 (deleting its checkpoints), "
                "or --set run.name=NEW for a separate run")


@dataclass
class ResumeDecision:
    """Whether a run saved at `step` may resume with a config: `run` acts on it, `plan`
    reports it. `changes` are (key, saved value, new value), the refused ones included."""

    refusal: str | None  # it may not resume: why, and what to do instead
    needs_flag: str | None  # only with --allow-config-change: why
    guarded: list
    changes: list


def resume_decision(saved: dict, config: dict, step: int, total: int, where: Path) -> ResumeDecision:
    """Resuming `where` at `step` (its checkpoint's config `saved`) with `config`, `total` steps
    long: refused for a change to what defines the run or a length below `step`; guarded for
    a new update rule. The refusals say what to do instead."""
    refused, guarded, allowed = classify_drift(saved, config)
    refusal = needs_flag = None
    if refused:
        refusal = (f"cannot resume {where} with a different model, data, loss, seed, dtype, batch or "
                   f"trainable list: {_changes(refused)}; use {ALTERNATIVES}")
    elif step > total:
        # accepting it would record a length the run is already past (runs: 1000/50)
        train = config["train"]
        key = "steps" if train.get("steps") is not None else "epochs"
        asked = f"{train[key]}" + ("" if key == "steps" else f" ({total} steps)")
        refusal = (f"train.{key}: {asked} is below step {step}, which {where} has already reached; "
                   f"a run cannot be shortened: use {ALTERNATIVES}")
    elif guarded:
        length = any(k in ("train.steps", "train.epochs") for k, _, _ in guarded)
        why = "; the schedule spans the whole run: a new length changes its learning rates" if length else ""
        needs_flag = (f"resuming {where} with a change to the {', '.join(GUARDED_ON_RESUME[:-1])} or "
                      f"{GUARDED_ON_RESUME[-1]} section needs --allow-config-change: "
                      f"{_changes(guarded)}{why}; or use {ALTERNATIVES}")
    return ResumeDecision(refusal, needs_flag, guarded, refused + guarded + allowed)


@dataclass
class ResumePoint:
    """The checkpoint a run would resume from, and the decision on resuming from it."""

    path: Path
    arrays: dict
    meta: dict
    decision: ResumeDecision

    @property
    def step(self) -> int:
        return int(self.meta["step"])


class _Decided(Exception):
    """Stops the checkpoint search: the run may not resume (as it is asked to) from here."""

    def __init__(self, point: ResumePoint):
        super().__init__(str(point.path))
        self.point = point


def find_resume(trainer, rd: RunDir, config: dict, warn, allow_config_change: bool = False
                ) -> ResumePoint | None:
    """The newest checkpoint of `rd` that verifies, with the decision on resuming `trainer`
    (built from `config`) from it; None when none verifies. Damaged checkpoints, and ones
    whose arrays do not fit the trainer, are skipped with `warn` naming each. A refusal, or
    a change that needs --allow-config-change without it, stops the search there."""
    decided: list[ResumeDecision] = []

    def accept(path: Path, arrays: dict, meta: dict) -> None:
        decision = resume_decision(checkpoint.saved_config(path, meta), config, int(meta["step"]),
                                   trainer.total_steps, rd.path)
        decided[:] = [decision]
        if decision.refusal or (decision.needs_flag and not allow_config_change):
            raise _Decided(ResumePoint(path, arrays, meta, decision))
        try:
            trainer.check_state(arrays)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None

    try:
        found = checkpoint.newest_good(rd.checkpoints, warn, accept)
    except _Decided as stop:
        return stop.point
    return None if found is None else ResumePoint(*found, decided[0])


def resume(trainer, rd: RunDir, config: dict, allow_config_change: bool,
           reporter: Reporter, machinery: dict) -> tuple[int, float, dict]:
    """Load the newest good checkpoint into `trainer`; return (step, elapsed, its metadata).

    Damaged checkpoints are skipped with a warning naming each; the first one that
    verifies decides (`find_resume`). Nothing on disk is changed here, so a refused
    resume leaves the run exactly as it was.
    """
    point = find_resume(trainer, rd, config, reporter.warning, allow_config_change)
    if point is not None and point.decision.refusal:
        raise ConfigError(point.decision.refusal)
    if point is not None and point.decision.needs_flag and not allow_config_change:
        raise ConfigError(point.decision.needs_flag)
    if point is None:
        raise CheckpointError(
            f"{rd.checkpoints}: no usable checkpoint (every one is damaged, see the warnings); "
            f"nothing was changed. `gdtrain verify {rd.path}` lists them; --restart starts over"
        )
    path, arrays, meta = point.path, point.arrays, point.meta
    for change in point.decision.changes:
        reporter.message(f"config change on resume: {_changes([change])}")
    step = int(meta["step"])
    trainer.load_state(arrays, step)  # checked in accept: cannot fail
    position = trainer.stream.position(step)
    if meta.get("data_position") not in (None, position):
        reporter.warning(
            f"{path.name} was saved at data position {meta['data_position']}, but step {step} of this "
            f"training set ({len(trainer.dataset.train)} examples) is at {position}: the data changed "
            "on disk, so this run will not match an uninterrupted one"
        )
    changed = compute.differences(meta.get("compute"), machinery)
    if changed:
        reporter.warning(
            f"{path.name} was computed with other numerical machinery ({'; '.join(changed)}): "
            "results may differ from an uninterrupted run in the last bits; set run.threads, "
            "run.flush_subnormals and the same BLAS kernel on both machines for a bit-exact resume"
        )
    reporter.message(f"resuming {rd.path} from step {step} ({path.name})")
    return step, float(meta.get("elapsed", 0.0)), meta
