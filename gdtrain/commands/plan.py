"""What a run will do, without doing it: sizes, memory, schedule, the step's parts, saves, resume.

Everything is computed by the same code the run uses: the Trainer is built (which
initialises parameters, optimizer slots and EMA shadows), the learning rate comes
from its schedule function step by step, each part of the step (penalties, clip,
optimizer, moving average) describes itself (the EMA its decay from the very
`decay_at` a step uses), and the resume point comes from the same checkpoint search
and drift check as `run`. Nothing is trained and nothing is written.
"""

from __future__ import annotations

import math

from ..config.paths import run_dir
from ..core import early_stopping
from ..core.train import Trainer
from ..data import load_dataset
from ..errors import CheckpointError
from ..run import checkpoint
from ..run.npz import read_npz
from ..run.resume import ALTERNATIVES, find_resume
from ..run.rundir import RunDir

SCAN_LIMIT = 5_000_000  # steps whose learning rate is computed one by one
RAMP = 3  # this many consecutive changing steps or more form a ramp, not boundaries


def make_plan(config: dict) -> dict:
    dataset = load_dataset(config["data"], config["run"]["dtype"])
    trainer = Trainer(config, dataset, read_arrays=read_npz)
    train = config["train"]
    total = trainer.total_steps
    per_epoch = trainer.stream.steps_per_epoch
    splits = {n: dataset.split(n) for n in ("train", "validation", "test")}
    return {
        "config": config["run"]["name"],
        "run_dir": run_dir(config),
        "data": {
            "name": dataset.name,
            "examples": {n: len(s) for n, s in splits.items() if s is not None},
            "input_dim": dataset.input_dim,
            "output_dim": dataset.output_dim,
            "bytes": sum(s.nbytes for s in splits.values() if s is not None),
        },
        "steps": total,
        "batch_size": train["batch_size"],
        "steps_per_epoch": per_epoch,
        "epochs": total / per_epoch,
        "samples": total * train["batch_size"],
        "model": {
            "name": config["model"]["name"],
            "shapes": {k: list(v) for k, v in trainer.model.shapes.items()},
            "parameters": trainer.model.parameter_count(),
            "trainable": trainer.trainable,
            "trainable_parameters": int(sum(trainer.params[k].size for k in trainer.trainable)),
            "notes": list(trainer.model.notes),  # what the model says of itself (an MLP's dropout)
        },
        "memory": memory(trainer),
        "learning_rate": learning_rate_plan(trainer.schedule, total),
        "chain": [part.plan(total) for part in trainer.parts()],  # the step's parts, in order
        "log_steps": _every(train["log_every"], total, final=True),
        "eval_steps": _every(train["eval_every"], total, final=False) + [total],
        "checkpoint_steps": (ckpts := _every(train["checkpoint_every"], total, final=False) + [total]),
        "checkpoints_kept": ckpts[-train["keep_checkpoints"]:],
        "judging": judging_plan(train, total),
        "resume": resume_plan(trainer, config),
    }


def judging_plan(train: dict, total: int) -> dict | None:
    """Early stopping and keep_best: what judges the evaluations, which are judged, and the
    earliest step early stopping can stop at (the first evaluation is always the best so far)."""
    tracker = early_stopping.from_config(train)
    if tracker is None:
        return None
    every = train["eval_every"]
    judged = list(range(every, total + 1, every))
    patience = tracker.patience
    earliest = (patience + 1) * every if patience is not None and (patience + 1) * every <= total else None
    return {"metric": tracker.metric, "mode": tracker.mode, "split": train["eval_split"],
            "min_delta": tracker.min_delta, "early_stopping": patience is not None,
            "patience": patience, "judged_steps": judged, "earliest_stop": earliest,
            "keep_best": train["keep_best"]}


def memory(trainer: Trainer) -> dict:
    """Bytes of the training state, by kind, from the arrays the trainer really holds."""
    groups = {"param": "parameters"}
    groups.update({p.state_prefix: p.memory_name for p in trainer.parts() if p.state_prefix})
    out = {v: 0 for v in groups.values()}
    for name, array in trainer.state_arrays().items():
        out[groups[name.split("/", 1)[0]]] += array.nbytes
    out["total"] = sum(out.values())
    return out


def _every(every: int, total: int, final: bool) -> list[int]:
    """Steps k·every before the end (the runner's own rule), and `total` when `final`."""
    steps = list(range(every, total, every)) if every else []
    if final and every:  # range() stops before total
        steps.append(total)
    return steps


def learning_rate_plan(schedule, total: int) -> dict:
    """The schedule as segments: runs of one constant rate, and ramps that change every step.

    `step` in the output is TF1's global_step: the number of updates already done, so
    update k+1 uses lr(k). Staircase boundaries are where one constant segment ends
    and the next begins.
    """
    stride = max(1, math.ceil(total / SCAN_LIMIT))  # beyond SCAN_LIMIT steps: a sample
    steps = list(range(0, total, stride))
    if steps[-1] != total - 1:
        steps.append(total - 1)
    values = [float(schedule(k)) for k in steps]

    # constant runs: [start index, end index] of equal values
    runs = []
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i - 1))
            start = i
    segments = []
    i = 0
    while i < len(runs):
        j = i
        while j < len(runs) and runs[j][0] == runs[j][1]:
            j += 1  # single-sample runs: the rate changes at every scanned step
        if j - i >= RAMP:
            a, b = runs[i][0], runs[j - 1][1]
            segments.append(_segment("ramp", steps[a], steps[b], values[a], values[b]))
            i = j
        else:
            a, b = runs[i]
            segments.append(_segment("constant", steps[a], steps[b], values[a], values[b]))
            i += 1
    samples = sorted({round(f * (total - 1) / 10) for f in range(11)})
    return {
        "first": values[0],
        "last": values[-1],
        "min": min(values),
        "max": max(values),
        "changes": sum(1 for a, b in zip(values, values[1:], strict=False) if a != b),
        "sampled_every": stride,
        "segments": segments,
        "samples": [{"step": k, "lr": float(schedule(k))} for k in samples],
    }


def _segment(kind: str, first: int, last: int, lr_first: float, lr_last: float) -> dict:
    return {"kind": kind, "first_step": first, "last_step": last, "lr_first": lr_first, "lr_last": lr_last}


def resume_plan(trainer: Trainer, config: dict) -> dict:
    """What `gdtrain run` would do with the run directory as it is now."""
    rd = RunDir(run_dir(config))
    total = trainer.total_steps
    if not rd.path.exists():
        return {"action": "start", "detail": f"{rd.path} does not exist yet; a new run"}
    status = rd.read_status()
    busy = status.get("status") == "running" and rd.writer_alive()
    if not checkpoint.list_checkpoints(rd.checkpoints):
        return {"action": "start", "detail": f"{rd.path} has no checkpoint; training starts at step 0"
                + ("; its old metrics.jsonl would be discarded" if rd.metrics.exists() else ""),
                "in_use": busy}
    # the run's own search and decision (run/resume.py), as it makes them with
    # --allow-config-change: a change that needs the flag is reported below, with the
    # checkpoint the run would resume from when given it
    skipped: list[str] = []
    point = find_resume(trainer, rd, config, skipped.append, allow_config_change=True)
    if point is None:
        return {"action": "refuse", "skipped": skipped, "in_use": busy,
                "detail": f"{rd.checkpoints}: checkpoints exist but none is usable; "
                          "`gdtrain verify` tells why, --restart starts over"}
    path, meta, step, decision = point.path, point.meta, point.step, point.decision
    out = {"checkpoint": str(path), "step": step, "skipped": skipped, "in_use": busy,
           "changes": [{"key": k, "was": a, "now": b} for k, a, b in decision.changes]}
    if decision.refusal:
        out.update(action="refuse", detail=decision.refusal)
    elif decision.needs_flag:
        out.update(action="resume-needs-flag", detail=f"would resume from step {step} only with "
                   "--allow-config-change (" + ", ".join(k for k, _, _ in decision.guarded) + " changed)"
                   f"; or use {ALTERNATIVES}")
    elif _stopped_early(config, meta, path, out):
        pass
    elif step >= total:
        out.update(action="done", detail=f"already at step {step} of {total}: would only evaluate")
    else:
        out.update(action="resume", detail=f"would resume from step {step}: {total - step} steps left")
    return out


def _stopped_early(config: dict, meta: dict, path, out: dict) -> bool:
    """Whether the run stopped early and still would (the runner's rule); fills `out` if so."""
    tracker = early_stopping.from_config(config["train"])
    if tracker is None:
        return False
    try:
        tracker.restore(meta.get("tracker"), str(path))
    except CheckpointError as exc:
        out.update(action="refuse", detail=str(exc))
        return True
    if not tracker.stopped:
        return False
    out.update(action="stopped", detail=f"stopped early at step {out['step']} ({tracker.describe()}, "
               f"{tracker.wait} evaluations without improvement): would only evaluate; raise "
               f"train.early_stopping.patience above {tracker.wait} to continue")
    return True
