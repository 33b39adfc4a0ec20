"""Writing a file so that a crash leaves the old file or the new one, never a mix, and
saying why a write failed in words a person can act on.

`write_atomic` writes a temporary file in the same directory, fsyncs it, renames it
into place and fsyncs the directory. A save killed part way leaves only a temporary
(TMP_PREFIX...), which the one writer of a run directory removes (`clean_temporaries`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable) -> None:
    """Write `path` via a fsynced temporary file and a rename; clean up on failure.

    tests/file_faults.py interposes on each file operation here (open, write, flush,
    fsync, rename, fsync of the directory) to crash or fail a save at any of them.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def clean_temporaries(directory: str | Path) -> list[Path]:
    """Remove temporary files left by a save that was killed; return what was removed."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(TMP_PREFIX):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def describe_os_error(exc: OSError) -> str:
    """'no space left on device (ENOSPC)': the reason a person can act on, and its errno name."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    name = errno.errorcode.get(exc.errno or 0)
    return f"{reason} ({name})" if name else reason
