"""The loop of a run: start or resume, then the schedule of steps, logs, evaluations,
checkpoints, early stopping and signals. Reports through a `Reporter` (hooks.py); never
prints. The resume decision is resume.py's, the signal flag signals.py's.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass

import numpy as np

from ..config.identity import config_hash
from ..config.paths import run_dir
from ..config.yaml_file import dump_yaml
from ..core import compute, early_stopping, fpenv
from ..core.dataset import Dataset
from ..core.evaluate import evaluate
from ..core.train import Trainer
from ..data import load_dataset
from ..errors import DivergedError, GdtrainError, Interrupted, RunDirError
from . import checkpoint
from .atomic import describe_os_error
from .hooks import Reporter
from .npz import read_npz
from .resume import resume
from .rundir import RunDir
from .signals import Signals
from .tensorboard import attach


@dataclass
class RunOptions:
    restart: bool = False
    allow_config_change: bool = False
    handle_signals: bool = True
    # Stop at this step, saved, with status "stopped" (and `stopped_by` recorded), without
    # changing train.steps: a sweep's budget. Running the config again resumes towards
    # train.steps; a run already at or past stop_at trains nothing and is evaluated.
    stop_at: int | None = None
    stopped_by: str = "stop_at"


def _checkpoint_meta(trainer: Trainer, config: dict, elapsed: float, machinery: dict) -> dict:
    return {
        "config": config,
        "compute": machinery,
        "config_hash": config_hash(config),
        "data_position": trainer.stream.position(trainer.step_count),
        "total_steps": trainer.total_steps,
        "elapsed": elapsed,
        "created": time.time(),
    }


def _evaluate(trainer: Trainer, split_name: str, weights: str = "ema") -> dict:
    ds = trainer.dataset
    split_name, split, _ = ds.split_or_train(split_name, "train.eval_split")
    result = evaluate(trainer.model, trainer.loss, trainer.eval_params(weights), split, ds.num_classes)
    result["split"] = split_name
    result["weights"] = trainer.weights_used(weights)
    return result


def _stop_text(tracker: early_stopping.Tracker, split: str) -> str:
    """Why a run stopped early: the metric, its best and when, the patience."""
    return (f"{split} {tracker.metric} has not improved on its best by more than {tracker.min_delta:g} "
            f"in {tracker.wait} evaluations (patience {tracker.patience}); {tracker.describe()}")


def _stop_info(tracker: early_stopping.Tracker, step: int, split: str) -> dict:
    return {"step": step, "metric": tracker.metric, "mode": tracker.mode, "split": split,
            "best": tracker.best, "best_step": tracker.best_step, "patience": tracker.patience,
            "wait": tracker.wait, "min_delta": tracker.min_delta}


def _point_best(rd: RunDir, step: int) -> None:
    """Put `best` on checkpoint `step` if it is not there: a save killed between its
    `latest` and `best` pointers left it on the previous best."""
    name = checkpoint.checkpoint_name(step)
    if (rd.checkpoints / name).is_file() and checkpoint.read_pointer(rd.checkpoints, checkpoint.BEST) != name:
        try:
            checkpoint.write_pointer(rd.checkpoints, checkpoint.BEST, name)
        except OSError as exc:
            raise RunDirError(f"could not write {rd.checkpoints / checkpoint.BEST}: "
                              f"{describe_os_error(exc)}") from None


def train(config: dict, reporter: Reporter | None = None, opts: RunOptions | None = None,
          dataset: Dataset | None = None) -> dict:
    """Run (or resume) the training a resolved config describes; return the summary."""
    reporter = reporter or Reporter()
    opts = opts or RunOptions()
    train_cfg = config["train"]

    # Writability and the lock come first: a second run on the same directory, or one
    # that could never save, stops at once instead of after loading the data. A run
    # refused before its first step (data, weights or batch that do not fit) takes back
    # what it made for this: a new run leaves no trace, an existing one every byte.
    rd = RunDir(run_dir(config))
    rd.ensure_writable()
    rd.lock()
    signals = Signals()
    started = False  # whether status.json is ours to update on failure
    scoped = contextlib.ExitStack()  # BLAS threads; NumPy's error state in the loop
    try:
        scoped.enter_context(compute.threads(config["run"].get("threads"), reporter.warning))
        # after the thread count: the BLAS's workers are restarted to take the flags
        scoped.enter_context(fpenv.flushed(config["run"].get("flush_subnormals", False), reporter.warning))
        machinery = compute.describe()
        t_load = time.perf_counter()
        if dataset is None:
            dataset = load_dataset(config["data"], config["run"]["dtype"])
        load_seconds = time.perf_counter() - t_load
        trainer = Trainer(config, dataset, read_arrays=read_npz)
        reporter = attach(reporter, config)  # train.tensorboard: scalars to <run dir>/tb too

        # early stopping and keep_best judge evaluations; their state is in every checkpoint
        tracker = early_stopping.from_config(train_cfg)
        start_step, elapsed_before = 0, 0.0
        if opts.restart:
            rd.clear()
        elif checkpoint.list_checkpoints(rd.checkpoints):
            start_step, elapsed_before, meta = resume(trainer, rd, config, opts.allow_config_change,
                                                     reporter, machinery)
            rd.truncate_metrics(start_step)
            if tracker is not None:
                where = rd.checkpoints / checkpoint.checkpoint_name(start_step)
                note = tracker.restore(meta.get("tracker"), str(where))
                if note:
                    reporter.message(note)
        elif rd.metrics.exists():
            rd.clear()  # a log without any checkpoint belongs to no resumable run
        # only the lock holder may clean: no other process can be mid-save here
        for p in rd.clean_temporaries():
            reporter.warning(f"removed {p}, left by an interrupted save")
        rd.write_config(dump_yaml(config))
        if tracker is not None and train_cfg["keep_best"] and tracker.best_step is not None:
            _point_best(rd, tracker.best_step)
        already_stopped = tracker is not None and tracker.stopped
        if already_stopped:
            reporter.message(f"{rd.path} had stopped early at step {start_step}: "
                             f"{_stop_text(tracker, train_cfg['eval_split'])}; nothing to train "
                             f"(raise train.early_stopping.patience above {tracker.wait} to continue)")

        total = trainer.total_steps
        info = {
            "run_dir": str(rd.path), "start_step": start_step, "total_steps": total,
            "train_examples": len(dataset.train), "parameters": trainer.model.parameter_count(),
            "trainable": trainer.trainable, "steps_per_epoch": trainer.stream.steps_per_epoch,
            "penalties": [p.label for p in trainer.penalties],
            "load_seconds": load_seconds, "compute": machinery,
        }
        reporter.start(info)
        rd.set_status("running", step=start_step, total_steps=total)
        started = True
        if opts.handle_signals:
            signals.install()

        t0 = time.perf_counter()
        log_every, eval_every = train_cfg["log_every"], train_cfg["eval_every"]
        ckpt_every = train_cfg["checkpoint_every"]
        last_saved = start_step  # a resumed run's checkpoint is on disk already
        result = None
        last_eval: tuple[int, dict] | None = None
        limit = total if opts.stop_at is None else min(total, opts.stop_at)

        def elapsed() -> float:
            return elapsed_before + time.perf_counter() - t0

        def evaluate_and_log(step: int) -> dict:
            result = _evaluate(trainer, train_cfg["eval_split"])
            record = {"event": "eval", "step": step, **_brief(result), "elapsed": round(elapsed(), 4)}
            rd.log(record)
            reporter.evaluation(record)
            return result

        def judge(step: int, result: dict) -> None:
            """Early stopping's and keep_best's verdict on the evaluation of `step`."""
            improved = tracker.judge(step, result[tracker.metric])
            if tracker.stopped:
                # logged before the save: a kill in between replays this step, record and all
                rd.log({"event": "early_stop", **_stop_info(tracker, step, result["split"])})
                reporter.message(f"early stopping at step {step}: {_stop_text(tracker, result['split'])}")
                save()
            elif improved and train_cfg["keep_best"]:
                save(best=True)

        def save(best: bool = False) -> None:
            nonlocal last_saved
            bad = trainer.non_finite()
            if bad:
                raise trainer.diverged(trainer.step_count - 1, f"{bad} is not finite")
            meta = _checkpoint_meta(trainer, config, elapsed(), machinery)
            if tracker is not None:
                meta["tracker"] = tracker.state()
            checkpoint.save(rd.checkpoints, trainer.step_count, trainer.state_arrays(), meta,
                            train_cfg["keep_checkpoints"], best=best)
            last_saved = trainer.step_count

        # an overflow becomes a non-finite loss or array, which the divergence check reports
        # in one line naming the step; NumPy's RuntimeWarnings before it would only be noise
        scoped.enter_context(np.errstate(all="ignore"))
        try:
            while trainer.step_count < limit and not already_stopped:
                result = trainer.step()
                step = result.step
                reporter.step(result)
                if log_every and (step % log_every == 0 or step == total):
                    # each penalty's term under its label, then what the other parts measured
                    record = {"event": "train", "step": step, "loss": result.loss,
                              **trainer.penalty_terms(), "lr": result.lr,
                              "epoch": step / trainer.stream.steps_per_epoch,
                              "elapsed": round(elapsed(), 4), **trainer.scalars()}
                    rd.log(record)
                    reporter.log(record)
                # judged evaluations include the last step's when it is on the schedule
                if eval_every and step % eval_every == 0 and (step != limit or tracker is not None):
                    last_eval = (step, evaluate_and_log(step))
                    if tracker is not None:
                        judge(step, last_eval[1])
                if ckpt_every and step % ckpt_every == 0 and step != limit and last_saved != step:
                    save()
                if tracker is not None and tracker.stopped:
                    break
                if signals.received is not None:
                    if last_saved != step:
                        save()
                    name = signal.Signals(signals.received).name
                    rd.set_status("interrupted", step=step, total_steps=total, signal=name)
                    raise Interrupted(
                        f"{name} at step {step}/{total}: saved {checkpoint.checkpoint_name(step)} in "
                        f"{rd.checkpoints}; run the same command again to resume from it",
                        signals.received,
                    )
        except DivergedError as exc:
            step = trainer.step_count if exc.step is None else exc.step  # the update to blame
            rd.set_status("diverged", step=step, total_steps=total, error=str(exc))
            raise

        if last_saved != trainer.step_count:
            save()
        if last_eval is not None and last_eval[0] == trainer.step_count:
            final = last_eval[1]
        elif already_stopped:  # its evaluations are logged already: shown, not logged again
            final = _evaluate(trainer, train_cfg["eval_split"])
        else:
            final = evaluate_and_log(trainer.step_count)
        raw = (_evaluate(trainer, train_cfg["eval_split"], "raw")
               if trainer.weights_used("ema") == "ema" else None)
        summary = {
            "run_dir": str(rd.path), "steps": trainer.step_count, "total_steps": total,
            "resumed_from": start_step, "final_loss": result.loss if result else None,
            "penalties": trainer.penalty_terms(), "eval": final, "eval_raw": raw,
            "train_seconds": time.perf_counter() - t0, "elapsed": elapsed(),
            "load_seconds": load_seconds, "compute": machinery,
            "checkpoint": str(rd.checkpoints / checkpoint.checkpoint_name(trainer.step_count)),
            "loss_curve": [(r["step"], r["loss"]) for r in rd.read_metrics() if r.get("event") == "train"],
            # what final_loss adds up or averages (eval's loss is always the mean), for its label
            "loss_reduction": config["loss"].get("reduction", "mean"), "batch_size": train_cfg["batch_size"],
            "loss_values_per_example": trainer.loss.elements_per_example(trainer.dataset.output_dim),
        }
        stopped = tracker is not None and tracker.stopped
        summary["stopped"] = _stop_info(tracker, trainer.step_count, final["split"]) if stopped else None
        # stopped: by early stopping, or short of train.steps at a caller's stop_at (a sweep's budget)
        summary["status"] = "finished" if trainer.step_count >= total and not stopped else "stopped"
        extra = {"early_stopping": summary["stopped"]} if stopped else {}
        if summary["status"] == "stopped" and not stopped:
            extra["stopped_by"] = opts.stopped_by
        # a timing means little without the BLAS that produced it
        rd.set_status(summary["status"], step=trainer.step_count, total_steps=total,
                      eval=_brief(final), elapsed=summary["elapsed"], compute=machinery, **extra)
        reporter.end(summary)
        summary["trainer"] = trainer
        return summary
    except GdtrainError as exc:
        if started and not isinstance(exc, (Interrupted, DivergedError)):
            rd.set_status("failed", step=trainer.step_count, total_steps=trainer.total_steps, error=str(exc))
        raise
    finally:
        scoped.close()
        if not started:
            rd.discard()
        rd.unlock()
        signals.restore()  # last: a Ctrl-C from here on finds nothing left to protect


def _brief(result: dict) -> dict:
    keys = ("split", "weights", "loss", "accuracy", "mse", "examples")
    return {k: result[k] for k in keys if k in result}
