"""Where one training step goes, phase by phase, for this tree and (optionally) another.

    python -m benchmarks.phases [--workload mlp|softmax] [--steps 300] [--rounds 5]
                                [--threads N] [--before PATH] [--json FILE]

Each round runs a fresh subprocess per code tree (this one, and the tree at --before, e.g.
a worktree of main: the "before" column), alternating, and each times `--steps` steps
phase by phase after a warm-up; the table gives, per phase, the median over rounds of each
round's median step (and the minimum). The phases are those of `Trainer.step`:

  gather the batch        stream.batch
  forward products        x·W1, h·W2 (replayed: the same products on the step's arrays)
  rest of forward         bias adds, activations (forward minus its products)
  loss                    loss.value_and_grad
  backward products       hᵀ·d, d·W2ᵀ, xᵀ·dh (replayed)
  rest of backward        bias sums, the activation's derivative (backward minus products)
  element-wise update     penalties' gradients, clip, optimizer update, var += update, EMA:
                          each part over whole arrays in a tree without gdtrain/core/elementwise.py
                          (then also shown part by part), the blocked pass in one with it

The products are replayed rather than timed inside the model's own code so that the
model runs unchanged: after each step, once each, on the step's own arrays; their sum is
subtracted from forward and backward (so "rest of" rows are differences of two timings,
and their minima can come out a little low). Works with any
tree whose Trainer has stream, model, loss, penalties, clip, optimizer and average (main
since the chain issue).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"mlp": "configs/mnist_mlp.yaml", "softmax": "configs/mnist_softmax.yaml"}
WARMUP = 30
ORDER = ["gather the batch", "forward products", "rest of forward", "loss", "backward products",
         "rest of backward", "penalties' gradients", "clip", "optimizer update", "var += update",
         "EMA", "element-wise update", "sum of the phases", "Trainer.step (timed alone)"]
PARTS = ["penalties' gradients", "clip", "optimizer update", "var += update", "EMA"]


# ---------------------------------------------------------------- in the child


def _products(t, x, cache, dout):
    """The step's matrix products, as (operands, phase) to replay: forward, then backward."""
    import numpy as np

    params = t.model.shapes
    if "W1" in params:  # mlp: cache = (inputs, outputs, masks)
        inputs = cache[0]
        n = sum(1 for k in params if k.startswith("W"))
        W = [t.params[f"W{i}"] for i in range(1, n + 1)]
        fwd = [(inputs[i], W[i]) for i in range(n)]
        bwd = []
        d = dout
        for i in reversed(range(n)):
            bwd.append((inputs[i].T, d))
            if i == 0:
                break
            bwd.append((d, W[i].T))
            d = np.ones((d.shape[0], W[i].shape[0]), d.dtype)
        return fwd, bwd
    return [(x, t.params["W"])], [(x.T, dout)]  # linear/softmax: x·W, xᵀ·d


def _timed(pairs) -> float:
    t0 = time.perf_counter()
    for a, b in pairs:
        a @ b
    return time.perf_counter() - t0


def child(workload: str, steps: int) -> dict:
    try:  # the package in layers (gdtrain/core, gdtrain/config/...), or a tree from before it
        from gdtrain.config.loading import load
        from gdtrain.core import compute
        from gdtrain.core.train import Trainer
    except ImportError:
        from gdtrain.train import Trainer

        from gdtrain import compute
        from gdtrain.config import load
    from gdtrain.data import load_dataset

    cfg = load(ROOT / CONFIGS[workload], [f"data.dir={ROOT / 'data/mnist'}"])
    dataset = load_dataset(cfg["data"], cfg["run"]["dtype"])
    t = Trainer(cfg, dataset)
    blocked = getattr(t, "elementwise", None)
    clock = time.perf_counter
    for _ in range(WARMUP):
        t.step()
    samples: dict[str, list[float]] = {}

    def add(name, seconds):
        samples.setdefault(name, []).append(seconds * 1e6)

    for _ in range(steps):
        step = t.step_count
        t0 = clock()
        x, y = t.stream.batch(step)
        t1 = clock()
        out, cache = t.model.forward(t.params, x, (t.seed, step))
        t2 = clock()
        loss, dout = t.loss.value_and_grad(out, y)
        t3 = clock()
        grads = t.model.backward(t.params, cache, dout, t.trainable_set)
        t4 = clock()
        add("gather the batch", t1 - t0)
        add("forward", t2 - t1)
        add("loss", t3 - t2)
        add("backward", t4 - t3)
        lr = t.lr(step)
        if blocked is not None:
            t5 = clock()
            blocked.run(grads, lr, step + 1, params=t.params, opt_state=t.opt_state, optimizer=t.optimizer,
                        penalties=t.penalties, clip=t.clip, average=t.average)
            add("element-wise update", clock() - t5)
        else:
            t5 = clock()
            for penalty in t.penalties:
                penalty.add_gradient(grads, t.params)
            t6 = clock()
            if t.clip is not None:
                t.clip.apply(grads)
            t7 = clock()
            updates, t.opt_state = t.optimizer.update(grads, t.opt_state, lr, t.params)
            t8 = clock()
            for k, u in updates.items():
                t.params[k] += u
            t9 = clock()
            if t.average is not None:
                t.average.update(t.params, step + 1)
            t10 = clock()
            for name, seconds in zip(PARTS, (t6 - t5, t7 - t6, t8 - t7, t9 - t8, t10 - t9), strict=True):
                add(name, seconds)
            add("element-wise update", t10 - t5)
        t.step_count = step + 1
        fwd, bwd = _products(t, x, cache, dout)
        add("forward products", _timed(fwd))
        add("backward products", _timed(bwd))
    whole = []
    for _ in range(steps):
        t0 = clock()
        t.step()
        whole.append((clock() - t0) * 1e6)
    med = {k: statistics.median(v) for k, v in samples.items()}
    low = {k: min(v) for k, v in samples.items()}
    out = {}
    for stat, values in (("median", med), ("min", low)):
        fwd_p, bwd_p = values["forward products"], values["backward products"]
        row = {"gather the batch": values["gather the batch"], "forward products": fwd_p,
               "rest of forward": values["forward"] - fwd_p, "loss": values["loss"],
               "backward products": bwd_p, "rest of backward": values["backward"] - bwd_p,
               "element-wise update": values["element-wise update"]}
        row.update({k: values[k] for k in PARTS if k in values})
        row["sum of the phases"] = (values["gather the batch"] + values["forward"] + values["loss"]
                                    + values["backward"] + values["element-wise update"])
        row["Trainer.step (timed alone)"] = (statistics.median if stat == "median" else min)(whole)
        out[stat] = row
    info = compute.describe()
    out["blocked"] = blocked is not None
    if blocked is not None:  # what the pass chose (tuned over the warm-up), and what it measured
        out["block_elements"] = blocked.block_elements
        out["tried"] = {str(k): v * 1e6 for k, v in getattr(blocked, "timings", {}).items()}
    out["machinery"] = compute.label(info)
    return out


# ---------------------------------------------------------------- in the parent


def _run_child(tree: Path, workload: str, steps: int, env: dict) -> dict:
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", workload, str(steps)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phases child for {tree} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(child(argv[1], int(argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(CONFIGS), default="mlp")
    p.add_argument("--steps", type=int, default=300, help="steps timed per round (default 300)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--threads", type=int, default=0, help="BLAS threads (default: the library's)")
    p.add_argument("--before", type=Path, help="another tree (e.g. a worktree of main): the 'before' column")
    p.add_argument("--json", type=Path, help="also write every round's figures here")
    args = p.parse_args(argv)
    env = dict(os.environ)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
    trees = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    runs: dict[str, list[dict]] = {name: [] for name, _ in trees}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for name, tree in trees if r % 2 == 0 else trees[::-1]:
            runs[name].append(_run_child(tree, args.workload, args.steps, env))
            loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.2f})", file=sys.stderr)
    columns = [name for name in ("before", "after") if name in runs]
    first = runs["after"][0]
    print(f"{args.workload}: {CONFIGS[args.workload]}, {args.steps} steps x {args.rounds} rounds, "
          f"µs per step, median of the rounds' medians (min); {_cpu()}, {first['machinery']}; load average "
          f"{min(loads):.2f}-{max(loads):.2f}")
    for name, tree in trees:
        run = runs[name][0]
        note = ""
        if run["blocked"]:
            size = run.get("block_elements")
            tried = ", ".join(f"{'whole arrays' if k == 'None' else k}: {v:.0f} µs"
                              for k, v in run.get("tried", {}).items())
            over = "whole arrays" if size is None else f"{size}-value blocks"
            note = (f" (the element-wise pass over {over}"
                    + (f"; its tuning in round 1 measured {tried}" if tried else "") + ")")
        print(f"  {name}: {tree}{note}")
    print()
    print("| phase | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for phase in ORDER:
        cells = []
        for name in columns:
            meds = [run["median"].get(phase) for run in runs[name]]
            if any(v is None for v in meds):
                cells.append("-")
                continue
            low = min(run["min"][phase] for run in runs[name])
            cells.append(f"{statistics.median(meds):,.0f} ({low:,.0f})")
        if any(c != "-" for c in cells):
            label = f"  {phase}" if phase in PARTS else phase
            print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"workload": args.workload, "runs": runs, "load": loads}, indent=1))


if __name__ == "__main__":
    main()
