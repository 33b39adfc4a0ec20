"""Printing a run for people: progress bar, log lines, evaluation tables, summary."""

from __future__ import annotations

import sys
import time

from rich import box
from rich.console import Console
from rich.table import Table

from ..core import compute
from ..run.hooks import Reporter
from . import terminal
from .views import fmt_number as _fmt


class ConsoleReporter(Reporter):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.out = terminal.console()
        self.err = terminal.console(stderr=True)
        self.bar = None
        self._last_postfix = 0.0
        self._terms: list[str] = []  # the penalties' labels: their terms are in each log record

    def start(self, info: dict) -> None:
        self._terms = list(info.get("penalties", []))
        if self.quiet:
            return
        start, total = info["start_step"], info["total_steps"]
        self.out.print(
            f"[bold]{info['run_dir']}[/]: {total} steps ({total / info['steps_per_epoch']:.2f} epochs "
            f"of {info['train_examples']} examples), {info['parameters']} parameters, "
            f"trainable {', '.join(info['trainable'])}; data loaded in {info['load_seconds']:.2f}s"
        )
        # a progress bar only on a terminal: no control codes in logs and pipes
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                            leave=False, file=sys.stderr)

    def step(self, result) -> None:
        if self.bar is not None:
            self.bar.update(1)
            now = time.monotonic()
            if now - self._last_postfix > 0.25:  # formatting every step would cost more than the step
                self.bar.set_postfix(loss=f"{result.loss:.4g}", lr=f"{result.lr:.3g}", refresh=False)
                self._last_postfix = now

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        self.out.print(text)
        if self.bar is not None:
            self.bar.refresh()

    def log(self, record: dict) -> None:
        if self.quiet:
            return
        terms = "".join(f"  {k} {record[k]:.4g}" for k in self._terms if k in record)
        self._print(f"step {record['step']:>7}  epoch {record['epoch']:6.2f}  loss {record['loss']:.6g}"
                    f"{terms}  lr {record['lr']:.4g}  {record['elapsed']:.1f}s")

    def evaluation(self, record: dict) -> None:
        if self.quiet:
            return
        figures = "  ".join(f"{k} {figure}" for k, figure in _figures(record))
        self._print(f"eval {record['step']:>7}  {record['split']} ({record['weights']} weights)  {figures}")

    def message(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def warning(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        self.err.print(f"[yellow]gdtrain: warning:[/] {text}", markup=True)

    def end(self, summary: dict) -> None:
        self.close()
        if self.quiet:
            return
        table = Table(title=f"{summary['run_dir']}", show_header=False, title_justify="left")
        table.add_column()
        table.add_column(overflow="fold")  # a long checkpoint path wraps in its cell rather than being cut
        ev = summary["eval"]
        batch_basis, eval_basis = _loss_bases(summary)
        rows = [
            ("steps", f"{summary['steps']}"
             + (f" (resumed at {summary['resumed_from']})" if summary["resumed_from"] else "")),
            ("last batch loss", _fmt(summary["final_loss"])
             + (f" ({batch_basis})" if batch_basis and summary["final_loss"] is not None else "")),
        ]
        stopped = summary.get("stopped")
        if stopped:
            rows.append(("stopped early", f"at step {stopped['step']}: best {stopped['metric']} "
                         f"{_fmt(stopped['best'])} at step {stopped['best_step']} "
                         f"(patience {stopped['patience']})"))
        rows += [(f"{label} term", _fmt(term)) for label, term in summary.get("penalties", {}).items()]
        for k, figure in _figures(ev):
            basis = f"{eval_basis}, " if k == "loss" and eval_basis else ""
            rows.append((f"{ev['split']} {k}", f"{figure} ({basis}{ev['weights']} weights)"))
        raw = summary.get("eval_raw")
        if raw and "accuracy" in raw:
            rows.append((f"{raw['split']} accuracy", f"{_fmt(raw['accuracy'])} (raw weights)"))
        rows += [
            ("training time", _training_time(summary)),
            ("checkpoint", summary["checkpoint"]),
        ]
        if summary.get("compute"):
            rows.insert(-1, ("BLAS", compute.label(summary["compute"])))
        for k, v in rows:
            table.add_row(k, v)
        self.out.print(table)
        curve = sparkline([loss for _, loss in summary.get("loss_curve", [])])
        if curve:
            self.out.print(f"loss curve  {curve}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _training_time(summary: dict) -> str:
    """This process's time; after a resume also the whole run's, as metrics.jsonl counts it."""
    if not summary["resumed_from"]:
        return f"{summary['train_seconds']:.2f}s"
    return f"{summary['train_seconds']:.2f}s this session, {summary['elapsed']:.2f}s in all"


def _loss_bases(summary: dict) -> tuple[str, str]:
    """What the summary's two losses are: the last training batch's loss, reduced as the
    config says (a sum for the TF1 tutorial's softmax), and the evaluation loss, always the
    `mean` reduction over the split (core/evaluate.py). Empty when the summary does not say."""
    if "loss_reduction" not in summary:
        return "", ""
    n, per = summary["batch_size"], summary["loss_values_per_example"]
    if summary["loss_reduction"] == "sum":
        batch = f"sum over {n} examples"
    else:
        batch = f"mean over {n} examples" + (f" and {per} outputs" if per > 1 else "")
    return batch, "mean per example" if per == 1 else "mean per output value"


def _figures(record: dict) -> list[tuple[str, str]]:
    """(name, formatted value) of the evaluation figures a record holds: loss, accuracy, mse."""
    return [(k, _fmt(record[k])) for k in ("loss", "accuracy", "mse") if k in record]


_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """The loss curve as one line of block characters (downsampled to `width`)."""
    values = [v for v in values if v == v and abs(v) != float("inf")]
    if len(values) < 2:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    blocks = "".join(_BLOCKS[min(7, int((v - lo) / span * 8))] for v in values)
    return f"{blocks}  {values[0]:.4g} → {values[-1]:.4g}"


def print_evaluation(console: Console, result: dict) -> None:
    console.print(f"[bold]{result['checkpoint']}[/] (step {result['step']}), {result['split']} split, "
                  f"{result['weights']} weights, {result['examples']} examples")
    if result.get("note"):
        console.print(f"[yellow]note:[/] {result['note']}")
    console.print(f"loss      {_fmt(result['loss'])}")
    if "mse" in result:
        console.print(f"mse       {_fmt(result['mse'])}")
    if "accuracy" in result:
        console.print(f"accuracy  {result['accuracy']:.4f}")
        confusion = result["confusion"]
        k = len(confusion)
        # no borders, two spaces between columns, every count column as wide as the widest
        # count: MNIST's ten classes take 75 columns with the train split's 4-digit counts
        # (the title on its own line: a table title wraps to the table's width)
        console.print("confusion matrix (rows: true class, columns: predicted)")
        digits = max(len(str(c)) for row in confusion for c in row)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1), pad_edge=False,
                      header_style="bold")
        table.add_column("class", justify="right", no_wrap=True)
        for j in range(k):
            table.add_column(str(j), justify="right", no_wrap=True, min_width=digits)
        table.add_column("accuracy", justify="right", no_wrap=True)
        for i in range(k):
            acc = result["per_class_accuracy"][i]
            table.add_row(str(i), *[str(c) for c in confusion[i]], "-" if acc is None else f"{acc:.4f}")
        print_uncut(console, table)


def print_uncut(console: Console, table: Table) -> None:
    """Print a table whole: one wider than the console (many classes, huge counts) is laid
    out at its own width, lines that a terminal wraps rather than figures cut to `…`."""
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum
    if needed <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = needed
    try:
        console.print(table)
    finally:
        console.width = width
