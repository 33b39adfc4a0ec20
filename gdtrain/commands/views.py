"""Rich renderings of the inspection tools' results (runs, plan, gradcheck, components).

The tools return plain dicts (also printed as JSON with --json); these functions
only lay them out for people, on the console the CLI hands them.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def fmt_number(value) -> str:
    """A figure for a table cell: 4 decimals in the usual range, scientific outside it."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3e}"
    return str(value)

STATUS_STYLE = {"running": "cyan", "finished": "green", "stopped": "blue", "interrupted": "yellow",
                "diverged": "red", "failed": "red", "unknown": "dim"}


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _steps(steps: list[int], head: int = 4) -> str:
    """A list of steps, shortened in the middle when long."""
    if not steps:
        return "none"
    if len(steps) <= 2 * head + 1:
        return ", ".join(map(str, steps))
    first, last = ", ".join(map(str, steps[:head])), ", ".join(map(str, steps[-head:]))
    return f"{first}, … {last} ({len(steps)} in all)"


# ---------------------------------------------------------------- runs


def render_runs(console: Console, rows: list[dict]) -> None:
    from ..run.runs_table import format_duration, format_time

    table = Table(show_edge=False, header_style="bold")
    for name, justify in (("run", "left"), ("status", "left"), ("step", "right"), ("last loss", "right"),
                          ("eval", "right"), ("best", "right"), ("wall", "right"), ("updated", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in rows:
        status = f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]"
        if r["note"] and r["status"] in ("interrupted", "stopped"):
            status += f" [dim]({escape(r['note'])})[/]"
        step = f"{r['step']}/{r['total_steps']}" if r["total_steps"] else str(r["step"])
        metric = f"{r['metric']} " if r["metric"] else ""
        last = f"{metric}{fmt_number(r['last_eval'])}" if r["last_eval"] is not None else "-"
        best = f"{fmt_number(r['best_eval'])} @{r['best_eval_step']}" if r["best_eval"] is not None else "-"
        table.add_row(escape(r["name"]), status, step, fmt_number(r["last_loss"]), last, best,
                      format_duration(r["wall_seconds"]), format_time(r["updated"]))
    if not console.is_terminal:
        console.width = 400  # a pipe or a log gets whole lines: rich would cut them at 80 columns
    console.print(table)
    for r in rows:
        if r["status"] in ("diverged", "failed") and r["note"]:
            console.print(f"[{STATUS_STYLE[r['status']]}]{escape(r['name'])}[/]: {escape(r['note'])}")


# ---------------------------------------------------------------- plan


def render_plan(console: Console, plan: dict) -> None:
    data, model, mem = plan["data"], plan["model"], plan["memory"]
    examples = ", ".join(f"{n} {c}" for n, c in data["examples"].items())
    console.print(f"[bold]{escape(plan['run_dir'])}[/]: {plan['steps']} steps of {plan['batch_size']} "
                  f"= {plan['samples']} samples, {plan['epochs']:.4g} epochs "
                  f"({plan['steps_per_epoch']:.4g} steps per epoch)")
    console.print(f"data      {escape(data['name'])}: {examples}; {data['input_dim']} features -> "
                  f"{data['output_dim']} outputs; {_bytes(data['bytes'])} in memory")
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in model["shapes"].items())
    console.print(f"model     {escape(model['name'])}: {shapes}; {model['parameters']} parameters, "
                  f"{model['trainable_parameters']} trainable ({', '.join(model['trainable'])})"
                  + "".join(f"; {escape(note)}" for note in model.get("notes", [])))
    groups = " + ".join(f"{k.replace('_', ' ')} {_bytes(v)}" for k, v in mem.items() if k != "total")
    console.print(f"memory    {groups} = {_bytes(mem['total'])}")

    lr = plan["learning_rate"]
    console.print(f"learning rate  {lr['first']:.6g} -> {lr['last']:.6g} "
                  f"({lr['changes']} changes{'; sampled' if lr['sampled_every'] > 1 else ''}); "
                  "update k+1 uses the rate at global step k")
    segments = lr["segments"]
    shown = segments if len(segments) <= 12 else segments[:6] + [None] + segments[-5:]
    table = Table(show_edge=False, header_style="bold", box=None, padding=(0, 2))
    for name in ("global steps", "updates", "learning rate"):
        table.add_column(name, justify="right" if name != "learning rate" else "left")
    for seg in shown:
        if seg is None:
            table.add_row("…", "…", f"({len(segments) - 11} more segments)")
            continue
        a, b = seg["first_step"], seg["last_step"]
        rate = (f"{seg['lr_first']:.6g}" if seg["kind"] == "constant"
                else f"{seg['lr_first']:.6g} -> {seg['lr_last']:.6g} (changes every step)")
        table.add_row(f"{a}–{b}", f"{a + 1}–{b + 1}", rate)
    console.print(table)

    for part in plan["chain"]:  # the step's parts after the loss's gradient, in the order they run
        console.print(f"{part['stage']:<9} {escape(part['text'])}")
    console.print(f"log       {len(plan['log_steps'])} lines: {_steps(plan['log_steps'])}")
    console.print(f"evaluate  at {_steps(plan['eval_steps'])}")
    console.print(f"save      at {_steps(plan['checkpoint_steps'])}; kept at the end: "
                  f"{_steps(plan['checkpoints_kept'])}")
    judging = plan.get("judging")
    if judging:
        judged = f"{judging['split']} {judging['metric']} ({judging['mode']})"
        if judging["early_stopping"]:
            earliest = (f"at step {judging['earliest_stop']} at the earliest" if judging["earliest_stop"]
                        else "not within this run's length")
            console.print(f"early stop  by {judged}, patience {judging['patience']} evaluations, min_delta "
                          f"{judging['min_delta']:g}; judged at {_steps(judging['judged_steps'])}; "
                          f"can stop {earliest}")
        else:
            console.print("early stop  off")
        if judging["keep_best"]:
            console.print(f"keep best   the best checkpoint by {judged}, as checkpoints/best, kept beside "
                          "the newest (saved at each new best)")
    else:
        console.print("early stop  off; keep best off")
    resume = plan["resume"]
    styles = {"start": "green", "resume": "green", "done": "cyan", "stopped": "cyan"}
    style = styles.get(resume["action"], "yellow")
    console.print(f"resume    [{style}]{resume['action']}[/]: {escape(resume['detail'])}"
                  + (" [yellow](a gdtrain process is running it now)[/]" if resume.get("in_use") else ""))
    for change in resume.get("changes", []):
        console.print(f"          {escape(change['key'])}: {change['was']!r} -> {change['now']!r}")
    for text in resume.get("skipped", []):
        console.print(f"          [yellow]{escape(text)}[/]")


# ---------------------------------------------------------------- gradcheck


def render_gradcheck(console: Console, result: dict) -> None:
    terms = escape("".join(f" + {p['text']}" for p in result["penalties"]))
    console.print(f"[bold]{escape(result['model'])} + {escape(result['loss'])}{terms}[/]: float64 central "
                  f"differences on {result['batch']} examples, objective {result['objective']:.6g}")
    table = Table(show_edge=False, header_style="bold")
    for name in ("parameter", "shape", "checked", "max |grad|", "max |error|", "relative error", ""):
        table.add_column(name, justify="left" if name in ("parameter", "") else "right")
    for r in result["params"]:
        verdict = "[green]ok[/]" if r["ok"] else f"[red]FAIL[/] {escape(r.get('problem', ''))}"
        table.add_row(r["name"], "x".join(map(str, r["shape"])) or "scalar", f"{r['checked']}/{r['size']}",
                      _sci(r["max_abs_grad"]), _sci(r["max_abs_error"]), _sci(r["relative_error"]), verdict)
    console.print(table)
    if result["frozen"]:
        console.print(f"not checked (frozen): {', '.join(result['frozen'])}")
    if result.get("dropout_key"):
        seed, step = result["dropout_key"]
        console.print(f"dropout: masks held fixed (key seed {seed}, step {step}) for every evaluation")
    console.print(f"tolerance {result['tolerance']:g}: relative error = max |analytic - numeric| / "
                  "max |gradient| over the checked entries")


def _sci(value) -> str:
    return "-" if value is None else f"{value:.2e}"


# ---------------------------------------------------------------- components


def render_components(console: Console, data: dict, kinds: list[str]) -> None:
    from ..config.components import plain_value, plural

    for kind in kinds:
        console.print(f"[bold underline]{plural(kind)}[/]")
        for entry in data[kind]:
            console.print(f"  [bold]{escape(entry['name'])}[/]  {escape(entry['summary'])}")
            if kind == "model":
                init = ", ".join(f"{k} {plain_value(v)}" for k, v in entry["default_init"].items())
                console.print(f"      parameters {', '.join(entry['parameters'])}; "
                              f"default init {escape(init)}")
            for o in entry["options"]:
                default = "required" if o["required"] else f"default {plain_value(o['default'])}"
                doc = f"  {escape(o['doc'])}" if o["doc"] else ""
                console.print(f"      {o['name']}: [cyan]{escape(o['type'])}[/], {escape(default)}{doc}")
        console.print()
