"""One trial, in whichever process a backend runs it: the driver itself, a pool worker or
a Ray task. It trains with the same code as `gdtrain run` (api.train) and never raises:
whatever happens becomes the result's status, with its message.

A task is a plain dict (picklable, JSON-able): {"name", "config", "stop_at", "stopped_by"}.
A result: {"name", "status", "step", "total_steps", "eval", "error", "warnings", "seconds",
"pid"}, status one of finished, stopped, interrupted, diverged, failed, elsewhere (the run
directory is locked by a live process: running elsewhere).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback

from ..run.hooks import Reporter

# A SIGINT/SIGTERM that arrived while no run had its handlers installed (between trials,
# or while a trial loads its data): the trial then stops before its first step, or at it.
_pending: dict[str, int | None] = {"signum": None}
_datasets: dict[str, object] = {}  # loaded datasets of this process, by data config


def request_interrupt(signum: int) -> None:
    if _pending["signum"] is None:
        _pending["signum"] = signum


def install_interrupt_flag() -> None:
    """In a pool worker: a signal between trials only raises the flag (no traceback, and
    the worker stays up to report)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: request_interrupt(signum))


def reset_interrupt() -> None:
    _pending["signum"] = None


def forget_datasets() -> None:
    _datasets.clear()


class _Trial(Reporter):
    """Keeps the run's warnings; hands a pending signal to the run's own handler."""

    def __init__(self, progress):
        self.progress = progress
        self.warnings: list[str] = []

    def start(self, info: dict) -> None:
        if _pending["signum"] is not None:  # the run has written nothing yet: stop here
            from ..errors import Interrupted

            raise Interrupted("interrupted before its first step", _pending["signum"])

    def step(self, result) -> None:
        signum = _pending["signum"]
        if signum is not None and threading.current_thread() is threading.main_thread():
            # the run's handler is installed by now: it saves after this step and stops
            _pending["signum"] = None
            os.kill(os.getpid(), signum)
        if self.progress is not None:
            self.progress(result.step)

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def _dataset(config: dict):
    from ..config.identity import canonical
    from ..data import load_dataset

    key = canonical({"data": config["data"], "dtype": config["run"]["dtype"]})
    if key not in _datasets:
        _datasets[key] = load_dataset(config["data"], config["run"]["dtype"])
    return _datasets[key]


def _status_step(config: dict) -> tuple[int | None, int | None]:
    from ..config.paths import run_dir
    from ..run.rundir import RunDir

    status = RunDir(run_dir(config)).read_status()
    return status.get("step"), status.get("total_steps")


def run_trial(task: dict, progress=None) -> dict:
    """Train one trial to its end or to task["stop_at"]; the result, never an exception.

    `progress(step)` is called after each step (in-process runs only)."""
    from ..errors import DivergedError, GdtrainError, Interrupted, RunDirBusy
    from ..run.loop import RunOptions, train

    t0 = time.perf_counter()
    config = task["config"]
    out = {"name": task["name"], "status": None, "step": None, "total_steps": None, "eval": None,
           "error": None, "warnings": [], "seconds": 0.0, "pid": os.getpid()}
    reporter = _Trial(progress)
    try:
        if _pending["signum"] is not None:
            raise Interrupted("interrupted before it started", _pending["signum"])
        # the run layer itself, not api.train: the sweep sits below the Python API, which
        # imports it; signal handlers only where Python can install them (the main thread)
        opts = RunOptions(handle_signals=threading.current_thread() is threading.main_thread(),
                          stop_at=task.get("stop_at"), stopped_by=task.get("stopped_by", "sweep"))
        summary = train(config, reporter, opts, _dataset(config))
        keys = ("split", "weights", "loss", "accuracy", "mse", "examples")
        out.update(status=summary["status"], step=summary["steps"], total_steps=summary["total_steps"],
                   eval={k: summary["eval"][k] for k in keys if k in summary["eval"]})
    except RunDirBusy as exc:
        out.update(status="elsewhere", error=str(exc))
    except Interrupted as exc:
        out.update(status="interrupted", error=str(exc), signal=exc.exit_code - 128)
    except KeyboardInterrupt:  # a Ray cancel while no run handler was installed
        out.update(status="interrupted", error="interrupted")
    except DivergedError as exc:
        out.update(status="diverged", error=str(exc))
    except GdtrainError as exc:
        out.update(status="failed", error=str(exc))
    except MemoryError as exc:
        out.update(status="failed", error=f"out of memory: {exc}")
    except Exception as exc:  # a bug: recorded with its traceback, the sweep goes on
        out.update(status="failed", error=f"internal error: {type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())
    if out["step"] is None:
        out["step"], out["total_steps"] = _status_step(config)
    out["warnings"] = reporter.warnings
    out["seconds"] = time.perf_counter() - t0
    return out
