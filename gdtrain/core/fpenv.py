"""Flush-to-zero and denormals-are-zero: the CPU flags that make subnormals cost nothing.

A subnormal float (0 < |x| < finfo.tiny) takes a microcode assist on many Intel cores
for every operation that reads or writes one. Two control bits turn them into zeros in
hardware: FTZ (results that would be subnormal become 0) and DAZ (subnormal operands
read as 0). TensorFlow's CPU kernels run with both set, so TF1 never computes with a
subnormal. The bits live in a per-thread register (MXCSR on x86-64, FPCR.FZ on AArch64)
that a new thread copies from the thread that creates it: setting them in one thread
changes no thread that already exists, OpenBLAS's workers included.

Set through the C library's fegetenv/fesetenv (glibc), whose fenv_t holds the register,
so no compiled extension is needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

_X86_FTZ, _X86_DAZ = 1 << 15, 1 << 6  # MXCSR bits
_ARM_FZ = 1 << 24  # FPCR bit: flush inputs and outputs, single and double precision


class _FenvX86(ctypes.Structure):
    # glibc's x86-64 fenv_t: the 28-byte x87 environment, then MXCSR
    _fields_ = [("x87", ctypes.c_ushort * 14), ("mxcsr", ctypes.c_uint)]


class _FenvArm(ctypes.Structure):
    # glibc's AArch64 fenv_t
    _fields_ = [("fpcr", ctypes.c_uint), ("fpsr", ctypes.c_uint)]


_UNRESOLVED = object()
_LIB = _UNRESOLVED  # the C math library, once looked up (None: flags not settable here)
_FENV: type | None = None
_BITS = 0


def _libm():
    """The C math library whose fenv calls set the flags here, or None; looked up on first
    use, not at import (platform.libc_ver() reads the interpreter's binary)."""
    global _LIB, _FENV, _BITS
    if _LIB is not _UNRESOLVED:
        return _LIB
    _LIB = None
    machine = platform.machine().lower()
    if platform.system() != "Linux" or machine not in ("x86_64", "amd64", "aarch64", "arm64"):
        return None
    if platform.libc_ver()[0] != "glibc":
        return None  # the fenv_t layouts above are glibc's
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        lib.fegetenv, lib.fesetenv  # noqa: B018 - probe the symbols
    except (OSError, AttributeError):
        return None
    x86 = machine in ("x86_64", "amd64")
    _FENV, _BITS = (_FenvX86, _X86_FTZ | _X86_DAZ) if x86 else (_FenvArm, _ARM_FZ)
    _LIB = lib
    return lib


def supported() -> bool:
    """Whether this process can set the flags (Linux with glibc, x86-64 or AArch64)."""
    return _libm() is not None


def _field() -> str:
    return "mxcsr" if _FENV is _FenvX86 else "fpcr"


def _get() -> ctypes.Structure:
    env = _FENV()
    if _LIB.fegetenv(ctypes.byref(env)) != 0:
        raise OSError("fegetenv failed")
    return env


def flushing() -> bool:
    """Whether the calling thread flushes subnormals to zero (FTZ and DAZ both set)."""
    if not supported():
        return False
    return getattr(_get(), _field()) & _BITS == _BITS


def set_flush(on: bool) -> bool:
    """Set (or clear) FTZ and DAZ in the calling thread; return whether it flushed before."""
    if not supported():
        raise OSError(f"flushing subnormals needs Linux with glibc on x86-64 or AArch64, "
                      f"not {platform.system()} {platform.machine()}")
    env = _get()
    value = getattr(env, _field())
    before = value & _BITS == _BITS
    setattr(env, _field(), (value | _BITS) if on else (value & ~_BITS))
    if _LIB.fesetenv(ctypes.byref(env)) != 0:
        raise OSError("fesetenv failed")
    return before


# ------------------------------------------------------------------ the BLAS's own threads

def _openblas_libraries() -> list[ctypes.CDLL]:
    from threadpoolctl import threadpool_info  # ~5 ms: only when flushing is asked for

    libs = []
    for pool in threadpool_info():
        if pool.get("internal_api") == "openblas" and pool.get("filepath"):
            try:
                libs.append(ctypes.CDLL(pool["filepath"]))
            except OSError:
                pass
    return libs


def restart_blas_threads() -> bool:
    """Make OpenBLAS start its worker threads again, from the calling thread, so that they
    copy its flags; False when no loaded BLAS can (not OpenBLAS, or one without the call).

    blas_thread_shutdown_ is the call OpenBLAS itself makes before every fork(): it joins
    the workers, and the next threaded call starts new ones (OpenBLAS re-creates its pool
    lazily). It must not run while another thread is inside a BLAS call, as fork() must not.
    """
    done = False
    for lib in _openblas_libraries():
        shutdown = getattr(lib, "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown.restype = ctypes.c_int
            done = shutdown() == 0 or done
    return done


def blas_threads_flush() -> bool:
    """Whether every thread of a product flushes: a product big enough to be split over
    the BLAS's threads, whose every result would be subnormal, must give zeros only."""
    import numpy as np

    a = np.full((512, 64), 1e-20, np.float32)
    b = np.full((64, 512), 1e-20 / 64, np.float32)  # each result 1e-40: subnormal
    bits = (a @ b).view(np.uint32)
    return not np.any(bits & 0x7FFFFFFF)  # from the bits: DAZ makes `x != 0` false for x subnormal


@contextlib.contextmanager
def flushed(on: bool, warn=None) -> Iterator[bool]:
    """Run the block with FTZ/DAZ set in this thread and in the BLAS's worker threads
    (on), then put both back; yields whether every thread flushes. Off: changes nothing.

    `warn(text)` hears when the flags cannot be set here (the block then computes with
    subnormals, as without the option) or when the BLAS's threads do not take them.
    """
    if not on:
        yield False
        return
    if not supported():
        if warn is not None:
            warn(f"run.flush_subnormals: this platform ({platform.system()} {platform.machine()}) "
                 "gives no way to set FTZ/DAZ; computing with subnormal numbers")
        yield False
        return
    before = set_flush(True)
    restarted = False
    try:
        if not before:
            restarted = restart_blas_threads()
        every = blas_threads_flush()
        if not every and warn is not None:
            warn("run.flush_subnormals: the BLAS's worker threads still compute with subnormal "
                 "numbers (their flags cannot be set from here); run.threads: 1 flushes every product")
        yield every
    finally:
        if not before:
            set_flush(False)
            if restarted:
                restart_blas_threads()  # the workers go back to the process's own flags
