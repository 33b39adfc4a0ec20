"""Pictures of runs, headless: learning curves, decision boundaries, confusion matrices.

matplotlib is an optional extra (`pip install 'gdtrain[plot]'`); without it every
function here raises MissingExtra, which the CLI reports with exit code 2. Figures
are built with the object API on the Agg canvas (no pyplot, no display, no global
state) and written atomically; the file's extension picks PNG, SVG or PDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, MissingExtra
from ..run.rundir import RunDir
from ..run.runs_table import finite_number, headline_metric
from .out_file import write_output

DPI = 100
CURVES_SIZE = (13.5, 4.0)  # inches: loss, evaluation, learning rate side by side
PANEL_SIZE = (5.5, 5.0)  # inches per run for --boundary and --confusion
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
GRID = 300  # boundary grid points per axis

INSTALL_HINT = ("plotting needs matplotlib, an optional extra: "
                "pip install 'gdtrain[plot]' (or pip install matplotlib)")


def _figure(size: tuple[float, float]):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra(INSTALL_HINT) from None
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_output(out: str | Path) -> str:
    """The format for `out`, from its extension; ConfigError for any other."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out}: unknown image type; use a name ending in {', '.join(FORMATS)}")
    return fmt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    fmt = check_output(out)
    write_output(out, lambda f: fig.savefig(f, format=fmt, dpi=DPI))
    return out


def _labels(runs: list[Path]) -> list[str]:
    """Legend names: the run directory's name, its path where two names collide."""
    names = [Path(r).resolve().name for r in runs]
    return [str(r) if names.count(n) > 1 else n for r, n in zip(runs, names, strict=True)]


# ---------------------------------------------------------------- learning curves


@dataclass
class Curves:
    label: str
    train_steps: list[int]
    loss: list[float]
    lr: list[float]
    eval_steps: list[int]
    eval_values: list[float]
    metric: str | None
    split: str | None


def read_curves(run: str | Path, label: str) -> Curves:
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise DataError(f"{run}: no such run directory")
    records = rd.read_metrics()
    if not records:
        raise DataError(f"{run}: no records in {rd.metrics.name}; nothing to plot")
    train = [r for r in records if r.get("event") == "train" and finite_number(r.get("loss"))]
    evals = [r for r in records if r.get("event") == "eval"]
    metric = headline_metric(evals)
    picked = [r for r in evals if metric and finite_number(r.get(metric))]
    return Curves(
        label,
        [r["step"] for r in train],
        [r["loss"] for r in train],
        [r["lr"] for r in train] if all(finite_number(r.get("lr")) for r in train) else [],
        [r["step"] for r in picked],
        [r[metric] for r in picked],
        metric,
        picked[-1].get("split") if picked else None,
    )


def plot_curves(runs: list[str | Path], out: str | Path) -> Path:
    """Training loss, evaluation metric and learning rate of each run, overlaid; for a
    sweep directory, of each group of its trials (plot_sweep)."""
    check_output(out)
    runs = [Path(r) for r in runs]
    if len(runs) == 1 and (runs[0] / "sweep.json").is_file():
        return plot_sweep(runs[0], out)
    curves = [read_curves(r, label) for r, label in zip(runs, _labels(runs), strict=True)]
    fig = _figure(CURVES_SIZE)
    ax_loss, ax_eval, ax_lr = fig.subplots(1, 3)
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for c, color in zip(curves, colors, strict=True):
        if c.loss:
            ax_loss.plot(c.train_steps, c.loss, color=color, label=c.label, lw=1.2)
        if c.eval_values:
            ax_eval.plot(c.eval_steps, c.eval_values, color=color, label=c.label, marker="o", ms=3, lw=1.2)
        if c.lr:
            ax_lr.plot(c.train_steps, c.lr, color=color, label=c.label, lw=1.2)

    losses = [v for c in curves for v in c.loss]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        ax_loss.set_yscale("log")  # losses fall over decades; a linear axis shows only the first steps
    metrics = sorted({c.metric for c in curves if c.metric})
    splits = sorted({c.split for c in curves if c.split})
    ax_loss.set_title("training loss (batch)")
    ax_eval.set_title(f"{' / '.join(splits) or 'evaluation'} {' / '.join(metrics) or 'metric'}")
    ax_lr.set_title("learning rate")
    for ax, has in ((ax_loss, losses), (ax_eval, metrics), (ax_lr, any(c.lr for c in curves))):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if not has:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    lrs = [v for c in curves for v in c.lr]
    if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 100:
        ax_lr.set_yscale("log")
    elif lrs:
        ax_lr.set_ylim(bottom=0)  # a constant rate otherwise gets an axis of its rounding noise
    if losses:
        ax_loss.legend(fontsize="small")
    return _save(fig, out)


# ---------------------------------------------------------------- a sweep's groups


def _band(curves: list[tuple[list[int], list[float]]]):
    """(steps, mean, low, high) over the seeds' curves, at each step any of them logged."""
    by_step: dict[int, list[float]] = {}
    for steps, values in curves:
        for step, v in zip(steps, values, strict=True):
            by_step.setdefault(step, []).append(v)
    steps = sorted(by_step)
    rows = [np.array(by_step[s], dtype=np.float64) for s in steps]
    return (steps, [r.mean() for r in rows], [r.min() for r in rows], [r.max() for r in rows])


def plot_sweep(directory: str | Path, out: str | Path) -> Path:
    """The groups of a sweep (trials that differ only in their seed): the mean curve over
    the seeds, with a band from the lowest to the highest seed, in sweep.json's order."""
    from ..sweep.results import read as read_sweep
    from ..sweep.trials import labels, render_value

    check_output(out)
    directory = Path(directory)
    result = read_sweep(directory)
    if result is None:
        raise DataError(f"{directory}: no readable sweep.json; run the sweep first")
    keys = result["parameters"]
    short = labels(keys)
    fig = _figure(CURVES_SIZE)
    ax_loss, ax_eval, ax_lr = fig.subplots(1, 3)
    drawn, metrics, splits, losses = 0, set(), set(), []
    for i, group in enumerate(result["groups"]):
        runs = [directory / n for n in group["trials"] if (directory / n / "metrics.jsonl").is_file()]
        if not runs:
            continue
        curves = [read_curves(r, r.name) for r in runs]
        setting = ", ".join(f"{short[k]}={render_value(group['params'].get(k))}" for k in keys)
        label = f"{setting or 'base'} (n={len(runs)})"
        color = f"C{i % 10}"
        for ax, pick in ((ax_loss, lambda c: (c.train_steps, c.loss)),
                         (ax_eval, lambda c: (c.eval_steps, c.eval_values))):
            picked = [pick(c) for c in curves if pick(c)[1]]
            if not picked:
                continue
            steps, mean, low, high = _band(picked)
            ax.plot(steps, mean, color=color, label=label, lw=1.2,
                    marker="o" if ax is ax_eval else None, ms=3)
            if len(picked) > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
            if ax is ax_loss:
                losses += list(low) + list(high)
        if curves[0].lr:
            ax_lr.plot(curves[0].train_steps, curves[0].lr, color=color, label=label, lw=1.2)
        metrics.update(c.metric for c in curves if c.metric)
        splits.update(c.split for c in curves if c.split)
        drawn += 1
    if not drawn:
        raise DataError(f"{directory}: no trial has logged anything yet; nothing to plot")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_title("training loss (batch): mean over seeds, band min-max")
    ax_eval.set_title(f"{' / '.join(sorted(splits)) or 'evaluation'} "
                      f"{' / '.join(sorted(metrics)) or 'metric'}")
    ax_lr.set_title("learning rate")
    ax_lr.set_ylim(bottom=0)
    for ax in (ax_loss, ax_eval, ax_lr):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize="small")
    fig.suptitle(f"sweep {result.get('name', directory.name)}", fontsize="medium")
    return _save(fig, out)


# ---------------------------------------------------------------- decision boundary



def plot_boundary(runs: list[str | Path], out: str | Path, weights: str = "ema") -> Path:
    """For two-feature datasets: the model's 0.5 contour over the training points."""
    from ..core.evaluate import class_labels, evaluate, headline, outputs
    from ..run.inspect_run import load_trainer

    check_output(out)
    runs = [Path(r) for r in runs]
    loaded = []
    for run in runs:
        trainer, path, meta = load_trainer(run)
        ds = trainer.dataset
        if ds.input_dim != 2:
            raise ConfigError(
                f"--boundary: {run} was trained on {ds.name} with {ds.input_dim} feature"
                f"{'s' if ds.input_dim != 1 else ''}; a decision boundary is drawn for "
                "two-feature datasets only"
            )
        labels = class_labels(ds.train.y)
        if labels is None:
            raise ConfigError(f"--boundary: {run} has real-valued targets ({ds.name}); "
                              "a decision boundary needs class labels or 0/1 targets")
        loaded.append((trainer, int(meta["step"]), labels))

    fig = _figure((PANEL_SIZE[0] * len(runs), PANEL_SIZE[1]))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, label, (trainer, step, labels) in zip(axes, _labels(runs), loaded, strict=True):
        ds, model, loss = trainer.dataset, trainer.model, trainer.loss
        params = trainer.eval_params(weights)
        x = ds.train.x
        lo, hi = x.min(axis=0), x.max(axis=0)
        pad = 0.1 * np.maximum(hi - lo, 1e-6)
        g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], GRID)
        g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], GRID)
        xx, yy = np.meshgrid(g0, g1)
        grid = np.column_stack([xx.ravel(), yy.ravel()]).astype(x.dtype)
        pred = np.asarray(loss.predict(outputs(model, params, grid)), dtype=np.float64)
        if pred.shape[1] == 1:
            # the seeds' picture: the model's output (a probability, or an MSE fit of 0/1
            # labels) as shading, and its 0.5 contour as the boundary
            z = pred[:, 0].reshape(xx.shape)
            ax.contourf(xx, yy, z, levels=np.linspace(min(0.0, z.min()), max(1.0, z.max()), 21),
                        cmap="RdBu_r", alpha=0.35)
            ax.contour(xx, yy, z, levels=[0.5], colors="k", linewidths=1.5)
        else:
            k = pred.shape[1]
            z = pred.argmax(axis=1).reshape(xx.shape)
            ax.contourf(xx, yy, z, levels=np.arange(k + 1) - 0.5, cmap="tab10", vmin=0, vmax=9, alpha=0.3)
            ax.contour(xx, yy, z, levels=np.arange(k) + 0.5, colors="k", linewidths=1.0)
        names = ds.class_names or [str(c) for c in range(max(2, ds.num_classes or 2))]
        for c in np.unique(labels):
            color = ("tab:blue", "tab:red")[c] if pred.shape[1] == 1 else f"C{c % 10}"
            ax.scatter(x[labels == c, 0], x[labels == c, 1], color=color, s=14, edgecolors="k",
                       linewidths=0.4, label=f"label {names[c]}")
        ax.legend(fontsize="small", loc="upper right")
        result = evaluate(model, loss, params, ds.train, ds.num_classes)
        name, value = headline(result)
        ax.set_title(f"{label}: step {step}, train {name} {value:.3f} ({trainer.weights_used(weights)})",
                     fontsize="medium")
        ax.set_xlabel("x0")
        ax.set_ylabel("x1")
        ax.set_aspect("equal", adjustable="box")
    return _save(fig, out)


# ---------------------------------------------------------------- confusion matrix


def plot_confusion(runs: list[str | Path], out: str | Path, split: str = "test",
                   weights: str = "ema") -> Path:
    """The confusion matrix of each run as a heat map (colour: share of the true class)."""
    from ..core.evaluate import evaluate
    from ..run.inspect_run import load_trainer

    check_output(out)
    runs = [Path(r) for r in runs]
    panels = []
    for run in runs:
        trainer, path, meta = load_trainer(run)
        ds = trainer.dataset
        used_split, chosen, _ = ds.split_or_train(split, f"--split {split}")
        params = trainer.eval_params(weights)
        result = evaluate(trainer.model, trainer.loss, params, chosen, ds.num_classes)
        if "confusion" not in result:
            raise ConfigError(f"--confusion: {run} has real-valued targets ({ds.name}); "
                              "no classes to confuse")
        panels.append((np.array(result["confusion"]), result["accuracy"], used_split, ds.class_names))

    fig = _figure((PANEL_SIZE[0] * len(runs), PANEL_SIZE[1]))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, label, (confusion, accuracy, used_split, names) in zip(axes, _labels(runs), panels, strict=True):
        k = len(confusion)
        totals = confusion.sum(axis=1, keepdims=True)
        share = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize="x-small",
                            color="white" if share[i, j] > 0.5 else "black")
        ticks = names if names and len(names) == k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), ticks, rotation=90 if max(map(len, ticks)) > 2 else 0, fontsize="small")
        ax.set_yticks(range(k), ticks, fontsize="small")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{label}: {used_split} accuracy {accuracy:.4f}", fontsize="medium")
        fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return _save(fig, out)


def image_size(out: str | Path) -> tuple[int, int] | None:
    """(width, height) in pixels of a figure written here, for PNG output; None otherwise."""
    if Path(out).suffix.lower() != ".png":
        return None
    with open(out, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
