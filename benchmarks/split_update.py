"""Does a second thread for the step's element-wise update pay?

The update of a mnist_mlp step (L2 gradient, momentum, var += update, EMA over 397,510
values: ~300 µs on one core of the machine in docs/performance.md) runs on one core while
the second idles, or spins: OpenBLAS's idle workers wait for the next product busily for
a while. `ElementwisePass(threads=2)` hands the first half of its blocks to a worker
thread (NumPy releases the GIL inside each ufunc loop) and runs the rest itself; the bits
are the same however the blocks are split (checked below). This times whole
`Trainer.step`s with one and with two threads, alternating, at a few block sizes, on one
trainer whose pass is swapped from round to round.

    python -m benchmarks.split_update [ROUNDS] [STEPS]
    OPENBLAS_THREAD_TIMEOUT=4 python -m benchmarks.split_update   # idle BLAS workers sleep sooner

Not used by default: see docs/performance.md for what it measured.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from gdtrain.config.loading import load
from gdtrain.core.elementwise import ElementwisePass
from gdtrain.core.train import Trainer
from gdtrain.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
# (block size in values, threads); None: whole arrays, which one thread runs
VARIANTS = {"whole arrays, 1 thread": (None, 1), "64K blocks, 1 thread": (64 * 1024, 1),
            "64K blocks, 2 threads": (64 * 1024, 2), "32K blocks, 2 threads": (32 * 1024, 2),
            "128K blocks, 2 threads": (128 * 1024, 2), "196K blocks, 2 threads": (196 * 1024, 2)}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    cfg = load(ROOT / "configs/mnist_mlp.yaml", [f"data.dir={ROOT / 'data/mnist'}"])
    dataset = load_dataset(cfg["data"], cfg["run"]["dtype"])
    # the same bits whatever the pass: checked on twin trainers (tests/test_elementwise.py
    # checks every optimizer, penalty, clip and EMA)
    a, b = Trainer(cfg, dataset), Trainer(cfg, dataset)
    a.elementwise, b.elementwise = ElementwisePass(None), ElementwisePass(32 * 1024, threads=2)
    for _ in range(20):
        a.step()
        b.step()
    same = all(np.array_equal(x, y) for x, y in zip(a.state_arrays().values(), b.state_arrays().values(),
                                                      strict=True))
    print(f"bit-identical after 20 steps: {same}")
    # one trainer, its pass swapped from round to round: every variant works on the same
    # arrays, in the same caches
    t = a
    passes = {name: ElementwisePass(block, threads) for name, (block, threads) in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in passes}
    order = list(passes)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            t.elementwise = passes[name]
            t.step()  # cuts this pass's views
            t0 = time.perf_counter()
            for _ in range(steps):
                t.step()
            times[name].append((time.perf_counter() - t0) / steps * 1e6)
    for name, v in times.items():
        print(f"{name:26s} min {min(v):,.0f} µs  median {statistics.median(v):,.0f} µs per step")


if __name__ == "__main__":
    main()
