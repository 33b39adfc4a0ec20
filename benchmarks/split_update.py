"""Does a second thread for the step's element-wise update pay?

The update of a mnist_mlp step (L2 gradient, momentum, var += update, EMA over 397,510
values: ~300 µs on one core of the machine in docs/performance.md) runs on one core while
the second idles, or spins: OpenBLAS's idle workers wait for the next product busily for
a while. `ElementwisePass(threads=2)` hands the first half of its blocks to a worker
thread (NumPy releases the GIL inside each ufunc loop) and runs the rest itself; the bits
are the same however the blocks are split (checked below). This times whole
`Trainer.step`s with one and with two threads, alternating, at a few block sizes.

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
    trainers = {}
    for name, (block, threads) in VARIANTS.items():
        t = trainers[name] = Trainer(cfg, dataset)
        t.elementwise = ElementwisePass(block, threads)
        for _ in range(20):
            t.step()
    first = next(iter(trainers.values()))
    same = all(np.array_equal(a, b) for t in trainers.values()
               for a, b in zip(first.state_arrays().values(), t.state_arrays().values(), strict=True))
    print(f"bit-identical after 20 steps: {same}")
    times: dict[str, list[float]] = {name: [] for name in trainers}
    order = list(trainers)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(steps):
                trainers[name].step()
            times[name].append((time.perf_counter() - t0) / steps * 1e6)
    for name, v in times.items():
        print(f"{name:26s} min {min(v):,.0f} µs  median {statistics.median(v):,.0f} µs per step")


if __name__ == "__main__":
    main()
