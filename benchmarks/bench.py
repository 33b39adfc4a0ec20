"""gdtrain's training speed side by side with a minimal NumPy loop and PyTorch CPU eager.

    python -m benchmarks.bench [--reps 5] [--workloads mlp,softmax,mlp64] [--threads N]
                               [--clock wall|cpu] [--coretype SkylakeX] [--json FILE]

Every measurement runs in a fresh subprocess (clean peak RSS, no state carried from one
implementation to the next), and the repetitions are interleaved: each round runs every
(workload, implementation) once, in an order rotated from round to round, so that load
from other processes on the machine spreads over all of them instead of landing on one.
Each subprocess warms up for a few steps, then times whole epochs. The table reports
the median and the minimum over all epochs of all rounds; ratios use the minima (the
least disturbed figure on a shared machine) and the medians. On a machine other jobs
keep busy, `--threads 1 --clock cpu` gives steady figures: each process's own CPU time,
with no idle BLAS thread spinning into it.

Implementations:
  gdtrain      the tool's Trainer.step() driven for an epoch (what one training step costs)
  gdtrain-run  run.loop.train() with the config's logging and checkpoint cadence, silent
               reporter, timed between steps: the tool's whole loop
  numpy        benchmarks/minimal_numpy.py: the same math, hand-written, nothing else
  torch        benchmarks/torch_loops.py: PyTorch eager (only when torch imports)

Before timing, a check that the implementations compute the same thing: from the same
initial values and batches, the parameters after 30 steps, as the largest difference
relative to each parameter's scale. Only float32 rounding separates them (gdtrain's loss
adds up each row's classes in another order than the minimal loop; PyTorch uses MKL).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import roofline

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = "data/mnist"
WARMUP_STEPS = 20
CLOCKS = {"wall": "epoch_seconds", "cpu": "epoch_cpu_seconds"}
# sgemm peak: the best over square products and the MLP's own largest product
PEAK_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (200, 784, 500)]
CHECK_STEPS = 30


def _mlp_flops(d_in=784, hidden=500, k=10):
    # forward x·W1, h·W2; backward h^T·d, d·W2^T, x^T·dh, 2 flops per multiply-add. No
    # gradient with respect to the input is computed, so the first layer has two products,
    # not three (counting three gives the 2.35 MFLOP per sample quoted in issue 5).
    return 2 * 2 * d_in * hidden + 3 * 2 * hidden * k


def _softmax_flops(d_in=784, k=10):
    # forward x·W, backward x^T·d (no gradient with respect to the input)
    return 2 * 2 * d_in * k


# the trainable values the update touches, the per-parameter slots, and whether an EMA
# shadows them (benchmarks/roofline.py counts the unavoidable traffic from these)
MLP_UPDATE = {"values": 784 * 500 + 500 + 500 * 10 + 10, "slots": 1, "ema": True}  # momentum

WORKLOADS = {
    "mlp": {
        "title": "MLP 784-500-10, batch 200, momentum+decay+L2+EMA",
        "config": "configs/mnist_mlp.yaml", "dtype": "float32",
        "flops": _mlp_flops(), "epochs": 2, "impls": ("gdtrain", "gdtrain-run", "numpy", "torch"),
        "update": MLP_UPDATE,
    },
    "softmax": {
        "title": "softmax regression, batch 100, sum CE, SGD",
        "config": "configs/mnist_softmax.yaml", "dtype": "float32",
        "flops": _softmax_flops(), "epochs": 6, "impls": ("gdtrain", "gdtrain-run", "numpy", "torch"),
        "update": {"values": 784 * 10 + 10, "slots": 0, "ema": False},  # SGD: W, b
    },
    "mlp64": {
        "title": "MLP as above in float64 (run.dtype: float64)",
        "config": "configs/mnist_mlp.yaml", "dtype": "float64",
        "flops": _mlp_flops(), "epochs": 1, "impls": ("gdtrain", "numpy"),
        "update": MLP_UPDATE,
    },
}


# ---------------------------------------------------------------- in the child process


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _blas_info() -> dict:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        import numpy as np

        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"blas": f"{cfg.get('name')} {cfg.get('version')}", "source": "numpy.show_config",
                "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    if not pools:
        return {"blas": "unknown"}
    p = pools[0]
    return {"blas": f"{p['internal_api']} {p.get('version')}", "kernel": p.get("architecture"),
            "threads": p["num_threads"], "threading": p.get("threading_layer"), "source": "threadpoolctl"}


def _setup(workload: str):
    from gdtrain.config.loading import load
    from gdtrain.data import load_dataset

    spec = WORKLOADS[workload]
    cfg = load(ROOT / spec["config"], [f"run.dtype={spec['dtype']}", f"data.dir={ROOT / DATA_DIR}"])
    dataset = load_dataset(cfg["data"], cfg["run"]["dtype"])
    return spec, cfg, dataset


def _minimal_fn(workload: str, impl: str, cfg: dict):
    """The hand-written loop of a workload, taking the config's batch size."""
    if impl == "torch":
        from benchmarks import torch_loops as mod
    else:
        from benchmarks import minimal_numpy as mod
    fn = mod.softmax_sgd if workload == "softmax" else mod.mlp_momentum_ema
    return functools.partial(fn, batch=cfg["train"]["batch_size"])


def _loop_args(trainer):
    """Initial parameters and the row order of gdtrain's own stream, for the hand-written loops."""
    params = {k: v.copy() for k, v in trainer.params.items()}
    return params, trainer.stream.permutation


def child_time(workload: str, impl: str, epochs: int, threads: int | None) -> dict:
    from gdtrain.core.train import Trainer

    _, cfg, dataset = _setup(workload)
    steps_per_epoch = len(dataset.train) // cfg["train"]["batch_size"]
    times: list[tuple[float, float]] = []  # (wall, cpu) per epoch
    extra: dict = {}
    if impl == "gdtrain":
        trainer = Trainer(cfg, dataset)
        for _ in range(WARMUP_STEPS):
            trainer.step()
        for _ in range(epochs):
            t0 = _clocks()
            for _ in range(steps_per_epoch):
                trainer.step()
            times.append(_since(t0))
    elif impl == "gdtrain-run":
        times = _time_runner(cfg, dataset, steps_per_epoch, epochs)
    else:
        if impl == "torch":
            import torch

            torch.set_num_threads(threads or os.cpu_count())
            extra["torch"] = torch.__version__
            extra["torch_threads"] = torch.get_num_threads()
        fn = _minimal_fn(workload, impl, cfg)
        params, order = _loop_args(Trainer(cfg, dataset))
        # the hand-written loops gather from float features: decoding them here, outside the
        # timing, keeps MNIST's bytes-backed split out of gdtrain's own memory figure
        x, y = dataset.train.x, dataset.train.y
        fn(x, y, params, order, WARMUP_STEPS)
        for _ in range(epochs):
            t0 = _clocks()
            fn(x, y, params, order, steps_per_epoch)
            times.append(_since(t0))
    return {"epoch_seconds": [w for w, _ in times], "epoch_cpu_seconds": [c for _, c in times],
            "examples_per_epoch": steps_per_epoch * cfg["train"]["batch_size"],
            "steps_per_epoch": steps_per_epoch,
            "max_rss_mb": _max_rss_mb(), **_blas_info(), **extra}


def _clocks() -> tuple[float, float]:
    # process CPU time counts every thread of this process and nothing of the others'
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


def _time_runner(cfg: dict, dataset, steps_per_epoch: int, epochs: int) -> list[float]:
    import tempfile

    from gdtrain.run.hooks import Reporter
    from gdtrain.run.loop import RunOptions, train

    marks = [WARMUP_STEPS + e * steps_per_epoch for e in range(epochs + 1)]
    stamps: dict[int, tuple[float, float]] = {}

    class Stopwatch(Reporter):
        def step(self, result):
            if result.step in marks:
                stamps[result.step] = _clocks()

    with tempfile.TemporaryDirectory(prefix="gdtrain-bench-") as tmp:
        cfg["run"]["dir"] = tmp
        cfg["train"].update(steps=marks[-1], epochs=None)
        train(cfg, Stopwatch(), RunOptions(handle_signals=False), dataset)
    spans = zip(marks, marks[1:], strict=False)
    return [(stamps[b][0] - stamps[a][0], stamps[b][1] - stamps[a][1]) for a, b in spans]


def child_peak() -> dict:
    """Best sgemm/dgemm GFLOP/s on big square matrices, and the cost of subnormal operands."""
    import numpy as np

    out = {}
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        best_wall = best_cpu = 0.0
        for m, k, n in PEAK_SHAPES:
            a, b = rng.random((m, k)).astype(dtype), rng.random((k, n)).astype(dtype)
            c = np.empty((m, n), dtype)
            np.matmul(a, b, out=c)
            repeat = max(1, int(2e9 / (2 * m * k * n)))  # ~2 GFLOP per timing
            runs = [_timed(lambda a=a, b=b, c=c, r=repeat: [np.matmul(a, b, out=c) for _ in range(r)])
                    for _ in range(5)]
            flop = 2 * m * k * n * repeat
            best_wall = max(best_wall, flop / min(w for w, _ in runs) / 1e9)
            best_cpu = max(best_cpu, flop / min(c for _, c in runs) / 1e9)
        out[f"{dtype}_gflops"], out[f"{dtype}_gflops_cpu"] = best_wall, best_cpu
    # a momentum-style update on normal vs subnormal float32 values
    m = 1 << 19
    times = {}
    for name, value in (("normal", 1e-3), ("subnormal", 1e-40)):
        acc, g = np.full(m, value, np.float32), np.zeros(m, np.float32)

        def update(acc=acc, g=g):
            acc *= np.float32(1.0)
            acc += g

        times[name] = min(_timed(update)[0] for _ in range(50))
    out["subnormal_slowdown"] = times["subnormal"] / times["normal"]
    out.update(roofline.measure_bandwidth())
    return {**out, "max_rss_mb": _max_rss_mb(), **_blas_info()}


def _timed(fn) -> tuple[float, float]:
    t0 = _clocks()
    fn()
    return _since(t0)


def child_check(workload: str, with_torch: bool) -> dict:
    """Do gdtrain, the minimal loop and PyTorch compute the same thing? (after CHECK_STEPS)"""
    import numpy as np

    from gdtrain.core.train import Trainer

    _, cfg, dataset = _setup(workload)
    x, y = dataset.train.x, dataset.train.y
    trainer = Trainer(cfg, dataset)
    results = {}
    for impl in ("numpy", "torch") if with_torch else ("numpy",):
        params, order = _loop_args(trainer)
        got = _minimal_fn(workload, impl, cfg)(x, y, params, order, CHECK_STEPS)[0]
        results[impl] = got
    for _ in range(CHECK_STEPS):
        trainer.step()
    out = {}
    for impl, got in results.items():
        same = all(np.array_equal(got[k], trainer.params[k]) for k in got)
        # largest difference relative to the parameter's scale (its largest magnitude)
        worst = max(float(np.max(np.abs(got[k] - want)) / (np.max(np.abs(want)) or 1))
                    for k, want in trainer.params.items())
        out[impl] = {"identical": same, "max_rel_diff": worst}
    return out


# ---------------------------------------------------------------- in the parent


def _child(args: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench", "--child", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {' '.join(args)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_available(env: dict) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True)
    return probe.returncode == 0


def _machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import numpy as np

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}


def run(args) -> dict:
    env = dict(os.environ)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
    if args.coretype == "auto":
        # Some machines pin an old kernel for the sake of older OpenBLAS builds; a current
        # one detects the CPU itself. Both pins go together: L2_SIZE is tuned to CORETYPE.
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    elif args.coretype:
        env["OPENBLAS_CORETYPE"] = args.coretype
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with_torch = not args.no_torch and _torch_available(env)
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    jobs = [("peak", "")]
    for w in workloads:
        jobs += [(w, impl) for impl in WORKLOADS[w]["impls"] if impl != "torch" or with_torch]

    started = datetime.datetime.now().astimezone()
    checks = {w: _child(["check", w, str(int(with_torch))], env) for w in workloads if w != "mlp64"}
    samples: dict[tuple, list[dict]] = {job: [] for job in jobs}
    loads = [os.getloadavg()[0]]
    for rep in range(args.reps):
        shift = rep % len(jobs)
        for w, impl in jobs[shift:] + jobs[:shift]:
            if w == "peak":
                samples[(w, impl)].append(_child(["peak"], env))
            else:
                epochs = str(args.epochs or WORKLOADS[w]["epochs"])
                samples[(w, impl)].append(_child(["time", w, impl, epochs, str(args.threads or 0)], env))
            loads.append(os.getloadavg()[0])
        print(f"round {rep + 1}/{args.reps} done (load average {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    return {
        "date": started.isoformat(timespec="seconds"), "machine": _machine(),
        "blas": {k: v for k, v in samples[("peak", "")][0].items() if k not in ("max_rss_mb",)
                 and "gflops" not in k and k != "subnormal_slowdown" and not k.endswith("_gbs")},
        "threads_requested": args.threads, "reps": args.reps, "clock": args.clock,
        "load_average": [min(loads), max(loads)],
        "checks": checks, "samples": {f"{w}/{impl}": s for (w, impl), s in samples.items()},
    }


def _peaks(raw: dict) -> tuple[float, float]:
    """Best sgemm and dgemm GFLOP/s over all rounds, on the clock the table uses."""
    suffix = "_cpu" if raw["clock"] == "cpu" else ""
    runs = raw["samples"]["peak/"]
    return (max(s[f"float32_gflops{suffix}"] for s in runs), max(s[f"float64_gflops{suffix}"] for s in runs))


def _bandwidths(raw: dict) -> tuple[float, float] | None:
    """Best cache-sized and DRAM-sized bandwidth (GB/s) over all rounds (None: not measured)."""
    runs = raw["samples"]["peak/"]
    if "cache_gbs" not in runs[0]:
        return None
    return max(s["cache_gbs"] for s in runs), max(s["dram_gbs"] for s in runs)


def _roofline(raw: dict, spec: dict, examples: int, steps: int | None) -> dict | None:
    """The epoch's floor (benchmarks/roofline.py): products at peak + update traffic at bandwidth."""
    bands = _bandwidths(raw)
    if bands is None or not steps:
        return None
    peak = _peaks(raw)[1 if spec["dtype"] == "float64" else 0]
    u = spec["update"]
    itemsize = 8 if spec["dtype"] == "float64" else 4
    nbytes = steps * roofline.update_bytes(u["values"], u["slots"], u["ema"], itemsize)
    products, traffic = roofline.floor_seconds(spec["flops"] * examples, peak, nbytes, bands[0])
    _, traffic_dram = roofline.floor_seconds(0, 1, nbytes, bands[1])
    return {"seconds": products + traffic, "products": products, "traffic": traffic, "bytes": nbytes,
            "seconds_dram": products + traffic_dram, "cache_gbs": bands[0], "dram_gbs": bands[1]}


def summarize(raw: dict) -> list[dict]:
    peak, peak64 = _peaks(raw)
    rows = []
    for key, runs in raw["samples"].items():
        w, impl = key.split("/")
        if w == "peak":
            continue
        spec = WORKLOADS[w]
        epoch = [t for r in runs for t in r[CLOCKS[raw["clock"]]]]
        best, med = min(epoch), statistics.median(epoch)
        n = runs[0]["examples_per_epoch"]  # examples in each timed epoch (the whole training split)
        gflops = spec["flops"] * n / best / 1e9
        floor = _roofline(raw, spec, n, runs[0].get("steps_per_epoch"))
        rows.append({
            "workload": w, "impl": impl, "median": med, "min": best, "samples_per_s": n / best,
            "gflops": gflops, "peak_fraction": gflops / (peak64 if spec["dtype"] == "float64" else peak),
            "rss_mb": max(r["max_rss_mb"] for r in runs), "epochs": len(epoch),
            **({"roofline": floor, "roofline_fraction": floor["seconds"] / best} if floor else {}),
        })
    by = {(r["workload"], r["impl"]): r for r in rows}
    for r in rows:
        for ref in ("numpy", "torch"):
            other = by.get((r["workload"], ref))
            if other and ref != r["impl"]:
                r[f"vs_{ref}"] = r["min"] / other["min"]
                r[f"vs_{ref}_median"] = r["median"] / other["median"]
    return rows


def render(raw: dict, rows: list[dict]) -> str:
    m, blas = raw["machine"], raw["blas"]
    peak, peak64 = _peaks(raw)
    subn = min(s["subnormal_slowdown"] for s in raw["samples"]["peak/"])
    plural = "" if blas.get("threads") == 1 else "s"
    lines = [
        f"date {raw['date']}; {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}",
        f"BLAS {blas.get('blas')} kernel {blas.get('kernel', '?')}, {blas.get('threads')} thread{plural} "
        f"({blas.get('source')}); sgemm peak {peak:.0f} GFLOP/s, dgemm {peak64:.0f} GFLOP/s "
        f"(best of 1024², 2048² and 200×784×500, 5 × {raw['reps']} rounds); "
        f"a float32 update on subnormal values takes {subn:.2f}× the time on normal ones",
        f"{raw['reps']} interleaved rounds, {raw['clock']} clock; load average during the run "
        f"{raw['load_average'][0]:.2f}–{raw['load_average'][1]:.2f} on {m['cores']} cores",
        "",
        "| workload | impl | s/epoch median | s/epoch min | × numpy (min / median) | × torch (min / median) "
        "| samples/s | GFLOP/s (% of peak) | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        def ratio(ref, r=r):
            return f"{r[f'vs_{ref}']:.2f} / {r[f'vs_{ref}_median']:.2f}" if f"vs_{ref}" in r else "-"

        lines.append(
            f"| {r['workload']} | {r['impl']} | {r['median']:.3f} | {r['min']:.3f} | {ratio('numpy')} | "
            f"{ratio('torch')} | {r['samples_per_s']:,.0f} | {r['gflops']:.1f} "
            f"({100 * r['peak_fraction']:.0f}%) | {r['rss_mb']:.0f} |"
        )
    lines.append("")
    for w, check in raw["checks"].items():
        for impl, c in check.items():
            diff = f"largest difference {c['max_rel_diff']:.1e} of the parameter's scale"
            verdict = "bit-identical" if c["identical"] else diff
            lines.append(f"check {w}: gdtrain vs {impl} after {CHECK_STEPS} steps: {verdict}")
    for r in rows:
        if r["impl"] == "gdtrain" and "roofline" in r:
            f = r["roofline"]
            lines.append(
                f"roofline {r['workload']}: products at peak {f['products']:.3f} s + update traffic "
                f"{f['bytes'] / 1e6:,.0f} MB at {f['cache_gbs']:.0f} GB/s (update-sized arrays) "
                f"{f['traffic']:.3f} s = {f['seconds']:.3f} s/epoch; gdtrain's best epoch {r['min']:.3f} s "
                f"is at {100 * r['roofline_fraction']:.0f}% of it (with the state from DRAM, "
                f"{f['dram_gbs']:.0f} GB/s: {f['seconds_dram']:.3f} s, "
                f"{100 * f['seconds_dram'] / r['min']:.0f}%)")
    g64 = next((r for r in rows if r["workload"] == "mlp64" and r["impl"] == "gdtrain"), None)
    g32 = next((r for r in rows if r["workload"] == "mlp" and r["impl"] == "gdtrain"), None)
    if g64 and g32:
        lines.append(f"float64 / float32 (gdtrain MLP, min): {g64['min'] / g32['min']:.2f}×")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, rest = argv[1], argv[2:]
        if kind == "time":
            result = child_time(rest[0], rest[1], int(rest[2]), int(rest[3]) or None)
        elif kind == "peak":
            result = child_peak()
        else:
            result = child_check(rest[0], rest[1] == "1")
        print(json.dumps(result))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--workloads", default="mlp,softmax,mlp64",
                   help="comma-separated: " + ", ".join(WORKLOADS))
    p.add_argument("--epochs", type=int, default=0, help="epochs timed per subprocess (default per workload)")
    p.add_argument("--threads", type=int, default=0, help="BLAS/OpenMP threads (default: library default)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time (default), or the process's CPU time: steadier on a busy machine, "
                   "meaningful with --threads 1 (idle BLAS threads spin and count as CPU time)")
    p.add_argument("--coretype", default="",
                   help="set OPENBLAS_CORETYPE for the measurements (e.g. SkylakeX, Haswell), "
                        "or 'auto' to unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE so that "
                        "OpenBLAS picks the CPU's own kernel (default: the environment's)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it imports")
    p.add_argument("--json", type=Path, help="also write the raw samples and the table rows here")
    args = p.parse_args(argv)
    raw = run(args)
    rows = summarize(raw)
    print(render(raw, rows))
    if args.json:
        args.json.write_text(json.dumps({**raw, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
