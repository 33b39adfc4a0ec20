"""The sweep for people: the live table while it runs, the summary of the groups, the
trials of a dry run. Renders the driver's plain data on the console the CLI hands in."""

from __future__ import annotations

import os

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..sweep.results import TrialState, resolve_metric, value
from ..sweep.trials import labels, render_value
from .views import STATUS_STYLE, fmt_number

STYLE = {**STATUS_STYLE, "pending": "dim", "elsewhere": "magenta"}
LIVE_ROWS = 24  # a longer sweep shows its running trials and a count of the others


def _status(state: TrialState) -> str:
    text = f"[{STYLE.get(state.status, '')}]{state.status}[/]"
    if state.earlier and state.status in ("finished", "stopped", "diverged"):
        text += " [dim](earlier)[/]"
    if state.status == "elsewhere":
        text = f"[{STYLE['elsewhere']}]running elsewhere[/]"
    return text


def _step(state: TrialState) -> str:
    if state.step is None:
        return "-"
    return f"{state.step}/{state.total_steps}" if state.total_steps else str(state.step)


def live_table(spec, states: dict[str, TrialState], seconds: float) -> Group:
    snapshot = list(states.values())  # one C call: safe while the driver's thread adds trials
    metric, _ = resolve_metric(spec.metric, snapshot)
    known = spec.metric.get("name") or any(s.eval for s in snapshot)
    keys = [p.key for p in spec.parameters]
    label = labels(keys)
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("trial", no_wrap=True)
    for key in keys:
        table.add_column(label[key], justify="right")
    for name, justify in (("seed", "right"), ("status", "left"), ("step", "right"),
                          (metric if known else "metric", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    shown = snapshot
    if len(shown) > LIVE_ROWS:
        shown = [s for s in shown if s.status in ("running", "elsewhere")][:LIVE_ROWS]
    for s in shown:
        table.add_row(escape(s.trial.name), *(escape(render_value(s.trial.params[k])) for k in keys),
                      str(s.trial.seed), _status(s), _step(s), fmt_number(value(s.eval, metric)))
    counts: dict[str, int] = {}
    for s in snapshot:
        counts[s.status] = counts.get(s.status, 0) + 1
    line = ", ".join(f"{n} {status}" for status, n in counts.items())
    return Group(table, Text(f"{len(snapshot)} trials: {line}; {seconds:.1f}s", style="dim"))


def trial_line(state: TrialState, metric: str) -> str:
    """One line when a trial is done (what a log or a pipe gets instead of the live table)."""
    figure = value(state.eval, metric)
    text = f"{state.trial.name}: {state.status}, step {_step(state)}"
    if figure is not None:
        text += f", {metric} {fmt_number(figure)}"
    if state.seconds is not None and not state.earlier:
        text += f" ({state.seconds:.1f}s)"
    if state.earlier:
        text += " (earlier)"
    if state.error and state.status not in ("finished",):
        text += f": {state.error}"
    return text


def _mean_std(group: dict) -> str:
    mean, std = group["mean"], group["std"]
    if mean is None:
        return "-"
    if 1e-3 <= abs(mean) < 1e5:
        return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
    return f"{mean:.3e}" + (f" ± {std:.1e}" if std is not None else "")


def render_summary(console: Console, result: dict) -> None:
    metric, goal = result["metric"]["name"], result["metric"]["goal"]
    keys = result["parameters"]
    label = labels(keys)
    groups = result["groups"]
    trials = result["trials"]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    split = next((t["eval"].get("split") for t in trials if t.get("eval")), None)
    plural = "s" if len(trials) != 1 else ""
    console.print(f"[bold]sweep {escape(result['name'])}[/]: {len(trials)} trial{plural} in {len(groups)} "
                  f"setting{'s' if len(groups) != 1 else ''}; "
                  + ", ".join(f"{n} {s}" for s, n in counts.items())
                  + f"; ranked by {split + ' ' if split else ''}{metric} ({goal}), mean ± std over seeds")
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("rank", justify="right")
    for key in keys:
        table.add_column(label[key], justify="right")
    for name, justify in ((f"{metric} (mean ± std)", "right"), ("n", "right"), ("step", "right"),
                          ("trials", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "trials")
    for g in groups:
        statuses = ", ".join(f"{n} {s}" for s, n in g["statuses"].items())
        table.add_row(str(g["rank"]), *(escape(render_value(g["params"].get(k))) for k in keys),
                      _mean_std(g), str(g["n"]), "-" if g["step"] is None else str(g["step"]),
                      escape(statuses))
    if not console.is_terminal:
        console.width = 400  # a pipe or a log gets whole lines
    console.print(table)
    for t in trials:
        if t["status"] in ("diverged", "failed") and t["error"]:
            console.print(f"[{STYLE[t['status']]}]{escape(t['trial'])}[/]: {escape(t['error'])}")
    if result.get("files"):
        console.print(f"wrote {', '.join(escape(_shown(f)) for f in result['files'])}")


def _shown(path: str) -> str:
    """A path under the working directory as a relative one (runs/sweep/sweep.json)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def render_dry_run(console: Console, spec, rows: list[dict]) -> None:
    keys = [p.key for p in spec.parameters]
    label = labels(keys)
    method = ("grid" if spec.method == "grid"
              else f"random ({spec.samples} settings, sampler_seed {spec.sampler_seed})")
    extra = ""
    if spec.early_stop:
        e = spec.early_stop
        extra = f"; successive halving from {e['min_steps']} steps, rate {e['rate']}"
    console.print(f"[bold]sweep {escape(spec.name)}[/]: {len(rows)} trial{'s' if len(rows) != 1 else ''}, "
                  f"{method}{extra}, in "
                  f"{escape(str(spec.directory))} (dry run: nothing is trained or written)")
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("trial", no_wrap=True)
    for key in keys:
        table.add_column(label[key], justify="right")
    table.add_column("seed", justify="right")
    table.add_column("on disk", no_wrap=True)
    for r in rows:
        table.add_row(escape(r["trial"]), *(escape(render_value(r["params"][k])) for k in keys),
                      str(r["seed"]), escape(r["on_disk"]))
    if not console.is_terminal:
        console.width = 400
    console.print(table)
