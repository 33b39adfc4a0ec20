"""Where trials run, behind one shape: `submit(task) -> concurrent.futures.Future` of the
worker's result, `capacity` (trials worth running at once), `interrupt(signum)` (every
running trial saves and stops), `close()`.

    InProcess  one trial at a time in this process (--workers 1): no start-up cost, the
               data loaded once for all trials
    LocalPool  K spawned worker processes (--workers K), each pinned to cores / K BLAS
               threads before NumPy is imported; no server, no dependency
    RayBackend (ray_backend.py) Ray tasks, on this machine or a cluster

A pool worker that dies (killed, out of memory) takes no other trial with it: its trial
is run again on a new worker, as Ray retries a task whose node was lost; since a trial
resumes from its checkpoints, the retry ends as an uninterrupted run would.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future


class TrialLost(Exception):
    """The process running a trial died without reporting, after every retry."""


def cancel(future: Future) -> None:
    """Cancel a future that has not started, waking whoever waits on it (a bare cancel()
    leaves concurrent.futures.wait() waiting)."""
    if future.cancel():
        future.set_running_or_notify_cancel()


class InProcess:
    capacity = 1
    name = "in-process"
    reports_steps = True  # through `progress`; the others' steps are read from the run directories

    def __init__(self, progress=None):
        self.progress = progress  # progress(trial name, step), called from the loop

    def submit(self, task: dict) -> Future:
        from .worker import run_trial

        future: Future = Future()
        report = None if self.progress is None else (lambda step: self.progress(task["name"], step))
        future.set_result(run_trial(task, report))
        return future

    def interrupt(self, signum: int) -> None:
        from .worker import request_interrupt

        request_interrupt(signum)  # only seen between trials: the run in progress has its own handler

    def close(self) -> None:
        from .worker import forget_datasets, reset_interrupt

        forget_datasets()
        reset_interrupt()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _worker_main(conn, threads: int) -> None:
    """A pool worker: BLAS threads pinned before NumPy loads, then one trial per message."""
    for name in BLAS_THREAD_VARIABLES:
        os.environ[name] = str(threads)
    from .worker import install_interrupt_flag, run_trial

    install_interrupt_flag()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if task is None:
            return
        result = run_trial(task)
        try:
            conn.send(result)
        except (BrokenPipeError, EOFError, OSError):
            return  # the driver died meanwhile: the run directory holds the result anyway


class _Worker:
    def __init__(self, ctx, threads: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads), daemon=True,
                                   name="gdtrain-sweep-worker")
        self.process.start()
        child.close()
        self.job: tuple[dict, Future, int] | None = None  # (task, future, attempts)


class LocalPool:
    name = "local pool"

    def __init__(self, workers: int, threads: int | None = None, max_retries: int = 2):
        self.capacity = workers
        self.threads = threads or max(1, cores() // workers)
        self.max_retries = max_retries
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._closed = False
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._workers = [_Worker(self._ctx, self.threads) for _ in range(workers)]
        self._thread = threading.Thread(target=self._dispatch, name="gdtrain-sweep-pool", daemon=True)
        self._thread.start()

    def submit(self, task: dict) -> Future:
        future: Future = Future()
        with self._lock:
            self._queue.append((task, future, 0))
        self._wake()
        return future

    def interrupt(self, signum: int) -> None:
        """Queued trials are cancelled; each running one gets the signal: it saves and stops."""
        with self._lock:
            queued, self._queue = list(self._queue), collections.deque()
            busy = [w for w in self._workers if w.job is not None]
        self._drop(queued, "interrupted before its retry")
        for w in busy:
            try:
                os.kill(w.process.pid, signum)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            queued, self._queue = list(self._queue), collections.deque()
        self._drop(queued, "the sweep stopped before its retry")
        self._wake()
        self._thread.join(timeout=30)
        for w in list(self._workers):
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in list(self._workers):
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()

    @staticmethod
    def _drop(queued: list, why: str) -> None:
        for _, future, attempts in queued:
            if attempts == 0:
                cancel(future)
            else:  # a retry: its future is running already
                future.set_exception(TrialLost(why))

    # ------------------------------------------------------------ the dispatching thread

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._closed and not any(w.job for w in self._workers):
                    return
                for w in self._workers:
                    while w.job is None and self._queue:
                        task, future, attempts = self._queue.popleft()
                        if attempts == 0 and not future.set_running_or_notify_cancel():
                            continue  # cancelled while queued
                        w.job = (task, future, attempts)
                        w.conn.send(task)
                watched = {w.conn: w for w in self._workers if w.job is not None}
                sentinels = {w.process.sentinel: w for w in self._workers}
            ready = multiprocessing.connection.wait([self._wake_r, *watched, *sentinels], timeout=1.0)
            for item in ready:
                if item is self._wake_r:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                elif item in watched:
                    self._finished(watched[item])
            for item in ready:  # after the results: a worker may report, then exit
                if item in sentinels:
                    self._died(sentinels[item])

    def _finished(self, w: _Worker) -> None:
        try:
            result = w.conn.recv()
        except (EOFError, OSError):
            return  # it died: its sentinel says so
        with self._lock:
            _, future, _ = w.job
            w.job = None
        future.set_result(result)

    def _died(self, w: _Worker) -> None:
        if w.job is not None and w.conn.poll():
            self._finished(w)  # it reported just before it exited
        with self._lock:
            if w not in self._workers:
                return
            job, w.job = w.job, None
            self._workers.remove(w)
            if not self._closed:
                self._workers.append(_Worker(self._ctx, self.threads))
            retry = job is not None and job[2] < self.max_retries and not self._closed
            if retry:
                self._queue.appendleft((job[0], job[1], job[2] + 1))
        if job is not None and not retry:
            code = w.process.exitcode
            why = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            job[1].set_exception(TrialLost(f"its worker process died ({why}), {job[2] + 1} times"))


def make_backend(kind: str, workers: int | None, address: str | None = None, progress=None):
    """The backend for `gdtrain sweep --backend KIND --workers K [--address ADDR]`."""
    if kind == "ray":
        from .ray_backend import RayBackend

        return RayBackend(address=address, workers=workers)
    if workers is None or workers == 1:
        return InProcess(progress)
    return LocalPool(workers)
