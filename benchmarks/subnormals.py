"""Subnormal numbers: what they cost on this CPU, and whether training meets them.

    python -m benchmarks.subnormals micro [--reps 15] [--dtype float32,float64]
    python -m benchmarks.subnormals long CONFIG [--set key=value ...] [--steps N] [--every 500]
                                          [--json FILE]

A subnormal (denormal) number is a float below the dtype's smallest normal, 0 < |x| <
np.finfo(dtype).tiny (1.2e-38 in float32, 2.2e-308 in float64). Many Intel cores take
a microcode assist for every operation that reads or writes one (issue 13 measured 94x
for a float32 product with subnormal inputs, 21x for an update); TensorFlow's CPU
kernels run with FTZ/DAZ set, so TF1 never met them.

`micro` times single operations (process CPU time, one BLAS thread, medians) over
normal and subnormal operands: the products of the MNIST MLP's step and the element-wise
work of its update, float32 and float64. `--flush` sets FTZ/DAZ first (gdtrain.core.fpenv),
to show what flushing gives back.

`long` trains a config with one BLAS thread and, every `--every` steps, prints the
process CPU time of those steps and how many subnormal values the state (parameters,
optimizer slots, EMA shadows) and the next step's intermediates hold: the softmax
probabilities, the gradient with respect to the outputs, each hidden layer's activations
and back-propagated gradient, the parameter gradients and the optimizer's updates. The
intermediates are computed by a separate pass over the next batch (not timed, not
applied). Subnormals are counted from the bits, so a count is right whether or not
FTZ/DAZ are set (with DAZ, `x != 0` is false for a subnormal x).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import sys
import time

import numpy as np

# --------------------------------------------------------------------------- counting

_EXPONENT = {np.dtype(np.float32): (np.uint32, 0x7F800000, 0x007FFFFF),
             np.dtype(np.float64): (np.uint64, 0x7FF0000000000000, 0x000FFFFFFFFFFFFF)}


def count_subnormal(a: np.ndarray) -> int:
    """How many elements of a float32/float64 array are subnormal (from the bits)."""
    a = np.asarray(a)
    if a.dtype not in _EXPONENT:
        return 0
    uint, exponent, mantissa = _EXPONENT[a.dtype]
    bits = np.ascontiguousarray(a).view(uint)
    return int(np.count_nonzero(((bits & exponent) == 0) & ((bits & mantissa) != 0)))


def subnormal_like(shape, dtype, rng) -> np.ndarray:
    """Random values spread over the subnormal range (never 0), made from the bits so that
    FTZ/DAZ cannot flush them on the way."""
    uint, _, mantissa = _EXPONENT[np.dtype(dtype)]
    bits = rng.integers(1, int(mantissa) + 1, size=shape, dtype=np.uint64).astype(uint)
    bits |= rng.integers(0, 2, size=shape, dtype=np.uint64).astype(uint) << (8 * np.dtype(dtype).itemsize - 1)
    return bits.view(dtype)


# --------------------------------------------------------------------------- micro

def _median_cpu(f, reps: int, min_seconds: float = 0.02) -> float:
    f()
    inner = 1
    while True:  # enough calls per sample that the process clock's resolution does not matter
        t = time.process_time()
        for _ in range(inner):
            f()
        if time.process_time() - t >= min_seconds or inner >= 1 << 14:
            break
        inner *= 2
    samples = []
    for _ in range(reps):
        t = time.process_time()
        for _ in range(inner):
            f()
        samples.append((time.process_time() - t) / inner)
    return statistics.median(samples)


PRODUCTS = [  # (m, k, n): the MNIST MLP's products at batch 200, and softmax regression's
    ((500, 200, 10), "dW2 = h^T @ dlogits (dlogits subnormal)", "B"),
    ((200, 784, 500), "z1 = x @ W1 (W1 subnormal)", "B"),
    ((784, 200, 500), "dW1 = x^T @ dh (dh subnormal)", "B"),
    ((200, 10, 500), "dh = dlogits @ W2^T (dlogits subnormal)", "A"),
    ((784, 100, 10), "softmax dW = x^T @ dlogits (dlogits subnormal)", "B"),
]
SIZE = 392_000  # W1 of the MNIST MLP


def _elementwise(dtype):
    """(what, f(a, g), whether f changes a in place: then each call restarts from a copy)."""
    t = np.dtype(dtype).type
    m, lr, b1, b2, eps = t(0.9), t(-0.1), t(0.1), t(0.001), t(1e-8)
    return [
        ("a *= 0.9 (momentum decay)", lambda a, g: a.__imul__(m), True),
        ("a += g (g normal)", lambda a, g: a.__iadd__(g), True),
        ("a * -lr (momentum update)", lambda a, g: a * lr, False),
        ("m += (g - m) * 0.1 (Adam m)", lambda a, g: a.__iadd__((g - a) * b1), True),
        ("v += (g*g - v) * 0.001 (Adam v)", lambda a, g: a.__iadd__((g * g - a) * b2), True),
        ("sqrt(|a|)", lambda a, g: np.sqrt(np.abs(a)), False),
        ("a / (sqrt(|a|) + eps) (Adam step)", lambda a, g: a / (np.sqrt(np.abs(a)) + eps), False),
        ("g / a (divide by subnormal)", lambda a, g: g / a, False),
        ("exp(a)", lambda a, g: np.exp(a), False),
        ("s -= (s - a) * 0.01 (EMA)", lambda a, g: a.__isub__((a - g) * b1), True),
    ]


def micro(args) -> list[dict]:
    from gdtrain.core import fpenv

    with fpenv.flushed(args.flush, print):
        return _micro(args)


def _pair(rows: list, dtype, op: str, normal, subnormal, reps: int) -> None:
    rows.append({"dtype": np.dtype(dtype).name, "op": op, "normal_us": _median_cpu(normal, reps) * 1e6,
                 "subnormal_us": _median_cpu(subnormal, reps) * 1e6})


def _micro(args) -> list[dict]:
    from gdtrain.core import compute, fpenv

    rng = np.random.default_rng(0)
    rows: list[dict] = []
    reps = args.reps
    flags = "on" if fpenv.flushing() else "off"
    print(f"# {compute.label(compute.describe())} -> 1 thread; FTZ/DAZ {flags}; "
          f"process CPU time, median of {reps}")
    with compute.threads(1):
        for dtype in args.dtype:
            dt = np.dtype(dtype)
            for (m, k, n), what, which in PRODUCTS:
                a = rng.standard_normal((m, k)).astype(dt)
                b = rng.standard_normal((k, n)).astype(dt)
                if which == "A":
                    sa, sb = subnormal_like(a.shape, dt, rng), b
                else:
                    sa, sb = a, subnormal_like(b.shape, dt, rng)
                _pair(rows, dt, f"{m}x{k}x{n} {what}", lambda a=a, b=b: a @ b,
                      lambda a=sa, b=sb: a @ b, reps)
            g = rng.standard_normal(SIZE).astype(dt)
            normal, sub = rng.standard_normal(SIZE).astype(dt), subnormal_like(SIZE, dt, rng)
            for what, f, in_place in _elementwise(dt):
                def call(f=f, src=normal, in_place=in_place, buf=np.empty_like(g), g=g):
                    if in_place:  # from the same operands every time, copy included
                        np.copyto(buf, src)
                        return f(buf, g)
                    return f(src, g)

                with np.errstate(all="ignore"):  # the divides overflow, as they would in a step
                    _pair(rows, dt, f"{SIZE:,} values: {what}", call, functools.partial(call, src=sub), reps)
            # softmax's exp(x - max) of a very confident row: normal inputs, subnormal results
            lo, hi = (-103.0, -88.0) if dt == np.float32 else (-744.0, -709.0)
            under = rng.uniform(lo, hi, SIZE).astype(dt)
            over = rng.uniform(-80.0, -60.0, SIZE).astype(dt)
            _pair(rows, dt, f"{SIZE:,} values: exp(x), results subnormal (x in [{lo:g}, {hi:g}]) "
                  "vs normal (x in [-80, -60])", lambda x=over: np.exp(x), lambda x=under: np.exp(x), reps)
    print("| dtype | operation | normal µs | subnormal µs | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['dtype']} | {r['op']} | {r['normal_us']:.0f} | {r['subnormal_us']:.0f} | "
              f"{r['subnormal_us'] / r['normal_us']:.2f} |")
    return rows


# --------------------------------------------------------------------------- long runs

def _intermediates(t) -> dict[str, int]:
    """Subnormal counts in what the next step computes, by a pass that changes nothing."""
    from gdtrain.core.models import ACTIVATIONS

    step = t.step_count
    x, y = t.stream.batch(step)
    params = t.params
    out, cache = t.model.forward(params, x, (t.seed, step))
    counts = {"logits": count_subnormal(out)}
    if hasattr(t.loss, "predict") and t.config["loss"]["name"] != "mse":
        counts["probabilities"] = count_subnormal(t.loss.predict(out))
    _, dout = t.loss.value_and_grad(out.copy(), y)
    counts["d_outputs"] = count_subnormal(dout)
    grads = t.model.backward(params, cache, dout, t.trainable_set)
    if isinstance(cache, tuple):  # the mlp: each hidden layer's activations and gradient
        inputs, outputs, masks = cache
        counts["activations"] = sum(count_subnormal(h) for h in outputs)
        dact = ACTIVATIONS[t.config["model"].get("activation", "relu")][1]
        rate = t.config["model"].get("dropout", 0.0)
        rates = rate if isinstance(rate, list) else [rate] * (len(inputs) - 1)
        d, back = dout, 0
        for i in reversed(range(1, len(inputs))):  # the model's backward, keeping each d
            d = d @ params[f"W{i + 1}"].T
            if masks[i - 1] is not None:
                d *= masks[i - 1]
                d /= d.dtype.type(1 - rates[i - 1])
            if dact is not None:
                d *= dact(outputs[i - 1])
            back += count_subnormal(d)
        counts["hidden_gradients"] = back
    for penalty in t.penalties:
        penalty.add_gradient(grads, params)
    counts["gradients"] = sum(count_subnormal(g) for g in grads.values())
    if t.clip is not None:
        t.clip.clip(grads)
    state = copy.deepcopy(t.opt_state)
    updates, _ = t.optimizer.update(grads, state, t.lr(step), params)
    counts["updates"] = sum(count_subnormal(u) for u in updates.values())
    return counts


def _state_counts(t) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, arr in t.state_arrays().items():
        group = name.split("/")[0] if not name.startswith("slot/") else "/".join(name.split("/")[:2])
        counts[group] = counts.get(group, 0) + count_subnormal(arr)
    return counts


def _per_array(t) -> dict[str, int]:
    return {name: n for name, arr in t.state_arrays().items() if (n := count_subnormal(arr))}


def long_run(args) -> list[dict]:
    from gdtrain.config.loading import load
    from gdtrain.core import compute, fpenv
    from gdtrain.core.train import Trainer
    from gdtrain.data import load_dataset

    overrides = list(args.set) + ["run.threads=1"]
    config = load(args.config, overrides)
    dataset = load_dataset(config["data"], config["run"]["dtype"])
    rows = []
    with compute.threads(1), fpenv.flushed(args.flush, print):
        t = Trainer(config, dataset)
        flushing = fpenv.flushing()
        print(f"# {args.config} {' '.join(args.set)}: {compute.label(compute.describe())}, "
              f"FTZ/DAZ {'on' if flushing else 'off'}; {args.steps} steps; CPU s per {args.every} steps",
              flush=True)
        done = 0
        while done < args.steps:
            n = min(args.every, args.steps - done)
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                t.step()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            done += n
            row = {"step": t.step_count, "cpu_s": cpu * args.every / n, "wall_s": wall * args.every / n,
                   **_state_counts(t), **_intermediates(t)}
            rows.append(row)
            counts = " ".join(f"{k}={v}" for k, v in row.items()
                              if k not in ("step", "cpu_s", "wall_s") and v)
            print(f"step {row['step']:>7}  cpu {row['cpu_s']:.3f} s  wall {row['wall_s']:.3f} s  "
                  f"subnormal: {counts or 'none'}", flush=True)
        print("# arrays holding subnormals at the end:", _per_array(t) or "none", flush=True)
        if args.save:
            np.savez(args.save, _step=np.array(t.step_count), **t.state_arrays())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "set": args.set, "flush": args.flush, "rows": rows},
                      f, indent=1)
    return rows


def paired(args) -> dict:
    """CPU time of the same `--every` steps from the same state, flushing off and on, in
    alternating rounds: what flushing gives back where a run holds subnormals."""
    from gdtrain.config.loading import load
    from gdtrain.core import compute, fpenv
    from gdtrain.core.train import Trainer
    from gdtrain.data import load_dataset

    config = load(args.config, list(args.set) + ["run.threads=1"])
    dataset = load_dataset(config["data"], config["run"]["dtype"])
    times: dict[bool, list[float]] = {False: [], True: []}
    with compute.threads(1):
        t = Trainer(config, dataset)
        saved = np.load(args.state)
        t.load_state({k: saved[k] for k in t.state_arrays()}, int(saved["_step"]))
        start = {k: v.copy() for k, v in t.state_arrays().items()}
        step0 = t.step_count
        print(f"# {args.config} {' '.join(args.set)} from step {step0} ({args.state}): "
              f"{compute.label(compute.describe())}; CPU s per {args.every} steps", flush=True)
        print(f"# state holds subnormals: {_per_array(t) or 'none'}", flush=True)
        for r in range(args.rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                t.load_state(start, step0)
                with fpenv.flushed(on):
                    c0 = time.process_time()
                    for _ in range(args.every):
                        t.step()
                    times[on].append(time.process_time() - c0)
            print(f"round {r + 1}: off {times[False][-1]:.3f} s, on {times[True][-1]:.3f} s", flush=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"median: flush off {off:.3f} s, flush on {on:.3f} s per {args.every} steps: off/on {off / on:.3f}")
    return {"off": times[False], "on": times[True]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.subnormals", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("micro", help="single operations over normal vs subnormal operands")
    m.add_argument("--reps", type=int, default=15)
    m.add_argument("--dtype", type=lambda s: s.split(","), default=["float32", "float64"])
    m.add_argument("--flush", action="store_true", help="set FTZ/DAZ first")
    m.add_argument("--json")
    r = sub.add_parser("long", help="train a config; count subnormals and time every N steps")
    r.add_argument("config")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--steps", type=int, default=50_000)
    r.add_argument("--every", type=int, default=500)
    r.add_argument("--flush", action="store_true",
                   help="set FTZ/DAZ for the run (run.flush_subnormals: true)")
    r.add_argument("--json")
    r.add_argument("--save", help="write the final state arrays to this .npz")
    q = sub.add_parser("paired", help="time the same steps from a saved state, flushing off vs on")
    q.add_argument("config")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--state", required=True, help="an .npz written by `long --save`")
    q.add_argument("--every", type=int, default=500)
    q.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    if args.command == "paired":
        paired(args)
        return 0
    rows = micro(args) if args.command == "micro" else long_run(args)
    if args.command == "micro" and args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
