"""Early stopping and the best checkpoint: the stopping rule against closed forms, runs that
stop at the evaluation the rule picks, resume (bit for bit, as stopped, with more patience),
the `best` pointer through pruning, resume and crashes, and --checkpoint best|latest|STEP."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from file_faults import inject
from resume_helpers import QUIET, Recorder, assert_same_state, checkpoint_arrays, cut_back
from tool_runs import SignalAt, merged

from gdtrain.config.drift import classify_drift
from gdtrain.config.validate import resolve
from gdtrain.core.early_stopping import Tracker, from_config
from gdtrain.errors import CheckpointError, Interrupted
from gdtrain.run import checkpoint
from gdtrain.run.hooks import Reporter
from gdtrain.run.loop import RunOptions, train

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A 1-D two-class problem whose test loss (EMA weights) improves, worsens for eleven
# evaluations from step 65, then improves again from step 120: patience 5 stops it at 85,
# patience 12 lets it run on. Momentum slots and EMA shadows make the resumes exercise
# every kind of state.
BASE = {
    "run": {"name": "es"},
    "data": {"name": "two_gaussians", "test_fraction": 0.3},
    "model": {"name": "linear"},
    "loss": {"name": "sigmoid_cross_entropy"},
    "optimizer": {"name": "momentum", "learning_rate": 0.05, "momentum": 0.9},
    "ema": {"decay": 0.9},
    "train": {"batch_size": 1, "steps": 300, "log_every": 5, "eval_every": 5, "checkpoint_every": 10,
              "keep_checkpoints": 100},
}
EVERY = 5


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """As in test_resume: what these tests check does not depend on fsync (the fault hook
    still sees every fsync of a save), and hundreds of real ones would dominate their time."""
    monkeypatch.setattr("os.fsync", lambda fd: None)


def _module_run(config: dict) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("os.fsync", lambda fd: None)
        return go(config)


def raw(root: Path, name: str = "es", **train) -> dict:
    return merged(BASE, {"run": {"name": name, "dir": str(root)}, "train": train})


def es(patience: int = 5, **options) -> dict:
    return {"early_stopping": {"metric": "loss", "patience": patience, **options}}


def go(config: dict, reporter: Reporter | None = None, opts: RunOptions = QUIET) -> dict:
    return train(resolve(copy.deepcopy(config)), reporter or Recorder(), opts)


def records(run_dir: Path, event: str | None = None) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines]
    return [r for r in out if event is None or r["event"] == event]


def status(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "status.json").read_text())


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def oracle(values: list[float], mode: str, patience: int | None, min_delta: float = 0.0):
    """Keras's EarlyStopping as its source reads, written out independently of gdtrain:
    (index of the stopping evaluation or None, index of the best)."""
    best, best_at, wait = (math.inf if mode == "min" else -math.inf), None, 0
    for i, v in enumerate(values):
        wait += 1
        better = v + min_delta < best if mode == "min" else v - min_delta > best
        if better:
            best, best_at, wait = v, i, 0
            continue
        if patience is not None and wait >= patience:
            return i, best_at
    return None, best_at


def judge_all(values, mode="min", patience=None, min_delta=0.0) -> tuple[int | None, Tracker]:
    tracker = Tracker("loss", mode, patience, min_delta)
    for i, v in enumerate(values):
        tracker.judge(i, v)
        if tracker.stopped:
            return i, tracker
    return None, tracker


# ------------------------------------------------------------------ the rule, in closed form

D = 0.25  # a step that floats represent exactly, so boundaries are exact


@pytest.mark.parametrize("patience", [0, 1, 2, 5])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_metric_that_only_worsens_stops_after_patience_evaluations(mode, patience):
    """v_k worsens every evaluation: the first is the best; wait reaches max(p, 1) at
    evaluation max(p, 1) (Keras counts before it compares: patience 0 and 1 agree)."""
    sign = 1 if mode == "min" else -1
    values = [sign * k * D for k in range(20)]
    stop, tracker = judge_all(values, mode, patience)
    assert stop == max(patience, 1)
    assert (tracker.best, tracker.best_step, tracker.wait) == (0.0, 0, max(patience, 1))


@pytest.mark.parametrize("deltas", [0, 0.5, 1, 2, 3])
@pytest.mark.parametrize("patience", [1, 2, 3])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_min_delta_an_improvement_must_beat_the_best_by_more(mode, patience, deltas):
    """v_k improves by exactly D per evaluation, min_delta = deltas·D. Beating the best by
    k·D counts when k·D > min_delta, so improvements come every m = floor(deltas) + 1
    evaluations (at min_delta == D, one step of D is not enough: more than min_delta is
    needed); wait peaks at m - 1, so the run stops, at evaluation patience, iff
    patience <= m - 1."""
    sign = -1 if mode == "min" else 1
    values = [sign * k * D for k in range(12)]
    stop, tracker = judge_all(values, mode, patience, deltas * D)
    m = math.floor(deltas) + 1
    expected = patience if patience <= m - 1 else None
    assert stop == expected
    last = expected if expected is not None else len(values) - 1
    assert tracker.best_step == last - last % m and tracker.best == values[tracker.best_step]
    assert (stop, tracker.best_step) == oracle(values, mode, patience, deltas * D)


@pytest.mark.parametrize("period", [1, 2, 3, 4])
@pytest.mark.parametrize("patience", [0, 1, 2, 3, 4])
def test_improving_every_period_evaluations_stops_iff_patience_is_shorter(period, patience):
    """v_k = -(k // period): equal within a block (not better), better at each block start.
    wait climbs to period - 1 before each improvement, so the run stops, at evaluation
    max(p, 1), exactly when max(p, 1) <= period - 1."""
    values = [-float(k // period) for k in range(24)]
    stop, tracker = judge_all(values, "min", patience)
    expected = max(patience, 1) if max(patience, 1) <= period - 1 else None
    assert stop == expected
    assert (stop, tracker.best_step) == oracle(values, "min", patience)


def test_non_finite_values_never_improve_and_the_first_finite_one_does():
    stop, tracker = judge_all([math.nan, 1.0, math.inf, -math.inf, 2.0, 0.5], "min", 4)
    assert stop is None
    assert (tracker.best, tracker.best_step, tracker.wait) == (0.5, 5, 0)
    stop, tracker = judge_all([math.nan, math.nan], "max", 2)
    assert stop == 1 and tracker.best is None and "no finite loss yet" in tracker.describe()


@pytest.mark.parametrize("cut", range(0, 16))
def test_a_tracker_restored_from_its_saved_state_decides_as_one_never_saved(cut):
    values = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 3.5, 3.2, 3.1, 2.95, 2.85, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    straight, whole = judge_all(values, "min", 5, 0.1)
    assert (straight, whole.best_step) == (15, 10) == oracle(values, "min", 5, 0.1)
    first = Tracker("loss", "min", 5, 0.1)
    for i, v in enumerate(values[:cut]):
        first.judge(i, v)
    saved = json.loads(json.dumps(first.state()))  # through the checkpoint's JSON
    second = Tracker("loss", "min", 5, 0.1)
    assert second.restore(saved, "ckpt") is None
    stop = None
    for i, v in enumerate(values[cut:], start=cut):
        second.judge(i, v)
        if second.stopped:
            stop = i
            break
    assert stop == straight and second.state() == whole.state()


def test_restore_lifts_a_stop_only_with_more_patience_than_the_counter_reached():
    _, stopped = judge_all([1.0, 2.0, 3.0, 4.0], "min", 3)
    saved = stopped.state()
    assert saved["stopped"] and saved["wait"] == 3
    for patience, still in ((3, True), (2, True), (4, False), (None, False)):
        tracker = Tracker("loss", "min", patience)
        tracker.restore(saved, "ckpt")
        assert tracker.stopped is still, patience
        assert (tracker.best, tracker.best_step, tracker.wait) == (1.0, 0, 3)
    other = Tracker("accuracy", "max", 3)
    note = other.restore(saved, "ckpt")
    assert "accuracy (max), was loss (min)" in note and "start afresh" in note
    assert (other.best, other.wait, other.stopped) == (None, 0, False)
    for bad in ({**saved, "wait": -1}, {**saved, "best": "x"}, {**saved, "mode": "up"}, [1]):
        with pytest.raises(CheckpointError, match="early-stopping state is malformed"):
            Tracker("loss", "min", 3).restore(bad, "ckpt")


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("given, mode", [
    ({"metric": "loss"}, "min"), ({"metric": "mse"}, "min"), ({"metric": "accuracy"}, "max"),
    ({}, "min"), ({"metric": "accuracy", "mode": "min"}, "min"), ({"metric": "loss", "mode": "max"}, "max"),
])
def test_the_mode_defaults_to_the_direction_the_metric_improves_in(tmp_path, given, mode):
    train = resolve(raw(tmp_path, early_stopping=given))["train"]
    metric = given.get("metric", "loss")
    assert train["early_stopping"] == {"metric": metric, "mode": mode, "patience": 5, "min_delta": 0.0}
    tracker = from_config(train)
    assert (tracker.metric, tracker.mode, tracker.patience) == (metric, mode, 5)


def test_keep_best_alone_judges_by_best_metric_and_never_stops(tmp_path):
    assert from_config(resolve(raw(tmp_path))["train"]) is None
    tracker = from_config(resolve(raw(tmp_path, keep_best=True))["train"])
    assert (tracker.metric, tracker.mode, tracker.patience) == ("loss", "min", None)
    tracker = from_config(resolve(raw(tmp_path, keep_best=True, best_metric="accuracy"))["train"])
    assert (tracker.metric, tracker.mode, tracker.patience) == ("accuracy", "max", None)


def test_a_config_saved_before_these_options_existed_has_no_drift(tmp_path):
    """An old checkpoint's config lacks train.early_stopping/keep_best/best_metric: to the
    drift check an absent option is its default (keep_best: false would otherwise be a
    change from unset)."""
    new = resolve(raw(tmp_path))
    old = copy.deepcopy(new)
    for key in ("early_stopping", "keep_best", "best_metric"):
        del old["train"][key]
    assert classify_drift(old, new) == ([], [], [])
    turned_on = resolve(raw(tmp_path, keep_best=True))
    assert classify_drift(old, turned_on) == ([], [], [("train.keep_best", False, True)])
    # the same within train.early_stopping, for an option it may gain one day
    stopping = resolve(raw(tmp_path, **es(5)))
    older = copy.deepcopy(stopping)
    del older["train"]["early_stopping"]["min_delta"]
    assert classify_drift(older, stopping) == ([], [], [])


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "old_runs").iterdir()))
def test_an_old_checkpoint_resumes_without_a_drift_note(tmp_path, name):
    baseline = json.loads((FIXTURES / "baseline.json").read_text())["old_runs"][name]
    shutil.copytree(FIXTURES / "old_runs" / name, tmp_path / name)
    config = copy.deepcopy(baseline["raw"])
    config["run"]["dir"] = str(tmp_path)
    rec = Recorder()
    summary = go(config, rec)
    assert summary["resumed_from"] == baseline["cut"]
    assert not [m for m in rec.messages if "config change" in m], rec.messages
    assert status(tmp_path / name)["status"] == "finished"


def test_early_stopping_and_keep_best_may_change_on_resume_with_a_note(tmp_path, cli):
    config = write(tmp_path / "c.yaml", raw(tmp_path / "runs", steps=20))
    code, _, err = cli("run", config, "-q")
    assert code == 0, err
    code, out, err = cli("run", config, "--set", "train.steps=30", "--set", "train.keep_best=true",
                         "--set", "train.early_stopping.patience=9")
    assert code == 0, err
    assert "config change on resume: train.keep_best: False -> True" in out
    assert "config change on resume: train.early_stopping.patience: (unset) -> 9" in out
    assert "from step 20" in out


# ------------------------------------------------------------------ runs that stop


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run without early stopping, a checkpoint at every evaluation: its evaluations
    are the sequence every early-stopping run of BASE judges."""
    root = tmp_path_factory.mktemp("es-reference")
    _module_run(raw(root, "ref", checkpoint_every=EVERY))
    evals = records(root / "ref", "eval")
    return root / "ref", evals


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """BASE with early stopping on the loss, patience 5, and keep_best: stopped at 85."""
    root = tmp_path_factory.mktemp("es-stopped")
    summary = _module_run(raw(root, "es", keep_best=True, **es(5)))
    return root / "es", summary


def _timeless(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "elapsed"}


def expected_stop(evals: list[dict], metric: str, mode: str, patience: int, min_delta: float = 0.0):
    values = [r[metric] for r in evals if r["step"] % EVERY == 0]
    stop, best = oracle(values, mode, patience, min_delta)
    return (evals[stop]["step"] if stop is not None else None), evals[best]["step"]


def test_the_reference_sequence_has_a_plateau_worth_stopping_in(reference):
    _, evals = reference
    assert expected_stop(evals, "loss", "min", 5) == (85, 60)
    assert expected_stop(evals, "loss", "min", 12) == (None, 300)  # improves again at 120


@pytest.mark.parametrize("metric, mode, patience, min_delta", [
    ("loss", "min", 5, 0.0), ("loss", "min", 0, 0.0), ("loss", "min", 5, 0.01), ("mse", "min", 3, 0.0),
    ("accuracy", "max", 4, 0.0), ("accuracy", "max", 20, 0.0), ("loss", "min", 12, 0.0),
])
def test_a_run_stops_at_the_evaluation_the_rule_picks(reference, tmp_path, metric, mode, patience, min_delta):
    ref_dir, evals = reference
    stop, best = expected_stop(evals, metric, mode, patience, min_delta)
    summary = go(raw(tmp_path, **es(patience, metric=metric, mode=mode, min_delta=min_delta)))
    run_dir = tmp_path / "es"
    final = summary["steps"]
    assert final == (stop or 300)
    ref_state = checkpoint_arrays(ref_dir, final)
    assert_same_state(checkpoint_arrays(run_dir), ref_state, "early stopping changed the training")
    assert [_timeless(r) for r in records(run_dir, "eval")] == [_timeless(r) for r in evals[: final // EVERY]]
    if stop is None:
        assert status(run_dir)["status"] == "finished" and summary["stopped"] is None
        assert not records(run_dir, "early_stop")
        return
    (record,) = records(run_dir, "early_stop")
    best_value = next(r[metric] for r in evals if r["step"] == best)
    assert record == {"event": "early_stop", "step": stop, "metric": metric, "mode": mode, "split": "test",
                      "best": best_value, "best_step": best, "patience": patience,
                      "wait": max(patience, 1), "min_delta": min_delta}
    assert records(run_dir)[-1] == record  # nothing trained after it
    st = status(run_dir)
    assert (st["status"], st["step"], st["total_steps"]) == ("stopped", stop, 300)
    assert st["early_stopping"] == {k: v for k, v in record.items() if k != "event"}
    assert summary["stopped"] == st["early_stopping"]
    assert checkpoint.read_pointer(run_dir / "checkpoints") == checkpoint.checkpoint_name(stop)


@pytest.mark.parametrize("patience", [0, 2])
def test_a_metric_judged_the_wrong_way_round_stops_at_the_closed_form_step(tmp_path, cli, patience):
    """The training loss falls at every evaluation on linear_sum; judged with mode max it
    worsens every time, so the run stops at evaluation max(p, 1) + 1: step 10·(max(p, 1) + 1)."""
    config = write(tmp_path / "c.yaml", {
        "run": {"name": "wrong_way", "dir": str(tmp_path / "runs")},
        "data": {"name": "linear_sum"}, "model": {"name": "linear"}, "loss": {"name": "mse"},
        "optimizer": {"name": "sgd", "learning_rate": 0.01},
        "train": {"batch_size": 8, "steps": 200, "log_every": 0, "eval_every": 10,
                  "early_stopping": {"metric": "loss", "mode": "max", "patience": patience}}})
    code, out, err = cli("run", config)
    assert code == 0, err
    step = 10 * (max(patience, 1) + 1)
    losses = [r["loss"] for r in records(tmp_path / "runs" / "wrong_way", "eval")]
    assert len(losses) == max(patience, 1) + 1 and losses == sorted(losses, reverse=True)
    line = next(line for line in out.splitlines() if line.startswith("early stopping"))
    assert line.startswith(f"early stopping at step {step}: train loss has not improved")
    assert f"(patience {patience})" in line and f"best loss {losses[0]:.6g} at step 10" in line
    code, out, err = cli("run", config, "-q")
    assert code == 0 and f"step {step} (stopped early)" in out


def test_a_stopped_run_run_again_stays_stopped_and_trains_nothing(stopped, tmp_path, cli):
    run_dir = tmp_path / "runs" / "es"
    shutil.copytree(stopped[0], run_dir)
    config = write(tmp_path / "c.yaml", raw(tmp_path / "runs", keep_best=True, **es(5)))
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    log = (run_dir / "metrics.jsonl").read_bytes()
    for args in ((), ("-q",), ("--set", "train.early_stopping.patience=5", "--set", "train.steps=400")):
        code, out, err = cli("run", config, *args)
        assert code == 0, err
        if not args:
            assert "had stopped early at step 85: test loss has not improved" in out
            assert "best loss" in out and "at step 60" in out and "patience 5" in out
            assert "raise train.early_stopping.patience above 5 to continue" in out
        assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before
        assert (run_dir / "metrics.jsonl").read_bytes() == log
        assert (status(run_dir)["status"], status(run_dir)["step"]) == ("stopped", 85)


def test_more_patience_continues_with_the_counter_it_had(stopped, reference, tmp_path, cli):
    """Stopped at 85 with patience 5 (wait 5), resumed with patience 12: the same as a run
    given patience 12 from the start, which never stops (the loss improves again at 120)."""
    run_dir = tmp_path / "runs" / "es"
    shutil.copytree(stopped[0], run_dir)
    config = write(tmp_path / "c.yaml", raw(tmp_path / "runs", keep_best=True, **es(5)))
    code, out, err = cli("run", config, "--set", "train.early_stopping.patience=12")
    assert code == 0, err
    assert "config change on resume: train.early_stopping.patience: 5 -> 12" in out
    assert "resuming" in out and "from step 85" in out
    straight = go(raw(tmp_path / "straight", keep_best=True, **es(12)))
    assert straight["steps"] == 300 and status(run_dir)["status"] == "finished"
    assert_same_state(checkpoint_arrays(run_dir), straight["trainer"].state_arrays())
    assert [(r["step"], r["loss"]) for r in records(run_dir, "eval")] == \
        [(r["step"], r["loss"]) for r in records(tmp_path / "straight" / "es", "eval")]
    ckpts = run_dir / "checkpoints"
    assert checkpoint.read_pointer(ckpts, checkpoint.BEST) == checkpoint.checkpoint_name(300)
    # the counter carried over: 7 more non-improving evaluations would have stopped it at 120
    # had the loss not improved there; patience 6 (one more than it had) stops at 90
    shutil.rmtree(run_dir)
    shutil.copytree(stopped[0], run_dir)
    code, out, err = cli("run", config, "-q", "--set", "train.early_stopping.patience=6")
    assert code == 0 and "step 90 (stopped early)" in out


@pytest.mark.parametrize("cut", [10, 40, 60, 80])
def test_a_run_cut_anywhere_stops_at_the_same_step_with_the_same_bits(stopped, tmp_path, cut):
    ref_dir, straight = stopped
    cut_back(ref_dir, tmp_path / "es", cut)
    summary = go(raw(tmp_path, keep_best=True, **es(5)))
    assert (summary["resumed_from"], summary["steps"]) == (cut, 85)
    assert summary["stopped"] == straight["stopped"]
    assert_same_state(summary["trainer"].state_arrays(), straight["trainer"].state_arrays(), f"cut {cut}")
    for event in ("eval", "early_stop"):
        assert [{k: v for k, v in r.items() if k != "elapsed"} for r in records(tmp_path / "es", event)] == \
            [{k: v for k, v in r.items() if k != "elapsed"} for r in records(ref_dir, event)]
    for pointer in (checkpoint.POINTER, checkpoint.BEST):
        assert checkpoint.read_pointer(tmp_path / "es" / "checkpoints", pointer) == \
            checkpoint.read_pointer(ref_dir / "checkpoints", pointer)


def test_an_interrupted_run_resumes_to_the_same_early_stop(stopped, tmp_path):
    """SIGINT at step 47 (between checkpoints): saved there, resumed, stopped at 85 as the
    uninterrupted run did, with the same arrays and the same best checkpoint."""
    ref_dir, straight = stopped
    config = raw(tmp_path, keep_best=True, **es(5))
    with pytest.raises(Interrupted):
        go(config, SignalAt(47), RunOptions())
    assert status(tmp_path / "es")["status"] == "interrupted"
    summary = go(config)
    assert (summary["resumed_from"], summary["steps"]) == (47, 85)
    assert_same_state(summary["trainer"].state_arrays(), straight["trainer"].state_arrays())
    best = checkpoint.read_pointer(tmp_path / "es" / "checkpoints", checkpoint.BEST)
    assert best == checkpoint.read_pointer(ref_dir / "checkpoints", checkpoint.BEST)
    assert_same_state(checkpoint_arrays(tmp_path / "es", 60), checkpoint_arrays(ref_dir, 60))


# ------------------------------------------------------------------ the best checkpoint


def test_the_best_checkpoint_survives_pruning(reference, tmp_path):
    """keep_checkpoints 1: only the newest and the best are left; `best` names the step of
    the best judged evaluation, its arrays those of the reference run at that step."""
    ref_dir, evals = reference
    go(raw(tmp_path, keep_best=True, keep_checkpoints=1, checkpoint_every=7, steps=280))
    ckpts = tmp_path / "es" / "checkpoints"
    best_step = min(evals[: 280 // EVERY], key=lambda r: r["loss"])["step"]
    assert best_step == 270  # the best is not the last: the last would prove nothing
    assert checkpoint.read_pointer(ckpts, checkpoint.BEST) == checkpoint.checkpoint_name(best_step)
    assert checkpoint.read_pointer(ckpts) == checkpoint.checkpoint_name(280)
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(
        ["best", "latest", checkpoint.checkpoint_name(270), checkpoint.checkpoint_name(280)])
    assert_same_state(checkpoint_arrays(tmp_path / "es", best_step), checkpoint_arrays(ref_dir, best_step))


def test_keep_best_by_accuracy_keeps_the_first_of_the_best(reference, tmp_path):
    _, evals = reference
    go(raw(tmp_path, keep_best=True, best_metric="accuracy", keep_checkpoints=2))
    top = max(r["accuracy"] for r in evals)
    first = next(r["step"] for r in evals if r["accuracy"] == top)  # ties are not improvements
    best = checkpoint.read_pointer(tmp_path / "es" / "checkpoints", checkpoint.BEST)
    assert best == checkpoint.checkpoint_name(first) and first < 300


def test_restart_removes_the_best_pointer_too(stopped, tmp_path):
    shutil.copytree(stopped[0], tmp_path / "es")
    go(raw(tmp_path, steps=10), opts=RunOptions(restart=True, handle_signals=False))
    assert not (tmp_path / "es" / "checkpoints" / checkpoint.BEST).exists()
    left = checkpoint.list_checkpoints(tmp_path / "es" / "checkpoints")
    assert [checkpoint.step_of(p) for p in left] == [10]


def test_checkpoint_best_latest_and_step_for_eval_predict_and_export(stopped, tmp_path, cli):
    run_dir = stopped[0]
    evals = {r["step"]: r for r in records(run_dir, "eval")}
    for which, step in (("best", 60), ("latest", 85), ("40", 40), ("0040", 40), (None, 85)):
        args = ("--checkpoint", which) if which else ()
        code, out, err = cli("eval", run_dir, "--json", *args)
        assert code == 0, err
        result = json.loads(out)
        assert result["step"] == step and result["checkpoint"].endswith(checkpoint.checkpoint_name(step))
        assert result["loss"] == evals[step]["loss"]  # what the run saw at that step, bit for bit

        code, out, err = cli("export", run_dir, "--out", tmp_path / f"w-{which}.npz", *args)
        assert code == 0, err
        assert f"of step {step}" in out
        arrays = checkpoint_arrays(run_dir, step)
        with np.load(tmp_path / f"w-{which}.npz") as exported:
            for name in ("W", "b"):
                assert exported[name].tobytes() == arrays[f"ema/{name}"].tobytes()

        np.savez(tmp_path / "x.npz", x=np.array([[-1.0], [0.5], [3.0]]))
        code, out, err = cli("predict", run_dir, tmp_path / "x.npz", *args)
        assert code == 0, err
        code, direct, _ = cli("predict", run_dir / "checkpoints" / checkpoint.checkpoint_name(step),
                              tmp_path / "x.npz")
        assert out == direct


@pytest.mark.parametrize("args, fragments", [
    (("eval", "{plain}", "--checkpoint", "best"),
     ["{plain}: no best checkpoint (the run was not trained with train.keep_best: true)",
      "it has checkpoints of steps 10, 20, 30 (latest 30)"]),
    (("eval", "{run}", "--checkpoint", "7"),
     ["{run}: no checkpoint of step 7", "steps 5, 10, 15, 20, …, 60, 70, 80, 85 (latest 85, best 60)"]),
    (("predict", "{run}", "{x}", "--checkpoint", "7"), ["no checkpoint of step 7"]),
    (("export", "{run}", "--out", "{out}", "--checkpoint", "best"), []),
    (("export", "{plain}", "--out", "{out}", "--checkpoint", "best"), ["no best checkpoint"]),
    (("eval", "{run}", "--checkpoint", "last"),
     ["--checkpoint: expected best, latest or a step number, got 'last'"]),
    (("eval", "{run}", "--checkpoint=-3"), ["got '-3'"]),
    (("eval", "{run}", "--checkpoint", "9" * 40), ["no checkpoint has a step that large"]),
    (("eval", "{ckpt}", "--checkpoint", "best"), ["is a checkpoint file; give its run directory"]),
    (("eval", "{run}", "--watch", "--checkpoint", "best"), ["--checkpoint does not go with --watch"]),
    (("eval", "{run}", "--checkpoint", "best"), []),
])
def test_checkpoint_choices_that_do_not_exist_are_one_line(stopped, tmp_path, cli, args, fragments):
    plain = tmp_path / "runs" / "plain"
    go(raw(tmp_path / "runs", "plain", steps=30))
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1)))
    names = {"plain": plain, "run": stopped[0], "x": tmp_path / "x.npz", "out": tmp_path / "w.npz",
             "ckpt": stopped[0] / "checkpoints" / checkpoint.checkpoint_name(85)}
    code, out, err = cli(*[a.format(**names) for a in args])
    if not fragments:
        assert code == 0, err
        return
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment.format(**names) in err, err


# ------------------------------------------------------------------ crashes during a best save

# keep_best alone, one checkpoint kept, no periodic saves: every save is a new best or the
# last; the second best save (step 10) is the first that also prunes (step 5's file).
FAULTS = {"keep_best": True, "keep_checkpoints": 1, "checkpoint_every": 0, "steps": 60}
CRASH_SAVE = 2


class Crash(BaseException):
    """What kill -9 does to the code after it: nothing runs, no handler catches it."""


def _ops_of_save(n: int, tmp_path: Path) -> list[str]:
    seen: list[list[str]] = []

    def record(op: str) -> None:
        if op == "mkdir":
            seen.append([])
        seen[-1].append(op)

    stop = inject(record)
    try:
        go(raw(tmp_path, "ops", **FAULTS))
    finally:
        stop()
    return seen[n - 1]


BEST_SAVE_OPERATIONS = [
    "mkdir",
    "open checkpoint", "write checkpoint", "flush checkpoint", "fsync checkpoint",
    "rename checkpoint", "fsync dir after checkpoint",
    "open pointer", "write pointer", "flush pointer", "fsync pointer",
    "rename pointer", "fsync dir after pointer",
    "open best pointer", "write best pointer", "flush best pointer", "fsync best pointer",
    "rename best pointer", "fsync dir after best pointer",
    "delete old checkpoint",
]


def test_a_best_save_writes_best_after_latest_then_prunes(tmp_path):
    assert _ops_of_save(CRASH_SAVE, tmp_path) == BEST_SAVE_OPERATIONS


@pytest.mark.parametrize("operation", BEST_SAVE_OPERATIONS)
def test_a_crash_at_any_operation_of_a_best_save_resumes_with_a_good_best(tmp_path, monkeypatch, operation):
    config = raw(tmp_path / "ref", **FAULTS)
    go(config)
    ref = tmp_path / "ref" / "es"
    saves = 0

    def crash(op: str) -> None:
        nonlocal saves
        saves += op == "mkdir"
        if saves == CRASH_SAVE and op == operation:
            shutil.copytree(tmp_path / "live" / "es", tmp_path / "disk" / "es")
            raise Crash(operation)

    stop = inject(crash, monkeypatch)
    with pytest.raises(Crash):
        go(raw(tmp_path / "live", **FAULTS))
    stop()
    ckpts = tmp_path / "disk" / "es" / "checkpoints"
    # what the crash left: `best` names a whole checkpoint, the new one or the previous
    assert checkpoint.read_pointer(ckpts, checkpoint.BEST) in ("ckpt-00000005.npz", "ckpt-00000010.npz")
    checkpoint.load(ckpts / checkpoint.read_pointer(ckpts, checkpoint.BEST))
    summary = go(raw(tmp_path / "disk", **FAULTS))
    assert_same_state(summary["trainer"].state_arrays(), checkpoint_arrays(ref))
    for pointer in (checkpoint.POINTER, checkpoint.BEST):
        assert checkpoint.read_pointer(ckpts, pointer) == \
            checkpoint.read_pointer(ref / "checkpoints", pointer)
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(p.name for p in (ref / "checkpoints").iterdir())


# ------------------------------------------------------------------ runs, watch, plan


def test_runs_shows_stopped_and_watch_ends_on_it(stopped, cli):
    from gdtrain.run.inspect_run import watch
    from gdtrain.run.runs_table import describe

    row = describe(stopped[0])
    assert row["status"] == "stopped" and row["step"] == 85 and row["total_steps"] == 300
    assert row["note"] == "early: loss best at step 60, patience 5" and row["wall_seconds"] > 0
    code, out, _ = cli("runs", stopped[0].parent)
    assert code == 0 and "stopped (early: loss best at step 60, patience 5)" in out and "85/300" in out
    steps = [r["step"] for r in watch(stopped[0], sleep=pytest.fail)]
    assert steps[-1] == 85 and 60 in steps


def test_plan_shows_early_stopping_keep_best_and_a_stopped_resume(stopped, tmp_path, cli):
    shutil.copytree(stopped[0], tmp_path / "runs" / "es")
    config = write(tmp_path / "c.yaml", raw(tmp_path / "runs", keep_best=True, **es(5)))
    code, out, err = cli("plan", config, "--json")
    assert code == 0, err
    plan = json.loads(out)
    judging = plan["judging"]
    assert judging["judged_steps"] == list(range(5, 301, 5)) and judging["earliest_stop"] == 30
    assert (judging["metric"], judging["mode"], judging["patience"], judging["keep_best"]) == \
        ("loss", "min", 5, True)
    assert plan["resume"]["action"] == "stopped" and plan["resume"]["step"] == 85
    code, out, _ = cli("plan", config)
    assert "early stop  by test loss (min), patience 5 evaluations" in out
    assert "keep best   the best checkpoint by test loss (min)" in out
    assert "resume    stopped: stopped early at step 85" in out
    code, out, _ = cli("plan", config, "--json", "--set", "train.early_stopping.patience=12")
    assert json.loads(out)["resume"]["action"] == "resume"
    code, out, _ = cli("plan", config, "--set", "train.early_stopping=null", "--set", "train.keep_best=false")
    assert "early stop  off; keep best off" in out
