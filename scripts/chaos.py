#!/usr/bin/env python3
"""Chaos test: real MNIST trainings killed with SIGKILL at random moments, resumed each
time until they finish, then compared bit for bit with a run that was never stopped.

    .venv/bin/python scripts/chaos.py 50            # or: make chaos N=50

By default the run is configs/mnist_mlp.yaml cut to 300 steps with a checkpoint every
25: momentum slots, EMA shadows, a staircase schedule and L2 all have to come back
exactly, and its 4.8 MB checkpoints take long enough to write that some kills land
in the middle of a save.

Each of the N runs is started with `gdtrain run`, killed with kill -9 at a random
moment (one kill in five during start-up and data loading, one in four within 10 ms
of a save's temporary file appearing, the rest at a uniform moment of the training),
started again with the same command, and so on until a start runs to the end. After
every kill the run directory is checked: every checkpoint file present must verify
and the `latest` pointer must name one that exists. A finished run counts as
identical when every array of its final checkpoint (parameters, optimizer slots, EMA
shadows) has the same bytes as the reference run's, and its log holds the same
training losses. The runs use a private copy of the package, so that edits to the
working tree while chaos runs cannot change the code under test.

Prints one line per run and a summary; exits 0 only if all N runs ended identical.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gdtrain.errors import CheckpointError  # noqa: E402
from gdtrain.run import atomic, checkpoint  # noqa: E402
from gdtrain.run.rundir import RunDir  # noqa: E402

DEFAULT_SETTINGS = ["train.steps=300", "train.checkpoint_every=25", "train.log_every=25",
                    "train.keep_checkpoints=3"]
MAX_KILLS = 8  # after this many, a run is left to finish: chaos must end
STARTUP_SHARE = 0.2  # share of kills aimed at start-up (imports, data loading, resume)
SAVE_SHARE = 0.25  # share aimed at a save: within SAVE_WINDOW seconds of its temporary file appearing
SAVE_WINDOW = 0.01


@dataclass
class Outcome:
    index: int
    kills: int = 0
    mid_save: int = 0  # kills that left a temporary file: the save was cut short
    damaged: list[str] = field(default_factory=list)
    identical: bool = False
    log_identical: bool = False
    differs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def freeze_code(work: Path) -> tuple[Path, dict]:
    """(directory to run in, environment) for runs of a private copy of the gdtrain package.

    An edit to the working tree while chaos runs must not change the code under test:
    runs started after it would differ from the reference for a reason that has nothing
    to do with resuming. The runs start in the copy's directory, so `python -m gdtrain`
    imports the copy first; `data` links to the repository's, for relative data paths.
    """
    code = work / "code"
    shutil.copytree(REPO / "gdtrain", code / "gdtrain", ignore=shutil.ignore_patterns("__pycache__"))
    (code / "data").symlink_to(REPO / "data", target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    # one BLAS thread per run, as --jobs runs share the cores; the reference runs with the
    # same setting, so the comparison is like for like
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return code, env


def command(config: Path, run_root: Path, settings: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "gdtrain", "run", str(config), "-q", "--set", f"run.dir={run_root}"]
    for s in settings:
        cmd += ["--set", s]
    return cmd


def run_name(config: Path, settings: list[str]) -> str:
    from gdtrain.config.loading import load

    return load(config, settings)["run"]["name"]


def final_arrays(run_dir: Path) -> dict:
    """The arrays of a finished run's last checkpoint (the one `latest` names)."""
    return checkpoint.load(checkpoint.resolve_path(run_dir))[0]


def train_losses(run_dir: Path) -> list[tuple]:
    """(step, loss, lr) of each training record in a finished run's log. read_metrics skips
    a line that is not JSON; a kill can tear the last line, but the start that resumes
    drops torn lines (RunDir.truncate_metrics) before it logs, so a finished run has none."""
    return [(r["step"], r["loss"], r["lr"]) for r in RunDir(run_dir).read_metrics()
            if r.get("event") == "train"]


def check_after_kill(run_dir: Path) -> list[str]:
    """What a kill -9 must never leave: a checkpoint that fails to verify, a dangling pointer."""
    problems = []
    ckpts = run_dir / "checkpoints"
    names = set()
    for path in checkpoint.list_checkpoints(ckpts):
        names.add(path.name)
        try:
            checkpoint.load(path)
        except CheckpointError as exc:
            problems.append(str(exc))
    pointer = checkpoint.read_pointer(ckpts)
    if pointer is not None and pointer not in names:
        problems.append(f"latest names {pointer}, which does not exist")
    return problems


def saving(run_dir: Path) -> bool:
    """Whether a save is under way: its temporary file exists."""
    try:
        return any(p.name.startswith(atomic.TMP_PREFIX) for p in (run_dir / "checkpoints").iterdir())
    except OSError:
        return False


def started_training(run_dir: Path, pid: int) -> bool:
    status = RunDir(run_dir).read_status()  # {} while absent or half-written
    return status.get("pid") == pid and status.get("status") == "running"


def chaos_run(index: int, cmd: list[str], run_dir: Path, reference: dict, ref_losses: list,
              startup: float, training: float, rng: random.Random, where: tuple[Path, dict]) -> Outcome:
    out = Outcome(index)
    t0 = time.monotonic()
    while True:
        proc = subprocess.Popen(cmd, cwd=where[0], env=where[1], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        kill_now = out.kills < MAX_KILLS
        # The first start is always killed (well before its expected end); later ones may
        # outlive their kill moment (the machine may also run slower than the reference
        # did), which is how a run gets to finish.
        within = 0.9 * training if out.kills == 0 else 1.5 * training
        aim = rng.random()
        deadline = time.monotonic() + rng.uniform(0, startup) if aim < STARTUP_SHARE else None
        at_save = STARTUP_SHARE <= aim < STARTUP_SHARE + SAVE_SHARE
        training_seen = False
        while kill_now and proc.poll() is None:
            now = time.monotonic()
            if deadline is None:
                # stale temporaries of an earlier kill are removed before status says running
                training_seen = training_seen or started_training(run_dir, proc.pid)
                if training_seen and not at_save:
                    deadline = now + rng.uniform(0, within)
                elif training_seen and saving(run_dir):
                    deadline = now + rng.uniform(0, SAVE_WINDOW)
            if deadline is not None and now >= deadline:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        _, err = proc.communicate()
        if proc.returncode == 0:
            break
        if proc.returncode != -signal.SIGKILL:
            out.damaged.append(f"gdtrain exited {proc.returncode}: {err.decode(errors='replace').strip()}")
            break
        out.kills += 1
        if saving(run_dir):  # the kill left a save's temporary file
            out.mid_save += 1
        out.damaged += check_after_kill(run_dir)
    out.seconds = time.monotonic() - t0
    if proc.returncode == 0:
        arrays = final_arrays(run_dir)
        out.differs = [k for k in reference
                       if k not in arrays or arrays[k].tobytes() != reference[k].tobytes()]
        out.differs += [k for k in arrays if k not in reference]
        out.identical = not out.differs
        out.log_identical = train_losses(run_dir) == ref_losses
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of runs to kill and resume")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "mnist_mlp.yaml",
                        help="default: the MLP, whose state has momentum slots and EMA shadows "
                             "and whose schedule and L2 depend on the step")
    parser.add_argument("--set", dest="settings", action="append", default=None, metavar="KEY=VALUE",
                        help=f"config overrides (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()
    settings = args.settings or DEFAULT_SETTINGS
    config = args.config.resolve()
    name = run_name(config, settings)
    work = Path(tempfile.mkdtemp(prefix="gdtrain-chaos-"))
    try:
        print(f"chaos: {args.n} runs of {config.name} ({' '.join(settings)}), kill -9 at random moments, "
              f"{args.jobs} at a time, seed {args.seed}; work in {work}", flush=True)
        where = freeze_code(work)
        t0 = time.monotonic()
        done = subprocess.run(command(config, work / "reference", settings), cwd=where[0], env=where[1],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"chaos: the reference run failed: {done.stderr.strip()}", file=sys.stderr)
            return 2
        total = time.monotonic() - t0
        ref_dir = work / "reference" / name
        reference = final_arrays(ref_dir)
        ref_losses = train_losses(ref_dir)
        status = RunDir(ref_dir).read_status()
        training = max(status["elapsed"], 0.05)
        startup = max(total - training, 0.05)
        print(f"reference: {total:.1f}s ({startup:.1f}s start-up, {training:.1f}s training), "
              f"final step {status['step']}", flush=True)

        lock = threading.Lock()

        def one(i: int) -> Outcome:
            rng = random.Random(f"{args.seed}-{i}")
            root = work / f"run-{i:03d}"
            for attempt in range(3):
                outcome = chaos_run(i, command(config, root, settings), root / name,
                                    reference, ref_losses, startup, training, rng, where)
                if outcome.kills or not outcome.identical or attempt == 2:
                    break
                # the machine ran faster than the reference did and the run ended before its
                # first kill moment: that proves nothing, so start it over
                shutil.rmtree(root, ignore_errors=True)
            verdict = "identical" if outcome.identical else f"DIFFERS in {', '.join(outcome.differs) or '?'}"
            with lock:
                print(f"run {i:3d}: {outcome.kills:2d} kills ({outcome.mid_save} mid-save), "
                      f"{outcome.seconds:5.1f}s, {verdict}"
                      + ("" if outcome.log_identical else ", log differs")
                      + "".join(f"\n    damage: {d}" for d in outcome.damaged), flush=True)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            outcomes = list(pool.map(one, range(1, args.n + 1)))

        identical = sum(o.identical and o.log_identical for o in outcomes)
        kills = sum(o.kills for o in outcomes)
        unkilled = sum(o.kills == 0 for o in outcomes)
        mid_save = sum(o.mid_save for o in outcomes)
        damaged = sum(len(o.damaged) for o in outcomes)
        print(f"chaos: {identical}/{args.n} runs ended bit-identical to the uninterrupted reference "
              f"({kills} kill -9s, {mid_save} of them mid-save; {damaged} damaged checkpoints or failed "
              f"starts seen; {unkilled} runs never killed; {time.monotonic() - t0:.0f}s in all)", flush=True)
        return 0 if identical == args.n and not damaged else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
