"""`gdtrain plan`: what a run will do, checked against the schedule and against a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tool_runs import classifier, config, run, run_dir, write_yaml

from gdtrain.commands.plan import make_plan
from gdtrain.config.validate import resolve
from gdtrain.core.schedules import build_schedule
from gdtrain.run.rundir import RunDir

SCHEDULES = {
    "constant": None,
    "staircase": {"name": "exponential", "decay_rate": 0.5, "decay_steps": 7, "staircase": True},
    "staircase_epoch": {"name": "exponential", "decay_rate": 0.9, "decay_steps": "epoch", "staircase": True},
    "exponential": {"name": "exponential", "decay_rate": 0.9, "decay_steps": 10},
    "piecewise": {"name": "piecewise_constant", "boundaries": [5, 30], "values": [0.3, 0.2, 0.1]},
    "cosine": {"name": "cosine", "alpha": 0.1},
    "linear_warmup": {"name": "linear", "end_factor": 0.2, "warmup_steps": 6},
    "staircase_warmup": {"name": "exponential", "decay_rate": 0.5, "decay_steps": 12, "staircase": True,
                         "warmup_steps": 4},
}


def _resolved(tmp_path, schedule, steps=50):
    raw = config(tmp_path, train={"steps": steps, "batch_size": 8})
    if schedule is not None:
        raw["schedule"] = schedule
    return resolve(raw)


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_learning_rates_are_the_schedule_s(tmp_path, kind):
    cfg = _resolved(tmp_path, SCHEDULES[kind])
    plan = make_plan(cfg)
    total = plan["steps"]
    # the schedule built independently of the plan, from the same resolved section
    schedule = build_schedule(cfg.get("schedule"), cfg["optimizer"]["learning_rate"], 32 / 8, total)
    segments = plan["learning_rate"]["segments"]
    assert segments[0]["first_step"] == 0 and segments[-1]["last_step"] == total - 1
    for a, b in zip(segments, segments[1:], strict=False):
        assert b["first_step"] == a["last_step"] + 1  # contiguous, no step left out
    for seg in segments:
        first, last = seg["first_step"], seg["last_step"]
        assert seg["lr_first"] == schedule(first) and seg["lr_last"] == schedule(last)
        if seg["kind"] == "constant":
            assert all(schedule(k) == seg["lr_first"] for k in range(first, last + 1))
        else:
            assert all(schedule(k) != schedule(k - 1) for k in range(first + 1, last + 1))
    for point in plan["learning_rate"]["samples"]:
        assert point["lr"] == schedule(point["step"])
    assert plan["learning_rate"]["changes"] == sum(schedule(k) != schedule(k - 1) for k in range(1, total))


def test_staircase_boundaries_are_the_decay_periods(tmp_path):
    plan = make_plan(_resolved(tmp_path, SCHEDULES["staircase"]))
    constants = [s for s in plan["learning_rate"]["segments"] if s["kind"] == "constant"]
    assert [s["first_step"] for s in constants] == list(range(0, 50, 7))
    assert [s["lr_first"] for s in constants] == [0.1 * 0.5**i for i in range(len(constants))]
    # piecewise: values[0] up to and including boundaries[0] (TF1), so the change is after step 5
    plan = make_plan(_resolved(tmp_path, SCHEDULES["piecewise"]))
    assert [(s["first_step"], s["lr_first"]) for s in plan["learning_rate"]["segments"]] == [
        (0, 0.3), (6, 0.2), (31, 0.1)]
    # a continuous decay is one ramp across the whole run
    plan = make_plan(_resolved(tmp_path, SCHEDULES["exponential"]))
    assert [s["kind"] for s in plan["learning_rate"]["segments"]] == ["ramp"]


def test_sizes_memory_and_ema(tmp_path):
    raw = classifier(tmp_path, optimizer={"name": "adam", "learning_rate": 0.01},
                     ema={"decay": 0.99}, train={"steps": 1000, "trainable": ["W"]})
    plan = make_plan(resolve(raw))
    assert plan["data"]["examples"] == {"train": 60, "test": 20}
    assert (plan["steps"], plan["batch_size"], plan["samples"]) == (1000, 10, 10000)
    assert plan["epochs"] == pytest.approx(1000 * 10 / 60)
    assert plan["model"]["shapes"] == {"W": [2, 3], "b": [3]}
    assert (plan["model"]["parameters"], plan["model"]["trainable_parameters"]) == (9, 6)
    f32 = 4
    # adam: m and v for W (6 each) plus two scalar beta powers; EMA shadows W only
    assert plan["memory"] == {"parameters": 9 * f32, "optimizer_slots": (6 + 6 + 2) * f32,
                              "ema_shadows": 6 * f32, "total": (9 + 14 + 6) * f32}
    ema = next(p for p in plan["chain"] if p["label"] == "ema")
    # min(0.99, (1+n)/(10+n)) reaches 0.99 at n = 890
    assert ema["reaches_decay_at"] == 890
    for point in ema["points"]:
        n = point["updates"]
        assert point["decay"] == min(0.99, (1.0 + n) / (10.0 + n))
    assert [p["updates"] for p in ema["points"]] == [1, 10, 100, 890, 1000]
    assert "ema" not in [p["label"] for p in make_plan(resolve(config(tmp_path)))["chain"]]  # no ema section


def test_log_eval_and_checkpoint_steps_match_a_real_run(tmp_path):
    raw = classifier(tmp_path, train={"steps": 35, "log_every": 4, "eval_every": 10,
                                      "checkpoint_every": 10, "keep_checkpoints": 2})
    plan = make_plan(resolve(raw))
    assert plan["checkpoint_steps"] == [10, 20, 30, 35]
    assert plan["checkpoints_kept"] == [30, 35]
    run(raw)
    rd = RunDir(run_dir(raw))
    records = rd.read_metrics()
    assert plan["log_steps"] == [r["step"] for r in records if r["event"] == "train"]
    assert plan["eval_steps"] == [r["step"] for r in records if r["event"] == "eval"]
    kept = sorted(int(p.stem.split("-")[1]) for p in rd.checkpoints.glob("ckpt-*.npz"))
    assert plan["checkpoints_kept"] == kept


def test_where_it_would_resume(tmp_path):
    raw = classifier(tmp_path, train={"steps": 20})
    assert make_plan(resolve(raw))["resume"]["action"] == "start"
    run(raw)
    longer = classifier(tmp_path, train={"steps": 50})
    resume = make_plan(resolve(longer))["resume"]
    assert (resume["action"], resume["step"]) == ("resume", 20)
    assert "30 steps left" in resume["detail"]
    assert resume["checkpoint"].endswith("ckpt-00000020.npz")
    assert make_plan(resolve(raw))["resume"]["action"] == "done"
    changed_lr = classifier(tmp_path, train={"steps": 50}, optimizer={"name": "sgd", "learning_rate": 0.1})
    resume = make_plan(resolve(changed_lr))["resume"]
    assert resume["action"] == "resume-needs-flag"
    assert {"key": "optimizer.learning_rate", "was": 0.5, "now": 0.1} in resume["changes"]
    changed_seed = classifier(tmp_path, run={"seed": 3})
    assert make_plan(resolve(changed_seed))["resume"]["action"] == "refuse"


def test_a_damaged_newest_checkpoint_is_skipped_as_the_run_would(tmp_path):
    raw = classifier(tmp_path, train={"steps": 20, "checkpoint_every": 10})
    run(raw)
    newest = run_dir(raw) / "checkpoints" / "ckpt-00000020.npz"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    resume = make_plan(resolve(classifier(tmp_path, train={"steps": 50, "checkpoint_every": 10})))["resume"]
    assert (resume["action"], resume["step"]) == ("resume", 10)
    assert len(resume["skipped"]) == 1 and "ckpt-00000020.npz" in resume["skipped"][0]


def test_a_checkpoint_whose_config_fails_its_hash_is_skipped_as_the_run_would(tmp_path):
    """plan and run share checkpoint.saved_config: a stored config edited after the save
    is damage, so both fall back to the older checkpoint."""
    from gdtrain.run import checkpoint, npz
    from gdtrain.run.loop import train

    raw = classifier(tmp_path, train={"steps": 20, "checkpoint_every": 10})
    run(raw)
    newest = run_dir(raw) / "checkpoints" / "ckpt-00000020.npz"
    data = npz.read_npz(newest)
    meta = json.loads(data.pop(checkpoint.META_KEY).tobytes())
    meta["config"]["optimizer"]["learning_rate"] = 9.0  # the hash beside it is unchanged
    np.savez(newest, **data, **{checkpoint.META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    longer = resolve(classifier(tmp_path, train={"steps": 30, "checkpoint_every": 10}))
    resume = make_plan(longer)["resume"]
    assert (resume["action"], resume["step"]) == ("resume", 10)
    assert "does not match its hash" in resume["skipped"][0]
    assert train(longer)["resumed_from"] == 10


def test_cli_plan(tmp_path, cli):
    path = write_yaml(tmp_path / "plan.yaml", classifier(tmp_path))
    code, out, err = cli("plan", path, "--set", "schedule.name=exponential", "--set",
                         "schedule.decay_steps=7", "--set", "schedule.staircase=true", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["steps"] == 30 and plan["learning_rate"]["segments"][1]["first_step"] == 7
    assert np.isclose(plan["learning_rate"]["segments"][1]["lr_first"], 0.5 * 0.96)
    code, out, err = cli("plan", path)
    assert code == 0, err
    assert "30 steps of 10 = 300 samples, 5 epochs" in out
    assert "reaches 0.9 after 80 updates" in out and "resume    start" in out
    code, _, err = cli("plan", path, "--set", "train.steps=0")
    assert code == 2 and "train.steps" in err


def test_plan_shows_the_model_s_dropout(tmp_path, cli):
    """From what the model says of itself (Model.notes), in the plan and on the terminal."""
    raw = classifier(tmp_path, model={"name": "mlp", "hidden": [4, 3], "dropout": [0.25, 0.5]})
    notes = make_plan(resolve(raw))["model"]["notes"]
    assert notes == ["relu on 2 hidden layers", "dropout 0.25, 0.5 on the hidden layers' outputs "
                     "(training steps only; kept units scaled by 1/(1 - rate))"]
    code, out, err = cli("plan", write_yaml(tmp_path / "c.yaml", raw))
    assert code == 0, err
    assert "dropout 0.25, 0.5" in " ".join(out.split())
    assert "dropout" not in " ".join(make_plan(resolve(classifier(tmp_path)))["model"]["notes"])
