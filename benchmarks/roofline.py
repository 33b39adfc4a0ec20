"""A floor for a training epoch: its matrix products at the measured sgemm peak plus the
memory traffic its update cannot avoid at the measured bandwidth (benchmarks/bench.py).

What counts as unavoidable: per trainable value and step, reading its gradient once and
reading and writing once the parameter, each optimizer slot kept per parameter and the
EMA shadow, as one fused pass over them would (momentum + EMA: 1 + 2 + 2 + 2 = 7 accesses,
28 bytes in float32). Not counted: the temporaries of NumPy's one-operation-per-pass
form (that is the cost the floor measures against), the activations (200×500 values for
the MLP: they stay in cache between the products that write and read them), the batch
(bytes, gathered once). The products are counted at the best sgemm rate the bench
measured (large squares and the MLP's own 200×784×500), as if every product of the step
ran at it.

Bandwidth is measured two ways, both with NumPy's own passes (`a += b`: two reads and
one write; `copyto`: one read, one write; the best of the two, bytes read plus written
per second):
  - on arrays the size of the MLP's update (four of 392,000 float32, 6.3 MB together):
    they fit the 32 MB L3 of the machine in docs/performance.md, and between steps the
    products' operands (under 4 MB) leave them there. This is the bandwidth the update
    can actually get, and the roofline uses it: the faster figure, the tighter floor.
  - on 256 MB arrays (main memory), printed beside it: the floor if the update's state
    had to come from DRAM every step.
"""

from __future__ import annotations

import time

CACHE_VALUES = 392_000  # the MLP's W1: the update's largest arrays
CACHE_ARRAYS = 4  # its gradient, value, momentum slot, EMA shadow
DRAM_BYTES = 256 << 20


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _bandwidth(n: int, arrays: int, reps: int) -> float:
    """Best GB/s (bytes read + written) of `a += b` and copyto over `arrays` float32 arrays of n."""
    import numpy as np

    xs = [np.zeros(n, np.float32) for _ in range(arrays)]  # zeros: the sums never overflow
    pairs = list(zip(xs, xs[1:] + xs[:1], strict=True))

    def add():
        for a, b in pairs:
            np.add(a, b, out=a)

    def copy():
        for a, b in pairs:
            np.copyto(a, b)

    add()
    copy()
    nbytes = xs[0].nbytes * len(pairs)
    return max(3 * nbytes / _best(add, reps), 2 * nbytes / _best(copy, reps)) / 1e9


def measure_bandwidth() -> dict[str, float]:
    return {"cache_gbs": _bandwidth(CACHE_VALUES, CACHE_ARRAYS, 200),
            "dram_gbs": _bandwidth(DRAM_BYTES // 4 // 2, 2, 5)}


def update_bytes(values: int, slots: int, ema: bool, itemsize: int) -> int:
    """Unavoidable bytes per step of an update over `values` trainable values."""
    return values * itemsize * (1 + 2 + 2 * slots + (2 if ema else 0))


def floor_seconds(flops: float, peak_gflops: float, nbytes: float, gbs: float) -> tuple[float, float]:
    """(products at peak, traffic at bandwidth), in seconds."""
    return flops / (peak_gflops * 1e9), nbytes / (gbs * 1e9)
