"""Resume equals never having stopped, bit for bit, from every step; and the rules for
what a resumed run may change (refused / needs --allow-config-change / allowed)."""

from __future__ import annotations

import json

import pytest
import yaml
from resume_helpers import (
    Recorder,
    assert_same_state,
    checkpoint_arrays,
    cut_back,
    make_config,
    run,
    train_records,
    write_yaml,
)

from gdtrain.run import checkpoint

STEPS = 30


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 30-step run, with a checkpoint after every step."""
    root = tmp_path_factory.mktemp("reference")
    summary = run(make_config(root, "ref"))
    return root / "ref", summary


@pytest.fixture
def no_fsync(monkeypatch):
    """fsync only matters when the machine loses power; what these tests check (the
    bits a resume reproduces) does not depend on it, and ~450 saves of real fsyncs
    would dominate the suite's time. tests/test_faults.py keeps them real."""
    monkeypatch.setattr("os.fsync", lambda fd: None)


def test_reference_run_exercises_every_kind_of_state(reference):
    ref_dir, summary = reference
    state = checkpoint_arrays(ref_dir, STEPS)
    kinds = {name.split("/")[0] for name in state}
    assert kinds == {"param", "slot", "ema"}
    slots = {n for n in state if n.startswith("slot/")}
    assert slots == {f"slot/accum/{k}" for k in ("W1", "b1", "W2", "b2")}
    # 12.5 steps per epoch: the staircase halves the rate at two epoch boundaries
    lrs = sorted({lr for _, _, lr, _ in train_records(ref_dir)}, reverse=True)
    assert lrs == [0.2, 0.1, 0.05]
    assert summary["steps"] == STEPS
    assert_same_state(summary["trainer"].state_arrays(), state, "trainer vs its own checkpoint")


@pytest.mark.parametrize("cut", range(1, STEPS))
def test_resume_from_every_step_is_bit_identical(reference, tmp_path, cut, no_fsync):
    """A run stopped right after checkpoint `cut` and resumed ends exactly where the
    uninterrupted one did: parameters, momentum slots, EMA shadows; every checkpoint
    it saves on the way and every logged loss match too."""
    ref_dir, _ = reference
    cut_back(ref_dir, tmp_path / "ref", cut)
    rec = Recorder()
    summary = run(make_config(tmp_path, "ref"), rec)
    assert summary["resumed_from"] == cut
    assert any(f"from step {cut} " in m for m in rec.messages)
    assert_same_state(summary["trainer"].state_arrays(), checkpoint_arrays(ref_dir, STEPS), f"cut at {cut}")
    for step in range(cut + 1, STEPS + 1):
        assert_same_state(checkpoint_arrays(tmp_path / "ref", step), checkpoint_arrays(ref_dir, step),
                          f"cut at {cut}, checkpoint {step}")
    # the log is cut back to the checkpoint and continued: same losses, rates, l2, once each
    assert train_records(tmp_path / "ref") == train_records(ref_dir)
    assert not rec.warnings


def test_longer_run_resumes_exactly_from_a_finished_shorter_one(reference, tmp_path, no_fsync):
    """train.steps may grow on resume (with a note): 20 steps then 10 more equals 30."""
    ref_dir, _ = reference
    run(make_config(tmp_path, "ref", {"train": {"steps": 20}}))
    rec = Recorder()
    summary = run(make_config(tmp_path, "ref"), rec)
    assert summary["resumed_from"] == 20
    assert "config change on resume: train.steps: 20 -> 30" in rec.messages
    assert_same_state(summary["trainer"].state_arrays(), checkpoint_arrays(ref_dir, STEPS))


def test_resume_prefers_a_complete_checkpoint_newer_than_the_pointer(reference, tmp_path, no_fsync):
    """A save killed between its rename and the pointer's leaves a whole, verified newer
    checkpoint: it is used, so no saved progress is lost."""
    ref_dir, _ = reference
    cut_back(ref_dir, tmp_path / "ref", 12)
    (tmp_path / "ref" / "checkpoints" / checkpoint.POINTER).write_text(checkpoint.checkpoint_name(11) + "\n")
    summary = run(make_config(tmp_path, "ref"))
    assert summary["resumed_from"] == 12
    assert_same_state(summary["trainer"].state_arrays(), checkpoint_arrays(ref_dir, STEPS))


DROPOUT = {"model": {"hidden": [4, 3], "dropout": [0.3, 0.5]}}


@pytest.fixture(scope="module")
def dropout_reference(tmp_path_factory):
    """The uninterrupted 30-step run of a three-layer net with dropout on both hidden layers."""
    root = tmp_path_factory.mktemp("dropout")
    run(make_config(root, "drop", DROPOUT))
    return root / "drop"


@pytest.mark.parametrize("cut", [1, 7, 13, 26, 29])
def test_resume_with_dropout_is_bit_identical(dropout_reference, tmp_path, cut, no_fsync):
    """Dropout masks come from (seed, step, layer): a run resumed at step `cut` draws the
    masks the uninterrupted one drew, so every checkpoint after it matches bit for bit."""
    cut_back(dropout_reference, tmp_path / "drop", cut)
    summary = run(make_config(tmp_path, "drop", DROPOUT))
    assert summary["resumed_from"] == cut
    for step in range(cut + 1, STEPS + 1):
        assert_same_state(checkpoint_arrays(tmp_path / "drop", step),
                          checkpoint_arrays(dropout_reference, step), f"cut at {cut}, checkpoint {step}")
    assert train_records(tmp_path / "drop") == train_records(dropout_reference)


def test_dropout_changes_the_run(dropout_reference, tmp_path):
    """Not vacuous: the same net without dropout ends elsewhere, and its step losses differ."""
    plain = run(make_config(tmp_path, "plain", {"model": {"hidden": [4, 3]}}))
    dropped = checkpoint_arrays(dropout_reference, STEPS)
    assert sorted(plain["trainer"].state_arrays()) == sorted(dropped)
    assert all(plain["trainer"].state_arrays()[k].tobytes() != v.tobytes() for k, v in dropped.items())


# ------------------------------------------------------------------ config drift, end to end


def _first_half(tmp_path, cli) -> tuple:
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "drift",
                        {"train": {"steps": 10, "checkpoint_every": 5}})
    code, _, err = cli("run", config, "-q")
    assert code == 0, err
    ckpts = tmp_path / "runs" / "drift" / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    return config, ckpts, before


@pytest.mark.parametrize("override, shown", [
    ("model.hidden=5", "model.hidden: 4 -> 5"),
    ("model.activation=relu", "model.activation: 'tanh' -> 'relu'"),
    ("model.hidden=[4,4]", "model.hidden: 4 -> [4, 4]"),
    ("model.dropout=0.3", "model.dropout: 0.0 -> 0.3"),
    ("data.samples=101", "data.samples: 100 -> 101"),
    ("loss.reduction=sum", "loss.reduction: 'mean' -> 'sum'"),
    ("run.seed=8", "run.seed: 7 -> 8"),
    ("run.dtype=float64", "run.dtype: 'float32' -> 'float64'"),
    ("train.trainable=[W1,W2]", "train.trainable: ['*'] -> ['W1', 'W2']"),
    ("train.batch_size=10", "train.batch_size: 8 -> 10"),
])
def test_changing_what_defines_the_run_is_refused_with_a_dotted_diff(tmp_path, cli, override, shown):
    config, ckpts, before = _first_half(tmp_path, cli)
    for flag in ((), ("--allow-config-change",)):  # no flag unlocks these
        code, out, err = cli("run", config, "-q", "--set", "train.steps=20", "--set", override, *flag)
        assert code == 2
        assert shown in err and "--restart" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before  # nothing touched


@pytest.mark.parametrize("override, shown", [
    ("optimizer.learning_rate=0.1", "optimizer.learning_rate: 0.2 -> 0.1"),
    ("optimizer.momentum=0.5", "optimizer.momentum: 0.9 -> 0.5"),
    ("schedule.decay_rate=0.9", "schedule.decay_rate: 0.5 -> 0.9"),
    ("l2.scale=0.02", "l2.scale: 0.01 -> 0.02"),
    ("ema.decay=0.99", "ema.decay: 0.9 -> 0.99"),
    ("clip={name: global_norm, clip_norm: 1}", "clip.name: (unset) -> 'global_norm'"),
    ("penalties=[{name: l1, scale: 0.01}]",
     "penalties: (unset) -> [{'name': 'l1', 'scale': 0.01, 'params': ['W1', 'W2']}]"),
])
def test_changing_the_update_rule_needs_allow_config_change(tmp_path, cli, override, shown):
    config, ckpts, before = _first_half(tmp_path, cli)
    code, _, err = cli("run", config, "-q", "--set", override)
    assert code == 2 and "--allow-config-change" in err and shown in err
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before
    code, out, err = cli("run", config, "--set", "train.steps=12", "--set", override, "--allow-config-change")
    assert code == 0, err
    assert f"config change on resume: {shown}" in out
    assert "resuming" in out and "from step 10" in out


@pytest.mark.parametrize("override, shown", [
    ("train.steps=15", "train.steps: 10 -> 15"),
    ("train.log_every=3", "train.log_every: 1 -> 3"),
    ("train.checkpoint_every=4", "train.checkpoint_every: 5 -> 4"),
    ("train.keep_checkpoints=3", "train.keep_checkpoints: 100 -> 3"),
    ("train.eval_every=5", "train.eval_every: 0 -> 5"),
])
def test_length_logging_and_checkpoint_intervals_may_change_with_a_note(tmp_path, cli, override, shown):
    config, _, _ = _first_half(tmp_path, cli)
    code, out, err = cli("run", config, "--set", override, "--set", "train.steps=15")
    assert code == 0, err
    assert f"config change on resume: {shown}" in out
    status = json.loads((tmp_path / "runs" / "drift" / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 15


def test_a_new_length_needs_the_flag_when_the_schedule_spans_the_run(tmp_path, cli):
    """A cosine schedule without decay_steps is stretched over train.steps: changing the
    length changes every learning rate still to come, so it is guarded, not just noted."""
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "drift",
                        {"train": {"steps": 10, "checkpoint_every": 5}})
    raw = yaml.safe_load(config.read_text())
    raw["schedule"] = {"name": "cosine"}
    config.write_text(yaml.safe_dump(raw))
    code, _, err = cli("run", config, "-q")
    assert code == 0, err
    code, _, err = cli("run", config, "-q", "--set", "train.steps=15")
    assert code == 2 and "train.steps: 10 -> 15" in err and "spans the whole run" in err
    code, out, err = cli("run", config, "--set", "train.steps=15", "--allow-config-change")
    assert code == 0 and "config change on resume: train.steps: 10 -> 15" in out


def _files(directory) -> dict:
    """Every file's bytes but the lock's (it holds the pid of the last process to take it)."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("override, shown", [
    ("train.steps=5", "train.steps: 5 is below step 10"),
    ("train.steps=9", "train.steps: 9 is below step 10"),
    ("train.epochs=0.5", "train.epochs: 0.5 (7 steps) is below step 10"),
])
def test_a_run_cannot_be_shortened_below_the_step_it_reached(tmp_path, cli, override, shown):
    """Accepting it would rewrite config.yaml and the status to a length the run is already
    past (`gdtrain runs` showing 10/5); refused, flag or not, and nothing on disk changes."""
    config, _, _ = _first_half(tmp_path, cli)
    run_dir = tmp_path / "runs" / "drift"
    before = _files(run_dir)
    extra = ["--set", "train.steps=null"] if "epochs" in override else []
    for flag in ((), ("--allow-config-change",)):
        code, out, err = cli("run", config, "-q", *extra, "--set", override, *flag)
        assert code == 2, out + err
        assert shown in err and "which " + str(run_dir) + " has already reached" in err, err
        assert "--restart" in err and "--set run.name=" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _files(run_dir) == before
    code, out, err = cli("runs", tmp_path / "runs", "--json")
    assert code == 0 and [(r["step"], r["total_steps"]) for r in json.loads(out)] == [(10, 10)]


def test_plan_reports_the_refusal_of_a_shorter_run_as_run_does(tmp_path, cli):
    config, _, _ = _first_half(tmp_path, cli)
    code, out, err = cli("plan", config, "--set", "train.steps=5", "--json")
    assert code == 0, err
    resume = json.loads(out)["resume"]
    assert resume["action"] == "refuse" and resume["step"] == 10
    assert {"key": "train.steps", "was": 10, "now": 5} in resume["changes"]
    code, _, err = cli("run", config, "-q", "--set", "train.steps=5")
    assert code == 2 and resume["detail"] in err  # the runner's own words
    code, out, _ = cli("plan", config, "--set", "train.steps=5")
    assert "resume    refuse: train.steps: 5 is below step 10" in out
    code, out, _ = cli("plan", config, "--set", "train.steps=10")
    assert "resume    done: already at step 10 of 10" in out


def test_every_resume_refusal_offers_restart_and_a_new_run_name(tmp_path, cli):
    """A new user changing the learning rate of a finished run (README's second example,
    run without a new name) is told every way forward, not only --allow-config-change."""
    config, _, _ = _first_half(tmp_path, cli)
    for override in ("optimizer.learning_rate=0.1", "run.seed=8", "train.steps=4"):
        code, _, err = cli("run", config, "-q", "--set", override)
        assert code == 2
        assert "--restart" in err and "--set run.name=" in err, err
        code, out, err = cli("plan", config, "--set", override, "--json")
        detail = json.loads(out)["resume"]["detail"]
        assert code == 0 and "--restart" in detail and "--set run.name=" in detail, detail


def test_options_added_since_a_checkpoint_count_as_their_defaults(tmp_path):
    """A checkpoint saved before model.dropout and schedule.min_learning_rate existed holds a
    config without them: at their defaults the run is the same and resumes without a note;
    set to anything else, it is a different run and refused like any model change."""
    import copy
    import shutil
    from pathlib import Path

    from gdtrain.config.validate import resolve
    from gdtrain.errors import ConfigError

    fixtures = Path(__file__).resolve().parent / "fixtures"
    case = json.loads((fixtures / "baseline.json").read_text())["old_runs"]["mlp_momentum"]
    saved = yaml.safe_load((fixtures / "old_runs" / "mlp_momentum" / "config.yaml").read_text())
    assert "dropout" not in saved["model"] and "min_learning_rate" not in saved["schedule"]
    shutil.copytree(fixtures / "old_runs" / "mlp_momentum", tmp_path / "mlp_momentum")
    raw = copy.deepcopy(case["raw"])
    raw["run"]["dir"] = str(tmp_path)
    raw["model"]["dropout"] = 0.3
    with pytest.raises(ConfigError, match=r"model\.dropout: \(unset\) -> 0\.3; use --restart"):
        run(resolve(raw))
    del raw["model"]["dropout"]
    rec = Recorder()
    summary = run(resolve(raw), rec)
    assert summary["resumed_from"] == case["cut"]
    assert not [m for m in rec.messages if "config change" in m]
