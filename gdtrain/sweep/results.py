"""What a sweep found: each trial's state, the groups of trials that differ only in their
seed (mean ± std over the seeds, and n), best first, and sweep.csv / sweep.json.

Plain data throughout (no NumPy), so that the driver, `gdtrain plot` and a notebook read
the same files the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from .trials import Trial

RESULTS_JSON = "sweep.json"
RESULTS_CSV = "sweep.csv"
# Done for this run of the sweep; "stopped" may still be resumed by a later rung.
FINAL = ("finished", "stopped", "diverged", "failed")


@dataclass
class TrialState:
    trial: Trial
    status: str = "pending"  # + running, elsewhere, and the worker's statuses
    step: int | None = None
    total_steps: int | None = None
    eval: dict | None = None  # the newest evaluation: at `step`
    error: str | None = None
    seconds: float | None = None
    earlier: bool = False  # the result was on disk: nothing was run for it this time
    stopped_by: str | None = None  # halving: the budget the trial was left at
    node: str | None = None
    warnings: list[str] = field(default_factory=list)

    def row(self, metric: str | None) -> dict:
        t = self.trial
        return {"trial": t.name, "params": t.params, "seed": t.seed, "status": self.status,
                "step": self.step, "total_steps": self.total_steps,
                "metric": value(self.eval, metric), "eval": self.eval, "error": self.error,
                "seconds": self.seconds, "earlier": self.earlier, "stopped_by": self.stopped_by,
                "node": self.node, "run_dir": str(t.run_dir)}


def value(evaluation: dict | None, metric: str | None) -> float | None:
    if not evaluation or metric is None:
        return None
    v = evaluation.get(metric)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def resolve_metric(metric: dict, states: list[TrialState]) -> tuple[str, str]:
    """(name, goal): as the sweep file says, or accuracy if the trials report it, else mse."""
    name = metric.get("name")
    if name is None:
        evals = [s.eval for s in states if s.eval]
        name = "accuracy" if any("accuracy" in e for e in evals) or not evals else (
            "mse" if any("mse" in e for e in evals) else "loss")
    goal = metric.get("goal") or ("maximize" if name == "accuracy" else "minimize")
    return name, goal


def rank_key(values: list[float | None], goal: str):
    """Sort key of a group: complete groups first, then by mean towards the goal."""
    known = [v for v in values if v is not None]
    missing = len(values) - len(known)
    if not known:
        return (missing, 1, 0.0)
    mean = statistics.fmean(known)
    return (missing, 0, -mean if goal == "maximize" else mean)


def groups(states: list[TrialState], metric: str, goal: str) -> list[dict]:
    """Trials grouped by their parameters without the seed, best first.

    A group trained further towards its train.steps (successive halving's survivors)
    ranks above one stopped earlier; then complete groups above those with a seed that
    diverged or failed; then by the mean of the metric over the seeds. std is the sample standard deviation
    (None for one seed).
    """
    by_setting: dict[str, list[TrialState]] = {}
    for s in states:
        by_setting.setdefault(s.trial.setting, []).append(s)
    out = []
    for members in by_setting.values():
        values = [value(s.eval, metric) for s in members]
        known = [v for v in values if v is not None]
        statuses: dict[str, int] = {}
        for s in members:
            statuses[s.status] = statuses.get(s.status, 0) + 1
        steps = [s.step for s in members if isinstance(s.step, int)]
        done = [s.step / s.total_steps for s in members
                if isinstance(s.step, int) and isinstance(s.total_steps, int) and s.total_steps > 0]
        out.append({
            "params": members[0].trial.params,
            "trials": [s.trial.name for s in members],
            "seeds": [s.trial.seed for s in members],
            "values": values,
            "n": len(known),
            "mean": statistics.fmean(known) if known else None,
            "std": statistics.stdev(known) if len(known) > 1 else None,
            "step": min(steps) if steps else None,
            "progress": min(done) if len(done) == len(members) else 0.0,
            "statuses": statuses,
        })
    out.sort(key=lambda g: (-g["progress"], rank_key(g["values"], goal)))
    for rank, g in enumerate(out, 1):
        g["rank"] = rank
    return out


def summary(spec, states: list[TrialState], extra: dict | None = None) -> dict:
    """What sweep.json holds."""
    metric, goal = resolve_metric(spec.metric, states)
    return {
        "name": spec.name,
        "directory": str(spec.directory),
        "sweep_file": str(spec.path),
        "config": str(spec.config_path),
        "method": spec.method,
        "parameters": [p.key for p in spec.parameters],
        "fixed": spec.fixed,
        "seeds": spec.seeds,
        "metric": {"name": metric, "goal": goal},
        "early_stop": spec.early_stop,
        "trials": [s.row(metric) for s in states],
        "groups": groups(states, metric, goal),
        "updated": time.time(),
        **(extra or {}),
    }


def csv_text(result: dict) -> str:
    keys = result["parameters"]
    metric = result["metric"]["name"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *keys, "seed", "status", "step", "total_steps", metric, "seconds", "error"])
    for row in result["trials"]:
        writer.writerow([row["trial"], *(json.dumps(row["params"].get(k)) if isinstance(
            row["params"].get(k), (list, dict)) else row["params"].get(k) for k in keys), row["seed"],
            row["status"], row["step"], row["total_steps"], row["metric"],
            None if row["seconds"] is None else round(row["seconds"], 3), row["error"]])
    return buffer.getvalue()


def write(result: dict, directory: Path) -> list[Path]:
    """sweep.json and sweep.csv in the sweep directory, each replaced atomically."""
    from ..run.rundir import write_text_atomic

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / RESULTS_JSON, directory / RESULTS_CSV]
    write_text_atomic(paths[0], json.dumps(result, indent=1, default=str) + "\n")
    write_text_atomic(paths[1], csv_text(result))
    return paths


def read(directory: str | Path) -> dict | None:
    """A sweep directory's sweep.json, or None if it is not one."""
    path = Path(directory) / RESULTS_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("groups"), list) else None
