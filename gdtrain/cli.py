"""The command line. The only module that prints; heavy imports happen inside commands
so that `gdtrain --help` stays fast."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import GdtrainError

app = typer.Typer(
    name="gdtrain",
    help="Gradient descent from YAML configs, with NumPy: train, resume, evaluate.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    err = _console(stderr=True)
    err.print(f"[bold red]gdtrain: error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def handles_errors(command):
    """Turn gdtrain's exceptions into one line on stderr and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except GdtrainError as exc:
            _fail(_escape(str(exc)), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            raise typer.Exit(1) from None
        except MemoryError:
            _fail("out of memory", 2)

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
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a config key, e.g. optimizer.learning_rate=0.1."),
]


def _load_config(path: Path, overrides: list[str] | None) -> dict:
    from .config import load

    return load(path, overrides or [])


# ---------------------------------------------------------------- run


@app.command()
@handles_errors
def run(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="Start over, deleting the run's checkpoints.")] = False,
    allow_config_change: Annotated[
        bool, typer.Option("--allow-config-change", help="Resume even if optimizer/schedule/l2/ema changed.")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="A few steps on a slice: save, resume, evaluate; exit 1 on failure.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or log lines.")] = False,
):
    """Train the model a config describes; resume from its newest checkpoint if it has one."""
    cfg = _load_config(config, set_)
    if smoke:
        from .runner import smoke as smoke_check

        print(smoke_check(cfg))
        return
    from .report import ConsoleReporter
    from .runner import RunOptions, train

    reporter = ConsoleReporter(quiet=quiet)
    try:
        summary = train(cfg, reporter, RunOptions(restart=restart, allow_config_change=allow_config_change))
    finally:
        reporter.close()
    if quiet:
        from .evaluate import headline

        name, value = headline(summary["eval"])
        print(f"{summary['run_dir']}: step {summary['steps']}, {summary['eval']['split']} {name} {value:.4f}")


# ---------------------------------------------------------------- eval


@app.command("eval")
@handles_errors
def eval_(
    target: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    split: Annotated[str, typer.Option(help="test, train or validation.")] = "test",
    weights: Annotated[str, typer.Option(help="ema (default when the run has them) or raw.")] = "ema",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
):
    """Score a run's newest checkpoint (or a given checkpoint) on a split."""
    from .errors import ConfigError
    from .inspect_run import evaluate_checkpoint

    if split not in ("test", "train", "validation"):
        raise ConfigError(f"--split: expected test, train or validation, got {split!r}")
    if weights not in ("ema", "raw"):
        raise ConfigError(f"--weights: expected ema or raw, got {weights!r}")
    result = evaluate_checkpoint(target, split, weights)
    if as_json:
        print(json.dumps(result, indent=1))
        return
    from .report import print_evaluation

    print_evaluation(_console(), result)


# ---------------------------------------------------------------- check, verify


@app.command()
@handles_errors
def check(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    set_: SetOption = None,
):
    """Validate a config without training and print it resolved, every default filled in."""
    from .config import dump_yaml

    cfg = _load_config(config, set_)
    sys.stdout.write(dump_yaml(cfg))
    _console(stderr=True).print(f"{config}: ok")


@app.command()
@handles_errors
def verify(target: Annotated[Path, typer.Argument(help="Run directory.")]):
    """Check every checkpoint of a run; exit 1 if any is damaged."""
    from . import checkpoint
    from .errors import CheckFailed, CheckpointError

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
    console.print(f"latest -> {pointer or '(no pointer)'}; {len(found) - bad} good, {bad} damaged")
    if bad:
        raise CheckFailed(f"{bad} of {len(found)} checkpoints in {directory} are damaged")


def main() -> None:
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")
    app()
