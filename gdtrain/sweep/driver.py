"""Running a sweep: what is on disk already, what to dispatch, Ctrl-C, and halving rungs.

The run directories are the only state. Before dispatching a trial the driver reads it:
a trial whose config.yaml is this trial's config and whose status says finished (or
diverged) is not run again; one stopped by an earlier halving rung provides its result
at that budget from its metrics.jsonl. Everything else is dispatched and resumes from
its newest checkpoint. A trial whose directory another live process has locked is
"running elsewhere": it is tried again every few seconds until that process is done
(then it is usually finished, and costs nothing).

SIGINT/SIGTERM (Ctrl-C) stop the dispatching; every running trial gets the signal,
saves and stops; the results so far are written; the sweep reports the signal.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait

from ..errors import ConfigError
from . import results as results_mod
from .halving import survivors
from .results import TrialState
from .trials import Trial
from .worker import request_interrupt

POLL = 0.25  # seconds between looks at running trials
ELSEWHERE_RETRY = 2.0  # seconds before a trial running elsewhere is tried again
_BRIEF = ("split", "weights", "loss", "accuracy", "mse", "examples")


class _Stop:
    """The sweep's own SIGINT/SIGTERM handler (main thread only): a flag, nothing else."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            # an in-process trial loading its data (its run's handler not yet installed)
            # stops before its first step
            request_interrupt(signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def on_disk(trial: Trial, budget: int | None) -> dict | None:
    """The trial's result at `budget` (None: at its end) if its run directory has it."""
    from ..config.yaml_file import dump_yaml
    from ..run.rundir import RunDir

    rd = RunDir(trial.run_dir)
    try:
        saved = rd.config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if saved != dump_yaml(trial.config):
        return None  # another config (a changed base, say): it runs, and resumes if it may
    status = rd.read_status()
    state, step, total = status.get("status"), status.get("step"), status.get("total_steps")
    if not isinstance(step, int) or not isinstance(total, int):
        return None
    found = {"status": state, "step": step, "total_steps": total, "eval": status.get("eval"),
             "error": status.get("error"), "stopped_by": status.get("stopped_by")}
    if state == "diverged" and (budget is None or step <= budget):
        return found  # it would diverge again, at the same step
    if state not in ("finished", "stopped"):
        return None
    target = total if budget is None else min(budget, total)
    if step == target:
        return {**found, "rung_eval": found["eval"]}
    if step > target:  # a later rung trained it further: its evaluation at the budget is logged
        evals = [r for r in rd.read_metrics() if r.get("event") == "eval" and r.get("step") == target]
        if evals:
            return {**found, "rung_eval": {k: evals[-1][k] for k in _BRIEF if k in evals[-1]}}
    return None


def _tail_step(run_dir) -> int | None:
    """The step of the last record in a run's metrics.jsonl (its last 2 KiB only)."""
    import json

    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 2048))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


class Driver:
    """`make_backend()` is called when the first trial needs dispatching: a sweep whose
    trials are all done starts no worker process and no Ray instance."""

    def __init__(self, spec, make_backend, on_update=None):
        self.spec = spec
        self._make_backend = make_backend
        self._backend = None
        self.on_update = on_update or (lambda state: None)
        self.states = {t.name: TrialState(t) for t in spec.trials}
        self.stop = _Stop()
        self._interrupt_sent = False
        self._last_poll = 0.0
        self._last_progress = 0.0
        self.backend_seconds: float | None = None

    @property
    def backend(self):
        if self._backend is None:
            t0 = time.perf_counter()
            self._backend = self._make_backend()
            self.backend_seconds = time.perf_counter() - t0  # a pool's spawn, Ray's start-up
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    # ------------------------------------------------------------ state changes

    def _changed(self, state: TrialState) -> None:
        self.on_update(state)

    def progress(self, name: str, step: int) -> None:
        """From an in-process trial, after each of its steps; passed on 5 times a second."""
        state = self.states[name]
        state.step = step
        now = time.monotonic()
        if now - self._last_progress >= 0.2:
            self._last_progress = now
            self._changed(state)

    def _record(self, state: TrialState, found: dict, earlier: bool) -> dict | None:
        if found["status"] == "pending":  # cancelled before it started
            state.status = "pending"
            self._changed(state)
            return None
        state.status = found["status"]
        state.step, state.total_steps = found.get("step"), found.get("total_steps")
        state.eval = found.get("eval")
        state.error = found.get("error")
        state.stopped_by = found.get("stopped_by") if state.status == "stopped" else None
        state.earlier = earlier
        if not earlier:
            state.seconds = found.get("seconds")
            state.node = found.get("node", state.node)
            state.warnings = list(found.get("warnings") or [])
        self._changed(state)
        rung = found.get("rung_eval")
        if rung is None and found["status"] in ("finished", "stopped"):
            rung = found.get("eval")
        return rung

    def _result(self, future: Future) -> dict:
        if future.cancelled():
            return {"status": "pending", "error": None}
        exc = future.exception()
        if exc is not None:
            text = str(exc).strip().splitlines()
            first = text[0] if text else ""
            return {"status": "failed", "error": f"{type(exc).__name__}: {first}".rstrip(": ")}
        return future.result()

    def _poll(self, running: dict) -> None:
        """The step each running trial has logged (backends without an in-process callback)."""
        now = time.monotonic()
        if now - self._last_poll < 2 * POLL:
            return
        self._last_poll = now
        for trial in running.values():
            state = self.states[trial.name]
            step = _tail_step(trial.run_dir)
            if step is not None and step != state.step:
                state.step = step
                self._changed(state)

    # ------------------------------------------------------------ one pass over trials

    def task(self, trial: Trial, budget: int | None) -> dict:
        stopped_by = "sweep" if budget is None else f"sweep: halving budget {budget}"
        return {"name": trial.name, "config": trial.config, "stop_at": budget, "stopped_by": stopped_by}

    def run(self, trials: list[Trial], budget: int | None) -> dict[str, dict | None]:
        """Bring each trial to `budget` (None: its end); {trial name: evaluation at the budget}."""
        at_budget: dict[str, dict | None] = {}
        todo: collections.deque[Trial] = collections.deque()
        for t in trials:
            found = on_disk(t, budget)
            if found is not None:
                at_budget[t.name] = self._record(self.states[t.name], found, earlier=True)
            else:
                todo.append(t)
        running: dict[Future, Trial] = {}
        later: list[tuple[float, Trial]] = []
        while todo or running or later:
            if self.stop.signum is not None:
                if not self._interrupt_sent and self._backend is not None:
                    self._interrupt_sent = True
                    self.backend.interrupt(self.stop.signum)
                todo.clear()
                for _, t in later:
                    self.states[t.name].status = "pending"
                    self._changed(self.states[t.name])
                later.clear()
                if not running:
                    break
            while todo and len(running) < self.backend.capacity and self.stop.signum is None:
                t = todo.popleft()
                state = self.states[t.name]
                state.status, state.earlier, state.error = "running", False, None
                self._changed(state)
                running[self.backend.submit(self.task(t, budget))] = t
            if running:
                done, _ = wait(list(running), timeout=POLL, return_when=FIRST_COMPLETED)
            else:
                time.sleep(POLL)
                done = set()
            for future in done:
                t = running.pop(future)
                result = self._result(future)
                state = self.states[t.name]
                if result["status"] == "elsewhere":
                    state.status, state.error = "elsewhere", result["error"]
                    self._changed(state)
                    later.append((time.monotonic() + ELSEWHERE_RETRY, t))
                    continue
                if result["status"] == "interrupted" and self.stop.signum is None:
                    # a trial got the signal itself (in-process, or a worker signalled alone)
                    self.stop.signum = result.get("signal") or signal.SIGINT
                at_budget[t.name] = self._record(state, result, earlier=False)
            now = time.monotonic()
            todo.extend(t for due, t in later if due <= now)
            later = [(due, t) for due, t in later if due > now]
            if running and not getattr(self.backend, "reports_steps", False):
                self._poll(running)
        return at_budget

    # ------------------------------------------------------------ the whole sweep

    def sweep(self) -> None:
        for state in self.states.values():
            self._changed(state)
        trials = self.spec.trials
        if not self.spec.early_stop:
            self.run(trials, None)
            return
        self.halving(trials)

    def halving(self, trials: list[Trial]) -> None:
        early = self.spec.early_stop
        rate, budget = early["rate"], early["min_steps"]
        order: list[str] = []
        for t in trials:
            if t.setting not in order:
                order.append(t.setting)
        alive = order
        while True:
            last = len(alive) == 1
            chosen = [t for t in trials if t.setting in alive]
            at_budget = self.run(chosen, None if last else budget)
            if last or self.stop.signum is not None:
                return
            if all(self.states[t.name].status == "finished" for t in chosen):
                return  # the budget reached every trial's end
            metric, goal = results_mod.resolve_metric(
                self.spec.metric, [self.states[t.name] for t in chosen])
            values = {s: [results_mod.value(at_budget.get(t.name), metric) for t in chosen if t.setting == s]
                      for s in alive}
            alive = survivors(values, rate, goal)
            budget *= rate


def check_backend_options(spec, backend: str, workers: int | None, address: str | None) -> None:
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend: expected local or ray, got {backend!r}")
    if address is not None and backend != "ray":
        raise ConfigError("--address goes with --backend ray")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: expected 1 or more, got {workers}")
    if backend == "ray":
        import importlib.util

        from ..errors import MissingExtra
        from .ray_backend import INSTALL_HINT

        if importlib.util.find_spec("ray") is None:  # before anything is written
            raise MissingExtra(INSTALL_HINT)
    if address is not None and not os.path.isabs(spec.run_dir_given):
        raise ConfigError(
            f"run.dir: {spec.run_dir_given!r} is relative; the nodes of a cluster (--address) each "
            "have their own working directory, so the run directories must be on storage every "
            "node sees, at an absolute path: set run.dir in the base config or with "
            "parameters: {run.dir: {value: /shared/runs}}")


def run_sweep(spec, workers: int | None = None, backend: str = "local", address: str | None = None,
              on_update=None, on_start=None) -> dict:
    """Run every trial of a loaded sweep that is not done; return (and write) sweep.json.

    The result's "interrupted" is the signal number that stopped the sweep, or None.
    `on_start(driver)` is called once the backend is up, before any trial runs.
    """
    from .backends import make_backend

    check_backend_options(spec, backend, workers, address)
    if workers is not None and backend == "local":
        workers = min(workers, len(spec.trials))  # no process for no trial
    driver = Driver(spec, lambda: make_backend(backend, workers, address, progress=driver.progress),
                    on_update)
    t0 = time.perf_counter()
    try:
        driver.stop.install()
        results_mod.write(results_mod.summary(spec, list(driver.states.values())), spec.directory)
        if on_start is not None:
            on_start(driver)
        driver.sweep()
    finally:
        try:
            driver.close()
        finally:
            driver.stop.restore()
    used = driver._backend
    result = results_mod.summary(spec, list(driver.states.values()), {
        "backend": used.name if used else None, "workers": used.capacity if used else None,
        "seconds": time.perf_counter() - t0, "backend_seconds": driver.backend_seconds,
        "interrupted": driver.stop.signum})
    result["files"] = [str(p) for p in results_mod.write(result, spec.directory)]
    return result
