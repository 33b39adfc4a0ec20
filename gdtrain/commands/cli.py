"""The command line. The only module that prints; heavy imports happen inside commands
so that `gdtrain --help` stays fast."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..errors import ConfigError, DataError, GdtrainError

app = typer.Typer(
    name="gdtrain",
    help="Gradient descent from YAML configs, with NumPy: train, resume, evaluate.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _plain_flags() -> None:
    """Show flags bare in help (`--quiet`, not `--quiet <bool>`), for every command.

    typer 0.29's rich help prints each option's type, flags included, although a flag takes
    no value; click's plain help, and typer 0.27's rich help, leave flags bare.
    """
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "plain_flags", False):
        return  # a typer without the method (older, or changed): nothing to correct

    @functools.wraps(shown)
    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.plain_flags = True
    TyperOption.display_type_rich = display_type_rich


_plain_flags()


def _console(stderr: bool = False):
    from .terminal import console

    return console(stderr)


def _fail(message: str, code: int) -> None:
    err = _console(stderr=True)
    err.print(f"[bold red]gdtrain: error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


# The config file, line map and path notes of this command, for problems found after loading
_loaded: tuple[Path, dict, dict] | None = None


def handles_errors(command):
    """Turn gdtrain's exceptions into one line on stderr and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        global _loaded
        _loaded = None  # a config located by an earlier command (in-process tests) is not this one's
        try:
            return command(*args, **kwargs)
        except GdtrainError as exc:
            if isinstance(exc, ConfigError) and _loaded is not None:
                from ..config.locate import locate_later

                exc = locate_later(exc, *_loaded[:2])
            elif isinstance(exc, DataError) and _loaded is not None:
                from ..config.paths import explain_missing

                exc = explain_missing(exc, _loaded[2])
            _fail(_escape(str(exc)), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            raise typer.Exit(1) from None
        except MemoryError as exc:
            # numpy says what it tried: "Unable to allocate 7.3 TiB for an array with shape ..."
            _fail(_escape(f"out of memory: {exc}" if str(exc) else "out of memory"), 2)

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _version(value: bool):
    if value:
        print(f"gdtrain {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
):
    """gdtrain: train linear, softmax and MLP models with TF1-exact gradient descent."""


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a config key, e.g. optimizer.learning_rate=0.1."
    ),
]


def _load_config(path: Path, overrides: list[str] | None) -> dict:
    global _loaded
    from ..config.loading import load_located

    config, lines, notes = load_located(path, overrides or [])
    _loaded = (path, lines, notes)
    return config


# ---------------------------------------------------------------- run


@app.command()
@handles_errors
def run(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over, deleting the run's checkpoints.")
    ] = False,
    allow_config_change: Annotated[
        bool, typer.Option("--allow-config-change",
                           help="Resume even if optimizer/schedule/l2/penalties/clip/ema changed."),
    ] = False,
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="A few steps on a slice: save, resume, evaluate; exit 1 on failure."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log lines.")] = False,
):
    """Train the model a config describes; resume from its newest checkpoint if it has one."""
    cfg = _load_config(config, set_)
    if smoke:
        from ..run.smoke import smoke as smoke_check

        print(smoke_check(cfg))
        return
    from ..run.loop import RunOptions, train
    from .report import ConsoleReporter

    reporter = ConsoleReporter(quiet=quiet)
    try:
        summary = train(cfg, reporter, RunOptions(restart=restart, allow_config_change=allow_config_change))
    finally:
        reporter.close()
    if quiet:
        from ..core.evaluate import headline

        name, value = headline(summary["eval"])
        stopped = " (stopped early)" if summary.get("stopped") else ""
        print(f"{summary['run_dir']}: step {summary['steps']}{stopped}, {summary['eval']['split']} {name} "
              f"{value:.4f}")


# ---------------------------------------------------------------- eval

CheckpointOption = Annotated[
    str | None,
    typer.Option("--checkpoint", metavar="best|latest|STEP",
                 help="Which checkpoint of the run: latest (default), best (train.keep_best) or a step."),
]


def _which_checkpoint(value: str | None) -> str | int | None:
    """--checkpoint checked before anything is loaded: 'best', 'latest' or a step number."""
    if value is None or value in ("best", "latest"):
        return value
    text = value.strip()
    if text.isascii() and text.isdigit():
        if len(text) > 18:  # no checkpoint has such a step (and int() refuses 4300 digits)
            raise ConfigError(f"--checkpoint: {text[:20]}…: no checkpoint has a step that large")
        return int(text)
    raise ConfigError(f"--checkpoint: expected best, latest or a step number, got {value!r}")



@app.command("eval")
@handles_errors
def eval_(
    target: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    split: Annotated[str, typer.Option(help="test, train or validation.")] = "test",
    weights: Annotated[str, typer.Option(help="ema (default when the run has them) or raw.")] = "ema",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON (with --watch: one line each).")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Score each checkpoint as it is saved; stop when the run stops.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: seconds to wait for a new checkpoint, then give up.")
    ] = None,
    interval: Annotated[
        float, typer.Option(help="With --watch: seconds between looks for new checkpoints.")
    ] = 2.0,
    checkpoint: CheckpointOption = None,
):
    """Score a run's newest checkpoint (or its best, a given step, or a checkpoint file) on a split."""
    from ..run.inspect_run import evaluate_checkpoint

    _check_choice("--split", split, SPLITS)
    _check_choice("--weights", weights, WEIGHTS)
    which = _which_checkpoint(checkpoint)
    if watch and which is not None:
        raise ConfigError("--checkpoint does not go with --watch, which scores every checkpoint")
    if not watch and timeout is not None:
        raise ConfigError("--timeout goes with --watch")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout: expected a positive number of seconds, got {timeout}")
    if not interval > 0:
        raise ConfigError(f"--interval: expected a positive number of seconds, got {interval}")
    if watch:
        _watch(target, split, weights, as_json, timeout, interval)
        return
    result = evaluate_checkpoint(target, split, weights, which=which)
    if as_json:
        print(json.dumps(result, indent=1))
        return
    from .report import print_evaluation

    print_evaluation(_console(), result)


def _watch(target: Path, split: str, weights: str, as_json: bool, timeout: float | None,
           interval: float) -> None:
    """`eval --watch`: one line per checkpoint on stdout, flushed, as each is scored."""
    from ..core.evaluate import headline
    from ..errors import CheckpointError
    from ..run.inspect_run import WatchTimeout, watch

    err = _console(stderr=True)

    def warn(text: str) -> None:
        err.print(f"[yellow]gdtrain: warning:[/] {_escape(text)}", markup=True)

    if not (target / "checkpoints").is_dir():
        warn(f"waiting for {target} to save checkpoints")
    try:
        for result in watch(target, split, weights, timeout, interval, warn):
            if as_json:
                print(json.dumps(result), flush=True)
                continue
            name, value = headline(result)
            print(f"step {result['step']:>8}  {Path(result['checkpoint']).name}  {result['split']} "
                  f"({result['weights']} weights)  loss {result['loss']:.6g}  {name} {value:.4f}", flush=True)
    except WatchTimeout as exc:
        if not exc.evaluated:
            raise CheckpointError(
                f"{target}: no checkpoint to evaluate appeared within {exc.seconds:g}s") from None
        err.print(f"gdtrain: stopped watching {target}: {exc}")


# ---------------------------------------------------------------- check, verify


@app.command()
@handles_errors
def check(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
    no_data: Annotated[
        bool, typer.Option("--no-data", help="Check the config alone: load no data, build no model.")
    ] = False,
):
    """Validate a config without training and print it resolved, every default filled in.

    Unless --no-data, also loads the data and builds the model, loss and optimizer, so that
    what only the data can tell (a loss that does not fit the labels, model.init.from arrays
    of the wrong shape, a damaged data file) is found before a run.
    """
    from ..config.yaml_file import dump_yaml

    cfg = _load_config(config, set_)
    if not no_data:
        from ..core.train import Trainer
        from ..data import load_dataset
        from ..run.npz import read_npz

        Trainer(cfg, load_dataset(cfg["data"], cfg["run"]["dtype"]), read_arrays=read_npz)
    sys.stdout.write(dump_yaml(cfg))
    _console(stderr=True).print(f"{config}: ok" + (" (config only)" if no_data else ""))


@app.command()
@handles_errors
def verify(target: Annotated[Path, typer.Argument(help="Run directory, or one checkpoint file.")]):
    """Check every checkpoint of a run (or the one file given); exit 1 if any is damaged."""
    from ..errors import CheckFailed, CheckpointError
    from ..run import atomic, checkpoint

    if target.is_file():
        try:
            _, meta = checkpoint.load(target)
        except CheckpointError as exc:
            _console().print(f"[red]BAD[/]   {_escape(str(target))}")
            raise CheckFailed(str(exc)) from None
        _console().print(f"[green]good[/]  {_escape(str(target))}  step {meta['step']}, "
                         f"{len(meta['arrays'])} arrays")
        return
    if not target.exists():
        raise CheckpointError(f"{target}: no such run directory or checkpoint")
    directory = target / "checkpoints" if (target / "checkpoints").is_dir() else target
    found = checkpoint.list_checkpoints(directory)
    if not found:
        raise CheckpointError(f"{target}: no checkpoints found")
    console = _console()
    bad = 0
    for path in found:
        try:
            _, meta = checkpoint.load(path)
            console.print(f"[green]good[/]  {path}  step {meta['step']}, {len(meta['arrays'])} arrays")
        except CheckpointError as exc:
            bad += 1
            console.print(f"[red]BAD[/]   {_escape(str(exc))}")
    pointer = checkpoint.read_pointer(directory)
    if pointer and not (directory / pointer).is_file():
        pointer += " (missing: a resume uses the newest good checkpoint)"
    console.print(f"latest -> {pointer or '(no pointer)'}; {len(found) - bad} good, {bad} damaged")
    leftovers = sorted(p.name for p in directory.iterdir() if p.name.startswith(atomic.TMP_PREFIX))
    if leftovers:
        console.print(f"{len(leftovers)} temporary file(s) left by an interrupted save, ignored and "
                      f"removed by the next run: {', '.join(leftovers)}")
    if bad:
        raise CheckFailed(f"{bad} of {len(found)} checkpoints in {directory} are damaged")


# ---------------------------------------------------------------- looking at runs: runs, plot, plan, ...

WeightsOption = Annotated[str, typer.Option(help="ema (default when the run has them) or raw.")]


SPLITS = ("test", "train", "validation")
WEIGHTS = ("ema", "raw")  # as train.WEIGHTS, which imports NumPy: checked here before any loading


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{option}: expected {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")


@app.command("runs")
@handles_errors
def runs_(
    directory: Annotated[
        Path | None, typer.Argument(help="Directory of run directories, or one run (default runs/; "
                                    "one named that does not exist is an error).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
):
    """A table of runs: status, step / total, last loss, last and best evaluation, wall time."""
    from ..run.runs_table import table

    # runs/ is made by the first run: before it, there are simply no runs yet
    default = directory is None
    directory = Path("runs") if default else directory
    rows = [] if default and not directory.exists() else table(directory)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    from .views import render_runs

    render_runs(_console(), rows)
    if not rows:
        _console(stderr=True).print(f"{_escape(str(directory))}: no runs yet"
                                    + ("; `gdtrain run CONFIG` makes runs/<run.name>" if default else ""))


@app.command()
@handles_errors
def plot(
    runs: Annotated[
        list[Path], typer.Argument(metavar="RUN...", help="Run directories; several are overlaid.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Image file, .png/.svg/.pdf (default curves.png, boundary.png "
                     "or confusion.png)."),
    ] = None,
    boundary: Annotated[
        bool, typer.Option("--boundary", help="Decision boundary (0.5 contour) over the training points.")
    ] = False,
    confusion: Annotated[bool, typer.Option("--confusion", help="Confusion matrix as a heat map.")] = False,
    split: Annotated[str, typer.Option(help="With --confusion: test, train or validation.")] = "test",
    weights: WeightsOption = "ema",
):
    """Learning curves (loss, evaluation metric, learning rate) of runs, or --boundary / --confusion."""
    from .plots import image_size, plot_boundary, plot_confusion, plot_curves

    if boundary and confusion:
        raise ConfigError("--boundary and --confusion make different pictures; give one")
    _check_choice("--split", split, SPLITS)
    _check_choice("--weights", weights, WEIGHTS)
    if boundary:
        path = plot_boundary(runs, out or Path("boundary.png"), weights)
    elif confusion:
        path = plot_confusion(runs, out or Path("confusion.png"), split, weights)
    else:
        path = plot_curves(runs, out or Path("curves.png"))
    size = image_size(path)
    print(f"wrote {path}" + (f" ({size[0]}x{size[1]} pixels)" if size else ""))


@app.command()
@handles_errors
def plan(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
):
    """What a run will do, without training: sizes, memory, learning rates, step parts, saves, resume."""
    from .plan import make_plan

    result = make_plan(_load_config(config, set_))
    if as_json:
        print(json.dumps(result, indent=1))
        return
    from .views import render_plan

    render_plan(_console(), result)


@app.command()
@handles_errors
def gradcheck(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
    batch: Annotated[
        int, typer.Option(min=1, help="Examples in the batch (the first of the training set).")
    ] = 8,
    entries: Annotated[int, typer.Option(min=1, help="Entries checked per parameter (all if fewer).")] = 20,
    tolerance: Annotated[float, typer.Option(help="Largest relative error that passes.")] = 1e-6,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
):
    """Check the gradient of model + loss + penalties against float64 central differences; exit 1 if off."""
    from ..errors import CheckFailed
    from .gradcheck import gradcheck as check_gradients

    if not tolerance > 0:
        raise ConfigError(f"--tolerance: expected a positive number, got {tolerance}")
    result = check_gradients(_load_config(config, set_), batch=batch, entries=entries, tolerance=tolerance)
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        from .views import render_gradcheck

        render_gradcheck(_console(), result)
    bad = [r for r in result["params"] if not r["ok"]]
    if bad:
        worst = ", ".join(f"{r['name']} {r['relative_error']:.2e}" for r in bad)
        raise CheckFailed(f"gradient check failed: relative error above {tolerance:g} for {worst}")


@app.command()
@handles_errors
def predict(
    target: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory or checkpoint file.")],
    inputs: Annotated[Path, typer.Argument(metavar="INPUT", help="Inputs: .npz (array x), .csv or IDX.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this .csv or .npz instead of stdout.")
    ] = None,
    weights: WeightsOption = "ema",
    checkpoint: CheckpointOption = None,
):
    """Predictions for new inputs: class and probabilities, or output values, one row each."""
    from .predict import predict as run_predict
    from .predict import write_predictions

    _check_choice("--weights", weights, WEIGHTS)
    result = run_predict(target, inputs, weights, _which_checkpoint(checkpoint))
    text = write_predictions(result, out)
    if text is not None:
        sys.stdout.write(text)
        return
    _console(stderr=True).print(
        f"wrote {_escape(str(out))}: {result['rows']} rows of {result['kind']} from step {result['step']} "
        f"({result['weights']} weights)")


@app.command()
@handles_errors
def export(
    target: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory or checkpoint file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .npz file to write.")],
    weights: WeightsOption = "ema",
    checkpoint: CheckpointOption = None,
):
    """Write a run's parameters as plain named arrays (.npz), EMA weights by default."""
    from .predict import export as run_export

    _check_choice("--weights", weights, WEIGHTS)
    result = run_export(target, out, weights, _which_checkpoint(checkpoint))
    arrays = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result["arrays"].items())
    _console().print(
        f"wrote {_escape(result['file'])}: {arrays} ({result['dtype']}, {result['weights']} weights of step "
        f"{result['step']}); train from it with model.init: {{from: {_escape(result['file'])}}}")


# ---------------------------------------------------------------- sweep


@app.command()
@handles_errors
def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(metavar="SWEEP.yaml", help="Sweep file: a base config and the keys to vary.")
    ],
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Trials at once: 1 (default) trains in this process, "
                     "K in K worker processes; with --backend ray: the cluster's CPUs."),
    ] = None,
    backend: Annotated[str, typer.Option(help="local (this process or a process pool) or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option(help="With --backend ray: join the Ray cluster at ADDR (host:port).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the trials and what is on disk; train and write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results (sweep.json) as JSON.")] = False,
):
    """Train a config over a grid (or random draws) of its keys, each setting over seeds; rank them.

    Each trial is a run directory, <run.dir>/<sweep>/<trial>/, that eval, plot, runs and
    predict read as any other. Running the sweep again runs only what is not finished;
    Ctrl-C makes every running trial save and stop.
    """
    from ..sweep.driver import check_backend_options, run_sweep
    from ..sweep.spec import load_sweep

    _check_choice("--backend", backend, ("local", "ray"))
    spec = load_sweep(sweep_file)
    check_backend_options(spec, backend, workers, address)
    if dry_run:
        _sweep_dry_run(spec, as_json)
        return
    result = _sweep_live(spec, lambda on_update, on_start: run_sweep(
        spec, workers, backend, address, on_update=on_update, on_start=on_start), as_json)
    if as_json:
        print(json.dumps(result, indent=1, default=str))
    else:
        from .sweep_view import render_summary

        render_summary(_console(), result)
    signum = result.get("interrupted")
    if signum:
        import signal

        from ..errors import Interrupted

        raise Interrupted(f"{signal.Signals(signum).name}: every running trial saved and stopped; run "
                          "the same command again to go on", signum)


def _sweep_dry_run(spec, as_json: bool) -> None:
    from ..run.runs_table import describe, is_run_dir

    rows = []
    for t in spec.trials:
        on_disk = "new"
        if is_run_dir(t.run_dir):
            row = describe(t.run_dir)
            on_disk = f"{row['status']} at step {row['step']}" + (
                f"/{row['total_steps']}" if row["total_steps"] else "")
        rows.append({"trial": t.name, "params": t.params, "seed": t.seed, "run_dir": str(t.run_dir),
                     "on_disk": on_disk, "config": t.config})
    if as_json:
        print(json.dumps({"name": spec.name, "directory": str(spec.directory), "trials": rows}, indent=1))
        return
    from .sweep_view import render_dry_run

    render_dry_run(_console(), spec, rows)


def _sweep_live(spec, start, as_json: bool) -> dict:
    """Run the sweep with the live table on a terminal (stderr), else one line per trial done."""
    import time

    from ..sweep.results import FINAL, resolve_metric
    from .sweep_view import live_table, trial_line

    err = _console(stderr=True)
    states: dict = {}
    warned: set[str] = set()
    t0 = time.perf_counter()

    def warn_new(state) -> None:
        for text in state.warnings:
            if (state.trial.name, text) not in warned:
                warned.add((state.trial.name, text))
                err.print(f"[yellow]gdtrain: warning:[/] {_escape(state.trial.name)}: {_escape(text)}",
                          markup=True)

    if err.is_terminal:
        import threading

        from rich.live import Live

        # Redrawn by our own thread, only when something changed and at most twice a second:
        # a frame takes ~8 ms of the interpreter that the trial in this process needs.
        changes = {"made": 0, "drawn": -1}
        done = threading.Event()
        live = Live(live_table(spec, states, 0.0), console=err, auto_refresh=False, transient=False)

        def redraw() -> None:
            if changes["drawn"] != changes["made"]:
                changes["drawn"] = changes["made"]
                live.update(live_table(spec, states, time.perf_counter() - t0), refresh=True)

        def redrawing() -> None:
            while not done.wait(0.5):
                redraw()

        def on_update(state) -> None:
            states[state.trial.name] = state
            changes["made"] += 1
            warn_new(state)

        with live:
            painter = threading.Thread(target=redrawing, name="gdtrain-sweep-table", daemon=True)
            painter.start()
            try:
                return start(on_update, lambda driver: states.update(driver.states))
            finally:
                done.set()
                painter.join()
                changes["made"] += 1
                redraw()

    printed: dict[str, tuple] = {}

    def on_update_lines(state) -> None:
        states[state.trial.name] = state
        warn_new(state)
        seen = (state.status, state.step)
        if state.status in (*FINAL, "interrupted") and printed.get(state.trial.name) != seen:
            printed[state.trial.name] = seen
            metric, _ = resolve_metric(spec.metric, list(states.values()))
            err.print(_escape(trial_line(state, metric)))

    return start(on_update_lines, lambda driver: None)


@app.command()
@handles_errors
def components(
    kind: Annotated[
        str | None, typer.Argument(help="Only this kind: section, dataset, model, loss, optimizer, "
                                      "schedule or initializer; or sweep, the keys of a sweep file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print docs/config-reference.md (all kinds).")
    ] = False,
    summary: Annotated[
        bool, typer.Option("--summary", help="Print README's one-table config reference.")
    ] = False,
    json_schema: Annotated[
        bool, typer.Option("--json-schema", help="Print the JSON Schema of a whole config "
                                                 "(docs/gdtrain.schema.json, all kinds).")
    ] = False,
):
    """Every model, loss, optimizer, schedule, dataset, initializer and section, with its options.

    --json-schema prints the JSON Schema (draft 2020-12) of a whole config,
    generated from the same tables; docs/gdtrain.schema.json is a copy. Editors
    with the YAML language server (VS Code's YAML extension, Neovim, Helix, ...)
    complete and check a config that starts with the line (path relative to it)
    # yaml-language-server: $schema=../docs/gdtrain.schema.json
    """
    if kind == "sweep":  # docs/sweep-reference.md, from the sweep file's registries
        from ..sweep import spec

        if markdown:
            sys.stdout.write(spec.render_markdown())
        elif summary:
            raise ConfigError("--summary: README's table covers configs; for sweep files use --markdown")
        elif as_json:
            print(json.dumps(spec.describe(), indent=1))
        else:
            from .views import render_components

            data = spec.describe()
            kinds = {"sweep file": data["sections"], "parameter kind": data["parameters"]}
            render_components(_console(), kinds, list(kinds))
        return
    from ..config.components import KINDS, describe, kind_named, render_markdown, render_summary

    kinds = [kind_named(kind)] if kind else list(KINDS)
    if json_schema:
        from ..config.schema import render_schema

        sys.stdout.write(render_schema())
        return
    data = describe()
    if markdown:
        sys.stdout.write(render_markdown(data))
    elif summary:
        sys.stdout.write(render_summary(data))
    elif as_json:
        print(json.dumps({k: data[k] for k in kinds}, indent=1))
    else:
        from .views import render_components

        render_components(_console(), data, kinds)


def main() -> None:
    from .terminal import no_color, protect_streams

    if no_color():
        # typer's help and usage errors use their own console: no styles there either (rich's
        # NO_COLOR keeps bold; TERM=dumb, the other way, would also pin the width to 80)
        import typer.rich_utils

        typer.rich_utils.COLOR_SYSTEM = None
    protect_streams()  # ASCII stand-ins, not UnicodeEncodeError, on streams that lack a glyph
    app()
