"""The run directory on disk: lock, resolved config, metrics log and status file.

runs/<name>/
  config.yaml      the resolved config of the latest start
  metrics.jsonl    one JSON record per log line or evaluation
  status.json      what the run is doing (running/finished/stopped/interrupted/diverged/failed)
  checkpoints/     ckpt-XXXXXXXX.npz, the `latest` pointer and (train.keep_best) `best`
  .lock            held (flock) by the one process writing here
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from pathlib import Path

from ..errors import RunDirBusy, RunDirError
from . import checkpoint
from .atomic import TMP_PREFIX, clean_temporaries, describe_os_error, write_atomic

LOCK_ATTEMPTS = 10  # a lock file removed under us this often is being deleted on purpose


@contextlib.contextmanager
def _io(what: str, path: Path):
    """Turn an OSError (full disk, read-only file system, …) into a one-line RunDirError."""
    try:
        yield
    except OSError as exc:
        raise RunDirError(f"could not {what} {path}: {describe_os_error(exc)}") from None


def _read_pid(fd: int) -> int | None:
    """The pid on the first line of the lock file, or None if it holds none yet."""
    first = os.pread(fd, 64, 0).split(b"\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _is_file_of(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is the file `path` names now (not removed or replaced)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.metrics = self.path / "metrics.jsonl"
        self.status_file = self.path / "status.json"
        self.config_file = self.path / "config.yaml"
        self._lock_fd: int | None = None
        self._metrics_fh = None
        self.created: list[Path] = []  # directories this process made, outermost first
        self._made_lock = False

    # ------------------------------------------------------------ one writer

    def ensure_writable(self) -> None:
        """Create the directories and prove we can write in both, before any training.

        The run directory takes the log and status, checkpoints/ the saves: a run that
        could not save must fail now, not after hours of training. The directories made
        here are recorded in `created`, for `discard`.
        """
        for directory in (self.path, self.checkpoints):
            probe = directory / f"{TMP_PREFIX}probe.{os.getpid()}"
            try:
                self._make(directory)
                with open(probe, "wb") as f:
                    f.write(b"ok")
                    f.flush()
                    os.fsync(f.fileno())
                probe.unlink()
            except OSError as exc:
                try:
                    probe.unlink()
                except OSError:
                    pass
                self._remove_created()
                raise RunDirError(
                    f"run directory {directory} is not writable: {describe_os_error(exc)}"
                ) from None

    def _make(self, directory: Path) -> None:
        """mkdir -p, one level at a time, so that exactly the levels made here are recorded."""
        missing = []
        level = directory
        while not level.exists() and level != level.parent:
            missing.append(level)
            level = level.parent
        for level in reversed(missing):
            try:
                level.mkdir()
            except FileExistsError:
                continue  # made by another process at the same moment: not ours to remove
            self.created.append(level)

    def lock(self) -> None:
        """Take the run's lock; a lock left by a killed process is free again (flock).

        A refused new run removes its lock file while holding it (`discard`). A process
        that opened that file just before could then lock a file that is no longer the
        run's, which would guard nothing; so the lock counts only if the file locked is
        still the run's .lock, and is taken again otherwise (on a new file, in the
        directory made again if it went too).
        """
        path = self.path / ".lock"
        for _ in range(LOCK_ATTEMPTS):
            made = not path.exists()
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                self.ensure_writable()  # the run directory was removed under us
                continue
            except OSError as exc:
                raise RunDirError(f"could not open the lock file {path}: {describe_os_error(exc)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                holder = _read_pid(fd) if busy else None
                os.close(fd)
                if not busy:
                    raise RunDirError(f"could not lock {path}: {describe_os_error(exc)}") from None
                raise RunDirBusy(
                    f"run directory {self.path} is in use by another gdtrain process "
                    f"(pid {holder or 'unknown'}); wait for it to finish or stop it"
                ) from None
            if not _is_file_of(fd, path):
                os.close(fd)
                continue
            break
        else:
            raise RunDirError(f"could not lock {path}: the file was removed under gdtrain "
                              f"{LOCK_ATTEMPTS} times; is another program deleting it?")
        # write the new pid over the old one, then cut: a reader never sees an empty file
        record = f"{os.getpid()}\n".encode()
        try:
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
        except OSError as exc:
            os.close(fd)
            raise RunDirError(f"could not write {path}: {describe_os_error(exc)}") from None
        self._lock_fd = fd
        self._made_lock = made

    def writer_alive(self) -> bool:
        """Whether the process that last wrote status.json still exists.

        `eval --watch` uses it to tell a run still training from one killed without a
        word (kill -9 leaves status "running"). It asks the kernel about the pid rather
        than probing the lock, which could make a run starting at that instant fail.
        """
        pid = self.read_status().get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone else
        return True

    def unlock(self) -> None:
        if self._metrics_fh is not None:
            with contextlib.suppress(OSError):  # every record was flushed when written
                self._metrics_fh.close()
            self._metrics_fh = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def discard(self) -> None:
        """Remove what this process added for a start refused before its first step: its
        config.yaml and lock file in a directory it made, and the directories it made.

        Called by the lock holder before `unlock`: a refused new run leaves no trace (an
        empty run directory would be listed by `gdtrain runs` as a run of unknown
        state). An existing run keeps every byte, and a directory in which another
        process has put a file stays (rmdir removes only empty ones).
        """
        assert self._lock_fd is not None, "only the lock holder may discard"
        if self.path in self.created:
            self.config_file.unlink(missing_ok=True)
        if self._made_lock:
            (self.path / ".lock").unlink(missing_ok=True)  # still locked: see lock()
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in reversed(self.created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self.created.clear()

    # ------------------------------------------------------------ contents (lock holder only)

    def clear(self) -> None:
        """Delete checkpoints, pointers and log: `--restart`, or a log no checkpoint backs."""
        with _io("clear", self.path):
            for p in checkpoint.list_checkpoints(self.checkpoints):
                p.unlink(missing_ok=True)
            (self.checkpoints / checkpoint.POINTER).unlink(missing_ok=True)
            (self.checkpoints / checkpoint.BEST).unlink(missing_ok=True)
            self.metrics.unlink(missing_ok=True)

    def clean_temporaries(self) -> list[Path]:
        """Remove temporary files left by a killed save or rewrite; return what was removed."""
        return clean_temporaries(self.checkpoints) + clean_temporaries(self.path)

    # ------------------------------------------------------------ records

    def log(self, record: dict) -> None:
        with _io("write", self.metrics):
            if self._metrics_fh is None:
                self._metrics_fh = open(self.metrics, "a", encoding="utf-8")
            self._metrics_fh.write(json.dumps(record) + "\n")
            self._metrics_fh.flush()

    def write_config(self, text: str) -> None:
        with _io("write", self.config_file):
            write_text_atomic(self.config_file, text)

    def truncate_metrics(self, step: int) -> None:
        """Drop records past `step`: a resumed run logs those steps again."""
        if not self.metrics.exists():
            return
        kept = []
        with _io("rewrite", self.metrics):
            for line in self.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
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
