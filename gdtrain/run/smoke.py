"""The smoke check (`gdtrain run --smoke`): a few steps on a slice of the data, saved,
resumed and evaluated in a temporary directory, so that a config's problems show in
seconds and the real run directory is never touched."""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.dataset import head
from ..core.evaluate import headline
from ..data import load_dataset
from ..errors import CheckFailed
from . import checkpoint
from .hooks import Reporter
from .loop import RunOptions, train

SMOKE_STEPS = 12
SMOKE_RESUME_AT = 5


def smoke(config: dict, reporter: Reporter | None = None) -> str:
    """Train a few steps on a slice, save, resume, evaluate; CheckFailed on any problem.

    Returns the one-line summary. Runs in a temporary directory; nothing of the real
    run directory is touched.
    """
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    full = load_dataset(config["data"], config["run"]["dtype"])
    rows = max(512, 4 * config["train"]["batch_size"])
    dataset = head(full, rows, 256)
    with tempfile.TemporaryDirectory(prefix="gdtrain-smoke-") as tmp:
        cfg = copy.deepcopy(config)
        cfg["run"]["dir"] = tmp
        cfg["train"].update(steps=SMOKE_STEPS, epochs=None, log_every=0, eval_every=0,
                            checkpoint_every=SMOKE_RESUME_AT, keep_checkpoints=SMOKE_STEPS,
                            early_stopping=None, keep_best=False, best_metric=None)
        quiet = RunOptions(handle_signals=False)
        cfg["run"]["name"] = "straight"
        straight = train(cfg, Reporter(), quiet, dataset)
        # resume: a copy of the straight run cut back to its step-SMOKE_RESUME_AT checkpoint
        cut = Path(tmp) / "resumed"
        shutil.copytree(Path(tmp) / "straight", cut)
        for p in checkpoint.list_checkpoints(cut / "checkpoints"):
            if checkpoint.step_of(p) != SMOKE_RESUME_AT:
                p.unlink()
        (cut / "checkpoints" / checkpoint.POINTER).write_text(
            checkpoint.checkpoint_name(SMOKE_RESUME_AT) + "\n")
        cfg["run"]["name"] = "resumed"
        resumed = train(cfg, Reporter(), quiet, dataset)

        problems = []
        if resumed["resumed_from"] != SMOKE_RESUME_AT:
            problems.append(f"resume started at step {resumed['resumed_from']}, not {SMOKE_RESUME_AT}")
        a = straight["trainer"].state_arrays()
        b = resumed["trainer"].state_arrays()
        differ = [k for k in a if not np.array_equal(a[k], b[k])]
        if differ:
            problems.append(f"resumed run differs from the uninterrupted one in {', '.join(differ)}")
        loss = straight["final_loss"]
        if loss is None or not np.isfinite(loss):
            problems.append(f"final training loss is {loss}")
        ev = straight["eval"]
        if not np.isfinite(ev["loss"]):
            problems.append(f"evaluation loss is {ev['loss']}")
        seconds = time.perf_counter() - t0
        name, value = headline(ev)
        figure = f"{name} {value:.4f}" if name == "accuracy" else f"{name} {value:.4g}"
        if problems:
            raise CheckFailed("smoke check failed: " + "; ".join(problems))
        return (f"smoke ok: {SMOKE_STEPS} steps on {len(dataset.train)} examples, loss {loss:.4g}, "
                f"{figure} on {ev['examples']} {ev['split']} examples, resume from step "
                f"{SMOKE_RESUME_AT} bit-identical, {seconds:.1f}s")
