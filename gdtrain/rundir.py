"""The run directory on disk: lock, resolved config, metrics log and status file.

runs/<name>/
  config.yaml      the resolved config of the latest start
  metrics.jsonl    one JSON record per log line or evaluation
  status.json      what the run is doing (running/finished/interrupted/diverged/failed)
  checkpoints/     ckpt-XXXXXXXX.npz and the `latest` pointer
  .lock            held (flock) by the one process writing here
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

from .errors import RunDirError


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.metrics = self.path / "metrics.jsonl"
        self.status_file = self.path / "status.json"
        self.config_file = self.path / "config.yaml"
        self._lock_fd: int | None = None
        self._metrics_fh = None

    # ------------------------------------------------------------ one writer

    def ensure_writable(self) -> None:
        """Create the directories and prove we can write there, before any training."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".tmp-probe.{os.getpid()}"
            with open(probe, "wb") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"run directory {self.path} is not writable: {exc.strerror or exc}") from None

    def lock(self) -> None:
        """Take the run's lock; a lock left by a killed process is free again (flock)."""
        path = self.path / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run directory {self.path} is in use by another gdtrain process (pid {holder}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------ records

    def log(self, record: dict) -> None:
        if self._metrics_fh is None:
            self._metrics_fh = open(self.metrics, "a", encoding="utf-8")
        self._metrics_fh.write(json.dumps(record) + "\n")
        self._metrics_fh.flush()

    def truncate_metrics(self, step: int) -> None:
        """Drop records past `step`: a resumed run logs those steps again."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue  # a line torn by a kill
        write_text_atomic(self.metrics, "".join(k + "\n" for k in kept))

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def set_status(self, status: str, **fields) -> None:
        record = {"status": status, "pid": os.getpid(), "updated": time.time(), **fields}
        try:
            write_text_atomic(self.status_file, json.dumps(record, indent=1) + "\n")
        except OSError:
            pass  # status is informative; never fail a run over it

    def read_status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
