"""The runs under a directory, one row each: status, progress, last and best figures.

Reads only what `gdtrain run` writes (status.json, metrics.jsonl, checkpoints/) and
never loads a dataset or a checkpoint, so listing many runs is instant. A status of
"running" is believed only while its writer still exists and holds the run's lock:
a run killed with SIGKILL (or a crashed machine) leaves "running" behind, and such
a run is shown as interrupted, since running it again resumes it.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import time
from pathlib import Path

from ..errors import RunDirError
from . import checkpoint
from .rundir import RunDir

STATUSES = ("running", "finished", "stopped", "interrupted", "diverged", "failed")


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("status.json", "metrics.jsonl", "checkpoints"))


def find_runs(directory: str | Path) -> list[Path]:
    """The run directories in `directory`, by name; `directory` itself if it is one."""
    root = Path(directory)
    if not root.exists():
        raise RunDirError(f"{root}: no such directory")
    if not root.is_dir():
        raise RunDirError(f"{root}: not a directory; expected a directory of runs (e.g. runs/)")
    if is_run_dir(root):
        return [root]
    return sorted((p for p in root.iterdir() if is_run_dir(p)), key=lambda p: p.name)


def lock_is_held(rd: RunDir) -> bool:
    """Whether some process holds the run's lock (flock is released when its holder dies).

    Probed with a shared, non-blocking lock released at once. It is asked only when
    the status says running and its pid exists, i.e. when a trainer almost surely
    holds the lock, so the probe cannot get in the way of a run being started.
    """
    path = rd.path / ".lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def finite_number(value) -> bool:
    """A usable figure from a metrics record (hand-edited or damaged logs hold anything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def headline_metric(evals: list[dict]) -> str | None:
    """The figure a run is judged by: accuracy for classifiers, else MSE, else the loss."""
    for name in ("accuracy", "mse", "loss"):
        if any(finite_number(r.get(name)) for r in evals):
            return name
    return None


def describe(path: str | Path) -> dict:
    """One run's row: what its files say, with a stale "running" corrected."""
    rd = RunDir(path)
    status = rd.read_status()
    records = rd.read_metrics()
    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]

    state = status.get("status") if status.get("status") in STATUSES else "unknown"
    note = None
    if state == "running" and not (rd.writer_alive() and lock_is_held(rd)):
        state, note = "interrupted", "process gone, status was running"
    elif state == "interrupted" and status.get("signal"):
        note = status["signal"]
    elif state == "stopped" and status.get("stopped_by"):
        note = f"by {status['stopped_by']}"
    elif state in ("diverged", "failed") and status.get("error"):
        note = str(status["error"])
    elif state == "stopped" and isinstance(status.get("early_stopping"), dict):
        es = status["early_stopping"]
        note = f"early: {es.get('metric')} best at step {es.get('best_step')}, patience {es.get('patience')}"

    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    if isinstance(status.get("step"), int):
        steps.append(status["step"])
    saved = [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(rd.checkpoints)]

    metric = headline_metric(evals)
    values = [(r["step"], r[metric]) for r in evals if metric and finite_number(r.get(metric))]
    best = None
    if values:
        pick = max if metric == "accuracy" else min
        best = pick(values, key=lambda sv: sv[1])
    last_eval = evals[-1] if evals else {}

    wall = status.get("elapsed") if state in ("finished", "stopped") else None
    if wall is None:
        elapsed = [r["elapsed"] for r in records if isinstance(r.get("elapsed"), (int, float))]
        wall = max(elapsed) if elapsed else None
    updated = [t for t in (status.get("updated"), _mtime(rd.metrics), _mtime(rd.status_file)) if t]

    return {
        "name": rd.path.name,
        "path": str(rd.path),
        "status": state,
        "note": note,
        "step": max(steps) if steps else (max(saved) if saved else 0),
        "total_steps": status.get("total_steps"),
        "checkpoint_step": max(saved) if saved else None,
        "last_loss": train[-1].get("loss") if train else None,
        "metric": metric,
        "split": last_eval.get("split"),
        "last_eval": values[-1][1] if values else None,
        "last_eval_step": values[-1][0] if values else None,
        "best_eval": best[1] if best else None,
        "best_eval_step": best[0] if best else None,
        "wall_seconds": wall,
        "updated": max(updated) if updated else None,
    }


def table(directory: str | Path) -> list[dict]:
    return [describe(p) for p in find_runs(directory)]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
