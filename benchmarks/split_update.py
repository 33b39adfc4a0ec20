"""Does splitting the MLP's elementwise update across two threads pay?

The momentum + apply + EMA phase of a mnist_mlp step streams ~6 MB of state on one core
while the second core idles. This prototype runs W1's first half of rows on a worker
thread and everything else on the main one (elementwise work gives the same bits however
it is split: checked below), and times whole steps against `Trainer.step`, alternating.
Forward, loss, backward and the L2 term are `Trainer.gradients`, as in `Trainer.step`:
so the L2 gradient is added on the main thread, before the split, not in the halves.

    python -m benchmarks.split_update [ROUNDS]
    OPENBLAS_THREAD_TIMEOUT=4 python -m benchmarks.split_update   # idle BLAS workers sleep sooner

Not used by gdtrain: on the 2-core machine of docs/performance.md it gained nothing.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gdtrain.config.loading import load
from gdtrain.core.train import StepResult, Trainer
from gdtrain.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent


def split_step(t: Trainer, pool: ThreadPoolExecutor):
    """Trainer.step for mnist_mlp (momentum, L2, EMA) with the update in two halves."""
    m = float(t.config["optimizer"]["momentum"])

    def elementwise(parts, grads, lr, one_minus_decay):
        for k, rows in parts:
            g, p = grads[k][rows], t.params[k][rows]
            a = t.opt_state["accum"][k][rows]
            a *= m
            a += g
            p += a * -lr
            shadow = t.ema[k][rows]
            shadow -= (shadow - p) * one_minus_decay

    def step() -> StepResult:
        step = t.step_count
        x, y = t.stream.batch(step)
        loss, grads = t.gradients(t.params, x, y)  # L2 included
        lr = t.lr(step)
        one = t.dtype.type(1)
        c = one - t.dtype.type(t.average.decay_at(step + 1))
        half = t.params["W1"].shape[0] // 2
        job = pool.submit(elementwise, [("W1", slice(0, half))], grads, lr, c)
        rest = [("W1", slice(half, None))] + [(k, slice(None)) for k in ("b1", "W2", "b2")]
        elementwise(rest, grads, lr, c)
        job.result()
        t.step_count = step + 1
        return StepResult(t.step_count, loss, lr)

    return step


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cfg = load(ROOT / "configs/mnist_mlp.yaml", [f"data.dir={ROOT / 'data/mnist'}"])
    dataset = load_dataset(cfg["data"], cfg["run"]["dtype"])
    plain, split = Trainer(cfg, dataset), Trainer(cfg, dataset)
    with ThreadPoolExecutor(1) as pool:
        run_split = split_step(split, pool)
        for _ in range(20):
            plain.step()
            run_split()
        same = all(np.array_equal(plain.params[k], split.params[k])
                   and np.array_equal(plain.ema[k], split.ema[k]) for k in plain.params)
        print(f"bit-identical after 20 steps: {same}")
        times: dict[str, list[float]] = {"Trainer.step": [], "split update": []}
        for r in range(rounds):
            order = [("Trainer.step", plain.step), ("split update", run_split)]
            for name, f in order if r % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                for _ in range(100):
                    f()
                times[name].append((time.perf_counter() - t0) / 100 * 1e6)
    for name, v in times.items():
        print(f"{name:13s} min {min(v):.0f} µs  median {sorted(v)[len(v) // 2]:.0f} µs per step")


if __name__ == "__main__":
    main()
