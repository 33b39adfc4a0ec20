"""Crash or fail a checkpoint save at any of its file operations, from the outside.

`inject(hook)` interposes on the file operations of gdtrain.run.atomic (open, write,
flush, fsync, rename, fsync of the directory) and gdtrain.run.checkpoint (making the
checkpoints folder, deleting old checkpoints), and calls `hook(name)` just before each
operation of a checkpoint save: "mkdir", "open checkpoint", "write checkpoint", ...,
"fsync dir after pointer", "delete old checkpoint" (test_faults.SAVE_OPERATIONS). The hook
may raise to simulate a crash (a BaseException) or a full disk (an OSError). Writes of
other files (status.json, config.yaml) call no hook. Nothing in gdtrain knows about it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gdtrain.run import atomic, checkpoint

# what a file of a checkpoints folder is, by its name, in the operations' names
_KINDS = {checkpoint.POINTER: "pointer", checkpoint.BEST: "best pointer"}


def _kind(path) -> str | None:
    name = Path(path).name
    if name.startswith(atomic.TMP_PREFIX):  # .tmp-<name>.<pid>
        name = name[len(atomic.TMP_PREFIX):].rsplit(".", 1)[0]
    if checkpoint.step_of(name) is not None:
        return "checkpoint"
    return _KINDS.get(name)


class _File:
    """A file being written by write_atomic: reports its first write and first flush
    (zipfile writes many times and flushes once itself before write_atomic's own flush)."""

    def __init__(self, inner, kind: str, report, files: dict):
        self._inner, self._kind, self._report, self._seen = inner, kind, report, set()
        self._files = files  # open file descriptors -> kind, for _Os.fsync
        files[inner.fileno()] = kind

    def _once(self, what: str) -> None:
        if what not in self._seen:
            self._seen.add(what)
            self._report(f"{what} {self._kind}")

    def write(self, data):
        self._once("write")
        return self._inner.write(data)

    def flush(self):
        self._once("flush")
        return self._inner.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._files.pop(self._inner.fileno(), None)  # the number may be reused after close
        self._inner.close()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Os:
    """The os module as atomic.py and checkpoint.py see it: each file operation of a save
    reported before it is made; everything else is os itself."""

    def __init__(self, report, files: dict):
        self._report, self._files = report, files
        self.renamed: str | None = None

    def fsync(self, fd):
        if fd in self._files:
            self._report(f"fsync {self._files[fd]}")
        return os.fsync(fd)

    def replace(self, src, dst):
        kind = _kind(dst)
        if kind:
            self._report(f"rename {kind}")
            self.renamed = kind
        return os.replace(src, dst)

    def makedirs(self, path, *args, **kwargs):
        if Path(path).name == "checkpoints":
            self._report("mkdir")
        return os.makedirs(path, *args, **kwargs)

    def unlink(self, path, *args, **kwargs):
        if _kind(path) == "checkpoint":
            self._report("delete old checkpoint")
        return os.unlink(path, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(os, name)


def inject(hook, monkeypatch: pytest.MonkeyPatch | None = None):
    """Call `hook(operation)` before each file operation of every checkpoint save; return
    `stop()`, which puts the file operations back. Given a test's `monkeypatch`, they are
    put back at the test's end at the latest."""
    patch = monkeypatch or pytest.MonkeyPatch()
    files: dict[int, str] = {}
    fake_os = _Os(hook, files)

    def fake_open(path, mode="r", *args, **kwargs):
        kind = _kind(path)
        if kind is None:
            return open(path, mode, *args, **kwargs)
        hook(f"open {kind}")
        return _File(open(path, mode, *args, **kwargs), kind, hook, files)

    real_fsync_dir = atomic.fsync_dir

    def fake_fsync_dir(path):
        if fake_os.renamed:
            hook(f"fsync dir after {fake_os.renamed}")
            fake_os.renamed = None
        return real_fsync_dir(path)

    fakes = [(atomic, "os", fake_os, os), (atomic, "open", fake_open, open),
             (atomic, "fsync_dir", fake_fsync_dir, real_fsync_dir), (checkpoint, "os", fake_os, os)]
    for module, name, fake, _ in fakes:
        patch.setattr(module, name, fake, raising=False)

    def stop() -> None:
        if monkeypatch is None:
            patch.undo()
            return
        for module, name, _, real in fakes:  # the test's other patches stay
            patch.setattr(module, name, real, raising=False)

    return stop
