"""The numerical machinery under a run: which BLAS does the matrix products, with how
many threads, the thread count a config asks for, and whether subnormals are flushed
(fpenv.py).

Why a training tool cares: a float32 product's last bits depend on the BLAS kernel
(OpenBLAS picks one per CPU, or the one OPENBLAS_CORETYPE names) and on how many threads
split it. Both are recorded with every checkpoint, so a resume that runs on different
machinery can say that it will not match an uninterrupted run bit for bit, and
`run.threads` pins the count so that it does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def _blas_pools() -> list[dict]:
    from threadpoolctl import threadpool_info  # ~5 ms to scan the loaded libraries: only when asked

    return [p for p in threadpool_info() if p.get("user_api") == "blas"]


def describe() -> dict:
    """What computes this process's products, as plain data for metadata and messages;
    flush_subnormals: whether the calling thread flushes them to zero (run.flush_subnormals)."""
    from . import fpenv

    info: dict = {"numpy": np.__version__}
    pools = _blas_pools()
    if pools:
        p = pools[0]  # numpy's own BLAS is loaded first
        info.update(blas=p.get("internal_api"), blas_version=p.get("version"),
                    kernel=p.get("architecture"), threads=p.get("num_threads"))
    else:
        info["blas"] = None  # e.g. Accelerate on macOS: threadpoolctl does not see it
    info["flush_subnormals"] = fpenv.flushing()
    return info


def label(info: dict) -> str:
    """One line for people: "openblas 0.3.31 (SkylakeX), 2 threads"."""
    if not info.get("blas"):
        return "BLAS unknown"
    kernel = f" ({info['kernel']})" if info.get("kernel") else ""
    version = f" {info['blas_version']}" if info.get("blas_version") else ""
    threads = info.get("threads")
    flushed = ", subnormals flushed" if info.get("flush_subnormals") else ""
    return f"{info['blas']}{version}{kernel}, {threads} thread{'s' if threads != 1 else ''}{flushed}"


def differences(saved: dict | None, now: dict) -> list[str]:
    """What differs between the machinery that wrote a checkpoint and this process's."""
    if not isinstance(saved, dict) or not saved:
        return []  # written before this was recorded (or not by gdtrain): nothing to compare
    keys = ("numpy", "blas", "blas_version", "kernel", "threads")
    changed = [f"{k} {saved.get(k)} -> {now.get(k)}" for k in keys if saved.get(k) != now.get(k)]
    # recorded since run.flush_subnormals exists; the code before never flushed
    was, flushes = bool(saved.get("flush_subnormals", False)), bool(now.get("flush_subnormals", False))
    if was != flushes:
        changed.append(f"flush_subnormals {str(was).lower()} -> {str(flushes).lower()}")
    return changed


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_allocator_tuned = False


def reuse_freed_memory() -> None:
    """Keep the memory a training step frees for the next step (glibc only; no-op elsewhere).

    A step allocates and frees the same multi-megabyte temporaries every time. glibc
    serves blocks above its mmap threshold (it adapts, from 128 KiB) with fresh pages and
    returns freed heap tops to the OS past its trim threshold, so each step faulted its
    temporaries in again: 2,656 page faults and ~5 ms of system time per float64 MNIST
    MLP step (13.2 ms a step; 8.5 ms without the faults). Fixed thresholds of 32 MiB
    (the largest glibc allows) and 128 MiB keep them in the heap.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return  # not glibc (musl, macOS): their allocators decide
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 128 << 20)


@contextlib.contextmanager
def threads(count: int | None, warn=None) -> Iterator[None]:
    """Run the block with `count` BLAS threads (None: leave the library's setting)."""
    if count is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=count, user_api="blas"):
        if warn is not None:
            got = {p.get("num_threads") for p in _blas_pools()}
            if got != {count}:
                warn(f"run.threads: asked for {count} BLAS threads, the BLAS runs "
                     f"{', '.join(map(str, sorted(got))) or 'an unknown number'}")
        yield
