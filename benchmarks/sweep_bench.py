"""Wall time of 8 trials of configs/mnist_softmax.yaml (2 learning rates x 4 seeds):
a plain in-process loop over api.train, and `gdtrain sweep` in-process (--workers 1, in a
pipe and on a terminal), with a 2-process pool (--workers 2) and with Ray (--backend ray).

    python -m benchmarks.sweep_bench [--reps 5] [--threads 1] [--modes plain,sweep1,...]

Each round runs every mode once, in a fresh directory (nothing on disk to reuse), in
turn; the figures are medians over the rounds, with the range. "sweep overhead" is the
sweep command's wall time minus the plain loop's, per trial, as a share of a trial (it
includes the command's fixed start-up); "in one process" compares api.sweep with a loop
of api.train in one warm process, which leaves the sweep's own per-trial cost.
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIALS = {"optimizer.learning_rate": [0.005, 0.01], "seeds": [0, 1, 2, 3]}

PLAIN = """
import sys, time
t0 = time.perf_counter()
from gdtrain import api
from gdtrain.data import load_dataset
root = sys.argv[1]
dataset = None
for lr in {lrs}:
    for seed in {seeds}:
        config = api.load_config("configs/mnist_softmax.yaml", {{"optimizer.learning_rate": lr,
            "run.seed": seed, "run.dir": root, "run.name": f"lr{{lr}}_s{{seed}}", "run.threads": {threads}}})
        dataset = dataset or load_dataset(config["data"], config["run"]["dtype"])
        api.train(config, dataset=dataset)
print(time.perf_counter() - t0)
"""


# The same two things in one process, imports warm, in alternating order: a loop of
# api.train and api.sweep, each timing what it spends outside api.train (the training,
# evaluation and checkpoints of the runs, the same on both sides). The difference is what
# the sweep itself costs: checking the file and the run directories, dispatching,
# progress, sweep.json/csv. Both load the data once.
INPROC = """
import json, shutil, sys, time
from gdtrain import api
from gdtrain.data import load_dataset
from gdtrain.run import loop
root, sweep, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
inside = [0.0]
# the run layer's train: what api.train and a sweep's trials both call (at call time)
train = loop.train
def timed(*args, **kwargs):
    t = time.perf_counter()
    try:
        return train(*args, **kwargs)
    finally:
        inside[0] += time.perf_counter() - t
loop.train = timed
def plain():
    dataset = None
    for lr in {lrs}:
        for seed in {seeds}:
            config = api.load_config("configs/mnist_softmax.yaml", {{"optimizer.learning_rate": lr,
                "run.seed": seed, "run.dir": root + "/plain", "run.name": f"lr{{lr}}_s{{seed}}",
                "run.threads": {threads}}})
            dataset = dataset or load_dataset(config["data"], config["run"]["dtype"])
            api.train(config, dataset=dataset)
def swept():
    api.sweep(sweep)
out = []
for rep in range(reps):
    row = {{}}
    order = [("plain", plain), ("sweep", swept)]
    for name, work in (order if rep % 2 == 0 else order[::-1]):
        shutil.rmtree(root, ignore_errors=True)
        inside[0] = 0.0
        t0 = time.perf_counter()
        work()
        wall = time.perf_counter() - t0
        row[name] = {{"wall": wall, "training": inside[0], "outside": wall - inside[0]}}
    out.append(row)
print(json.dumps(out))
"""


def sweep_file(root: Path, threads: int | None) -> Path:
    base = REPO / "configs" / "mnist_softmax.yaml"
    path = root / "sweep8.yaml"
    path.write_text(
        f"config: {base}\n"
        f"parameters:\n"
        f"  optimizer.learning_rate: {{values: {TRIALS['optimizer.learning_rate']}}}\n"
        f"  run.dir: {{value: {root / 'runs'}}}\n"
        + (f"  run.threads: {{value: {threads}}}\n" if threads else "")
        + f"seeds: {TRIALS['seeds']}\n")
    return path


def run_mode(mode: str, root: Path, threads: int | None) -> dict:
    shutil.rmtree(root / "runs", ignore_errors=True)
    gdtrain = [sys.executable, "-m", "gdtrain"]
    path = sweep_file(root, threads)
    if mode == "plain":
        code = PLAIN.format(lrs=TRIALS["optimizer.learning_rate"], seeds=TRIALS["seeds"],
                            threads=repr(threads))
        cmd = [sys.executable, "-c", code, str(root / "runs")]
    elif mode == "sweep1":
        cmd = [*gdtrain, "sweep", str(path), "--json"]
    elif mode == "sweep1-tty":  # the live table drawn on a terminal (script(1) gives one)
        cmd = ["script", "-qec", " ".join([*gdtrain, "sweep", str(path)]), "/dev/null"]
    elif mode == "sweep2":
        cmd = [*gdtrain, "sweep", str(path), "--workers", "2", "--json"]
    elif mode == "inproc":
        code = INPROC.format(lrs=TRIALS["optimizer.learning_rate"], seeds=TRIALS["seeds"],
                             threads=repr(threads))
        cmd = [sys.executable, "-c", code, str(root / "runs"), str(path), "2"]
    elif mode == "ray":
        cmd = [*gdtrain, "sweep", str(path), "--backend", "ray", "--json"]
    else:
        raise SystemExit(f"unknown mode {mode}")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed: {done.stderr[-2000:]}")
    out = {"wall": wall}
    if mode == "inproc":
        out["rows"] = json.loads(done.stdout)
    if mode in ("sweep1", "sweep2", "ray"):
        result = json.loads(done.stdout)
        out["backend_start"] = result.get("backend_seconds")
        out["trial_seconds"] = [t["seconds"] for t in result["trials"]]
        assert [t["status"] for t in result["trials"]] == ["finished"] * 8
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--modes", default="plain,sweep1,sweep1-tty,inproc,sweep2,ray")
    parser.add_argument("--threads", type=int, default=None,
                        help="run.threads for every trial (default: the BLAS's own, one per core)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    root = Path(tempfile.mkdtemp(prefix="gdtrain-sweep-bench-"))
    results: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for rep in range(args.reps):
            for mode in modes:
                results[mode].append(run_mode(mode, root, args.threads))
                wall = results[mode][-1]["wall"]
                print(f"round {rep + 1} {mode}: {wall:.2f}s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    threads = f"run.threads {args.threads}" if args.threads else "BLAS threads: the library's"
    print(f"8 trials of configs/mnist_softmax.yaml, {os.cpu_count()} cores, {threads}, {args.reps} "
          "interleaved rounds (median, range):")
    for mode in modes:
        walls = [r["wall"] for r in results[mode]]
        line = f"  {mode:11s} {statistics.median(walls):6.2f}s  ({min(walls):.2f}-{max(walls):.2f})"
        starts = [r["backend_start"] for r in results[mode] if r.get("backend_start") is not None]
        if starts:
            line += f"; backend start-up {statistics.median(starts):.2f}s"
        trials = [s for r in results[mode] for s in r.get("trial_seconds", [])]
        if trials:
            line += f"; a trial {statistics.median(trials):.3f}s"
        print(line)
    if "inproc" in results:
        rows = [row for r in results["inproc"] for row in r["rows"]]
        plain_out = statistics.median(r["plain"]["outside"] for r in rows)
        sweep_out = statistics.median(r["sweep"]["outside"] for r in rows)
        trial = statistics.median(r["plain"]["training"] for r in rows) / 8
        per_trial = (sweep_out - plain_out) / 8
        print(f"  in one process, {len(rows)} rounds: outside api.train, the plain loop "
              f"{plain_out * 1000:.0f} ms, api.sweep {sweep_out * 1000:.0f} ms (for 8 trials): "
              "the sweep's own cost "
              f"{per_trial * 1000:+.1f} ms per trial, {per_trial / trial * 100:+.1f}% of a trial "
              f"({trial:.3f}s in api.train)")
    if "plain" in results and "sweep1" in results:
        plain = statistics.median(r["wall"] for r in results["plain"])
        for mode in ("sweep1", "sweep1-tty"):
            if mode in results:
                sweep = statistics.median(r["wall"] for r in results[mode])
                per_trial = (sweep - plain) / 8
                print(f"  sweep overhead ({mode}): {per_trial * 1000:+.0f} ms per trial, "
                      f"{per_trial / (plain / 8) * 100:+.1f}% of a trial in the plain loop")


if __name__ == "__main__":
    main()
