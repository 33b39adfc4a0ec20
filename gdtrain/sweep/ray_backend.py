"""Trials as Ray tasks (`gdtrain sweep --backend ray`, the optional extra gdtrain[ray]).

Without --address a Ray instance is started on this machine (6-15 s on this busy 2-core
machine, 678 MiB in 9 processes) and stopped at the end; with --address the sweep joins a running cluster.
Each trial is one task of `num_cpus` CPUs (its BLAS threads pinned to as many), retried
up to MAX_RETRIES times when its worker or node is lost: the retry resumes the trial
from its newest checkpoint, so it ends as an uninterrupted run would. That needs the run
directories on storage every node sees, at the same absolute path.

Quiet by default: no usage statistics, no dashboard, no worker output on the driver,
only Ray's errors and notices (a task retried after its node was lost), on stderr. A
local instance advertises 127.0.0.1 (its servers listen on every interface, as Ray's
always do) and requires a token generated for it (RAY_AUTH_MODE=token), kept in this
process's environment rather than in ~/.ray.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from concurrent.futures import Future

from ..errors import ConfigError, MissingExtra
from .backends import cores

MAX_RETRIES = 3
INSTALL_HINT = "--backend ray needs ray, an optional extra: pip install 'gdtrain[ray]' (or pip install ray)"


def ray_trial(task: dict, num_cpus: int) -> dict:
    """One trial inside a Ray worker, its BLAS threads pinned to the task's CPUs."""
    import ray

    from ..core import compute
    from .worker import run_trial

    with compute.threads(num_cpus):
        result = run_trial(task)
    result["node"] = ray.util.get_node_ip_address()
    return result


class RayBackend:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None,
                 max_retries: int = MAX_RETRIES):
        self._set: dict[str, str | None] = {}
        self._environment(local=address is None)
        try:
            import ray
        except ImportError:
            self._restore()
            raise MissingExtra(INSTALL_HINT) from None
        self._ray = ray
        # Ray prints the raylet's notices ("Task ray_trial failed ... will be retried") on the
        # driver's stdout, whatever log_to_driver says; a sweep's stdout is its results (--json)
        self._stdout = sys.stdout
        sys.stdout = sys.stderr
        options = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            if address is None:  # "local": a new instance, never one RAY_ADDRESS or `ray start` left
                ray.init(address="local", num_cpus=cores(), **options)
            else:
                ray.init(address=address, **options)
        except Exception as exc:
            sys.stdout = self._stdout
            self._restore()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise ConfigError(f"--backend ray: could not {where}: {first}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        self.capacity = workers or cpus
        self.num_cpus = max(1, cpus // self.capacity)
        self._remote = ray.remote(num_cpus=self.num_cpus, max_retries=max_retries,
                                  retry_exceptions=False)(ray_trial)
        self._running: dict[Future, object] = {}

    def _environment(self, local: bool) -> None:
        wanted = {"RAY_USAGE_STATS_ENABLED": "0"}
        if local:
            # a one-machine instance: Ray then uses 127.0.0.1 instead of this host's address
            wanted["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            # (Ray reads these when it is imported: a process that imported it already keeps
            # Ray's own choice, a token in ~/.ray)
            if "RAY_AUTH_MODE" not in os.environ and "ray" not in sys.modules:
                wanted["RAY_AUTH_MODE"] = "token"
                if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
                    wanted["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        for key, val in wanted.items():
            if key not in os.environ:
                self._set[key] = None
                os.environ[key] = val

    def _restore(self) -> None:
        for key in self._set:
            os.environ.pop(key, None)
        self._set.clear()

    def submit(self, task: dict) -> Future:
        ref = self._remote.remote(task, self.num_cpus)
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self._running[future] = ref

        def done(ray_future: Future) -> None:
            self._running.pop(future, None)
            exc = ray_future.exception()
            if exc is None:
                future.set_result(ray_future.result())
            elif isinstance(exc, self._ray.exceptions.TaskCancelledError):
                future.set_result({"status": "pending", "error": None})  # cancelled before it started
            else:
                future.set_exception(exc)

        ref.future().add_done_callback(done)
        return future

    def interrupt(self, signum: int) -> None:
        """Every task gets a KeyboardInterrupt: a running trial saves and stops, a queued one
        never starts."""
        for ref in list(self._running.values()):
            try:
                self._ray.cancel(ref, force=False)
            except Exception:  # already finished, or its node is gone
                pass

    def close(self) -> None:
        try:
            self._ray.shutdown()
        finally:
            sys.stdout = self._stdout
            self._restore()


__all__ = ["RayBackend", "ray_trial"]
