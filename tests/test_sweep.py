"""`gdtrain sweep`: the sweep file's checks, trial names and configs, results and groups,
re-runs that train nothing twice, successive halving that ends bit-identical to
uninterrupted runs, Ctrl-C and kill -9 of a sweep, the local process pool, the public
API and its README example. The Ray backend's tests are in test_sweep_ray.py."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from resume_helpers import assert_same_state, checkpoint_arrays

from gdtrain import api
from gdtrain.config.validate import resolve
from gdtrain.config.yaml_file import dump_yaml
from gdtrain.errors import ConfigError
from gdtrain.run.loop import RunOptions, train
from gdtrain.sweep import spec as spec_mod
from gdtrain.sweep.halving import survivors
from gdtrain.sweep.spec import load_sweep
from gdtrain.sweep.trials import render_value

REPO = Path(__file__).resolve().parents[1]
GDTRAIN = [sys.executable, "-m", "gdtrain"]

# Linear regression on 32 generated points: a trial takes a few hundredths of a second.
# One BLAS thread: an in-process trial and a pool worker's compute the same bits.
BASE = {
    "run": {"name": "base", "seed": 0, "threads": 1},
    "data": {"name": "linear_sum", "samples": 32},
    "model": {"name": "linear"},
    "loss": {"name": "mse"},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "train": {"batch_size": 8, "steps": 60, "log_every": 10, "checkpoint_every": 20},
}


def write_sweep(tmp_path: Path, sweep: dict, base: dict | None = None, name: str = "sw.yaml") -> Path:
    config = json.loads(json.dumps(base or BASE))
    config["run"]["dir"] = str(tmp_path / "runs")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"config": str(tmp_path / "base.yaml"), **sweep}, sort_keys=False))
    return path


def reference(trial_config: dict, root: Path) -> Path:
    """The trial trained straight through in its own directory: what the sweep must equal."""
    config = json.loads(json.dumps(trial_config))
    config["run"]["dir"] = str(root)
    train(config, None, RunOptions(handle_signals=False))
    return root / config["run"]["name"]


def sweep_json(directory: Path) -> dict:
    return json.loads((directory / "sweep.json").read_text())


# ---------------------------------------------------------------- the sweep file


def test_the_committed_sweep_reference_is_what_the_code_generates():
    path = REPO / "docs" / "sweep-reference.md"
    assert path.read_text(encoding="utf-8") == spec_mod.render_markdown(), (
        "docs/sweep-reference.md is out of date; regenerate it with "
        "`gdtrain components sweep --markdown > docs/sweep-reference.md`")


def test_every_sweep_key_is_documented():
    data = spec_mod.describe()
    keys = {o["name"] for s in data["sections"] if s["name"] == "sweep" for o in s["options"]}
    assert keys == {"config", "parameters", "name", "method", "samples", "sampler_seed", "seeds",
                    "metric", "early_stop"}
    assert all(o["doc"] for s in data["sections"] + data["parameters"] for o in s["options"])


LR = "optimizer.learning_rate"
BAD_SWEEPS = {
    "unknown key": ({"paramters": {LR: {"values": [0.1]}}},
                    r"sw\.yaml: line 2: paramters: unknown key; did you mean 'parameters'\?"),
    "parameter path that does not exist": (
        {"parameters": {"optimizer.learnig_rate": {"values": [0.1]}}},
        r"line 3: parameters\.optimizer\.learnig_rate: unknown option for optimizer 'sgd'; "
        r"did you mean 'learning_rate'\?"),
    "unknown section in a parameter": (
        {"parameters": {"optimiser.learning_rate": {"values": [0.1]}}},
        r"parameters\.optimiser\.learning_rate: optimiser: unknown section; did you mean 'optimizer'\?"),
    "through a scalar": ({"parameters": {"data.name.x": {"values": [1]}}},
                         r"parameters\.data\.name\.x: data\.name is 'linear_sum', not a mapping"),
    "empty grid": ({"parameters": {LR: {"values": []}}},
                   r"line 4: parameters\.optimizer\.learning_rate\.values: empty; give at least one value"),
    "bounds reversed": (
        {"method": "random", "samples": 3,
         "parameters": {LR: {"distribution": "log_uniform", "min": 0.1, "max": 0.001}}},
        r"parameters\.optimizer\.learning_rate: min 0\.1 is not below max 0\.001; expected min < max"),
    "value of the wrong type": (
        {"parameters": {LR: {"values": [0.1, "fast"]}}},
        r"line 3: parameters\.optimizer\.learning_rate: expected a number, got 'fast'"),
    "integer key given a fraction": ({"parameters": {"train.batch_size": {"values": [8, 2.5]}}},
                                     r"parameters\.train\.batch_size: expected an integer, got 2\.5"),
    "distribution without method random": (
        {"parameters": {LR: {"distribution": "uniform", "min": 0, "max": 1}}},
        r"a distribution needs method: random"),
    "random without samples": ({"method": "random", "parameters": {LR: {"values": [0.1, 0.2]}}},
                               r"samples: method random needs the number of settings to draw"),
    "unknown distribution": (
        {"method": "random", "samples": 2,
         "parameters": {LR: {"distribution": "loguniform", "min": 0.1, "max": 1}}},
        r"unknown distribution 'loguniform'; valid: uniform, log_uniform, int_uniform; "
        r"did you mean 'log_uniform'\?"),
    "a value twice": ({"parameters": {LR: {"values": [0.1, 0.1]}}}, r"values: 0\.1 is given twice"),
    "a seed twice": ({"seeds": [0, 0], "parameters": {LR: {"values": [0.1]}}}, r"seeds: 0 is given twice"),
    "the seed as a parameter": ({"parameters": {"run.seed": {"values": [1, 2]}}},
                                r"parameters\.run\.seed: cannot be swept: give the seeds with `seeds"),
    "nothing to sweep": ({}, r"parameters: nothing to sweep"),
    "metric name": ({"metric": {"name": "acc"}, "parameters": {LR: {"values": [0.1]}}},
                    r"metric\.name: must be one of 'accuracy', 'loss', 'mse', got 'acc'"),
    "halving rate": ({"early_stop": {"rate": 1, "min_steps": 10}, "parameters": {LR: {"values": [0.1]}}},
                     r"early_stop\.rate: must be >= 2, got 1"),
    "sweep name escaping": ({"name": "../x", "parameters": {LR: {"values": [0.1]}}},
                            r"name: '\.\./x' is not a plain directory name"),
}


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_files_are_refused_in_one_line_and_write_nothing(case, tmp_path, cli):
    sweep, expected = BAD_SWEEPS[case]
    path = write_sweep(tmp_path, sweep)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli("sweep", path)
    assert code == 2, (case, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gdtrain: error: ") and re.search(expected, err), err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/ directory, nothing else


def test_missing_base_config_and_broken_base_config_name_their_files(tmp_path, cli):
    path = tmp_path / "sw.yaml"
    path.write_text("config: nope.yaml\nparameters: {optimizer.learning_rate: {values: [0.1]}}\n")
    code, _, err = cli("sweep", path)
    assert code == 2 and (f"sw.yaml: line 1: config: nope.yaml ({tmp_path / 'nope.yaml'}, relative to the "
                          "sweep file's directory): no such file") in err, err
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1]}}},
                       base={**BASE, "train": {**BASE["train"], "batch_size": -1}})
    code, _, err = cli("sweep", path)
    assert code == 2 and re.search(r"base\.yaml: line \d+: train\.batch_size: must be >= 1, got -1", err), err


def test_the_base_config_is_found_relative_to_the_sweep_file_from_any_working_directory(tmp_path, cli,
                                                                                      monkeypatch):
    """The paths rule of configs: a relative path in a file is relative to that file's directory."""
    config = json.loads(json.dumps(BASE))
    config["run"]["dir"] = str(tmp_path / "runs")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "sweeps").mkdir()
    path = tmp_path / "sweeps" / "sw.yaml"
    path.write_text("config: ../configs/base.yaml\nparameters: {optimizer.learning_rate: {values: [0.1]}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_sweep(Path("..") / "sweeps" / "sw.yaml")
    assert spec.config_path == tmp_path / "configs" / "base.yaml"
    code, out, err = cli("sweep", path, "--dry-run")
    assert code == 0, err


def test_trial_paths_follow_the_paths_rule_written_in_the_base_config_or_the_sweep_file(tmp_path, cli,
                                                                                       monkeypatch):
    """The base config's data.dir (../data/mnist) is read from the config's directory and
    the sweep's run.dir from the sweep file's, whatever the working directory."""
    (tmp_path / "sweeps").mkdir()
    path = tmp_path / "sweeps" / "sw.yaml"
    path.write_text(f"config: {REPO / 'configs' / 'mnist_softmax.yaml'}\n"
                    "parameters:\n  optimizer.learning_rate: {values: [0.1]}\n"
                    "  train.steps: {value: 3}\n  run.dir: {value: out}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    trial = load_sweep(path).trials[0]
    assert trial.config["data"]["dir"] == str(REPO / "data" / "mnist")
    code, out, err = cli("sweep", path, "--json")
    assert code == 0, err
    assert [t["status"] for t in json.loads(out)["trials"]] == ["finished"]
    assert (tmp_path / "sweeps" / "out" / "sw" / trial.name / "checkpoints").is_dir()


# ---------------------------------------------------------------- trials


def test_grid_trials_are_named_from_their_own_values_and_resolve_like_set(tmp_path):
    path = write_sweep(tmp_path, {"parameters": {
        LR: {"values": [0.01, 1e-05]}, "train.trainable": {"values": [["W"], ["W", "b"]]},
        "train.eval_every": {"value": 20}}, "seeds": [3, 4]})
    spec = load_sweep(path)
    names = [t.name for t in spec.trials]
    assert names[:4] == ["learning_rate-0.01_trainable-W_seed-3", "learning_rate-0.01_trainable-W_seed-4",
                         "learning_rate-0.01_trainable-W.b_seed-3", "learning_rate-0.01_trainable-W.b_seed-4"]
    assert names[4] == "learning_rate-1e-05_trainable-W_seed-3" and len(names) == 8
    trial = spec.trials[2]
    # exactly what `gdtrain run base.yaml --set ...` resolves, with absolute paths
    expected = api.load_config(tmp_path / "base.yaml", {LR: 0.01, "train.trainable": ["W", "b"],
                                                        "train.eval_every": 20, "run.seed": 3,
                                                        "run.name": trial.name})
    expected["run"]["dir"] = str(tmp_path / "runs" / "sw")
    assert trial.config == expected and os.path.isabs(trial.config["run"]["dir"])
    assert trial.run_dir == tmp_path / "runs" / "sw" / trial.name
    # a value added later adds trials and renames none
    path = write_sweep(tmp_path, {"parameters": {
        LR: {"values": [0.01, 1e-05, 0.5]}, "train.trainable": {"values": [["W"], ["W", "b"]]},
        "train.eval_every": {"value": 20}}, "seeds": [3, 4]})
    assert [t.name for t in load_sweep(path).trials][:8] == names


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", x=np.arange(20.0).reshape(10, 2), y=np.arange(10.0).reshape(10, 1))
    base = {**BASE, "data": {"name": "npz", "path": "d.npz"}}
    spec = load_sweep(write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1]}}}, base=base))
    assert spec.trials[0].config["data"]["path"] == str(tmp_path / "d.npz")


def test_random_draws_depend_on_the_sampler_seed_only_and_stay_in_bounds(tmp_path):
    params = {LR: {"distribution": "log_uniform", "min": 1e-4, "max": 1e-1},
              "train.batch_size": {"distribution": "int_uniform", "min": 4, "max": 6},
              "ema.decay": {"distribution": "uniform", "min": 0.5, "max": 0.9},
              "model.use_bias": {"values": [True, False]}}
    spec = load_sweep(write_sweep(tmp_path, {"method": "random", "samples": 12, "parameters": params}))
    again = load_sweep(write_sweep(tmp_path, {"method": "random", "samples": 12, "parameters": params}))
    more = load_sweep(write_sweep(tmp_path, {"method": "random", "samples": 20, "parameters": params}))
    other = load_sweep(write_sweep(tmp_path, {"method": "random", "samples": 12, "sampler_seed": 1,
                                              "parameters": params}))
    names = [t.name for t in spec.trials]
    assert names == [t.name for t in again.trials] == [t.name for t in more.trials][:12]
    assert names != [t.name for t in other.trials]
    assert len(set(names)) == 12
    for t in spec.trials:
        lr, batch = t.params[LR], t.params["train.batch_size"]
        assert 1e-4 <= lr <= 1e-1 and float(f"{lr:.4g}") == lr  # rounded to 4 significant digits
        assert batch in (4, 5, 6) and 0.5 <= t.params["ema.decay"] <= 0.9
    assert {t.params["train.batch_size"] for t in more.trials} == {4, 5, 6}  # both ends drawn


def test_random_asking_for_more_settings_than_exist_is_refused(tmp_path, cli):
    path = write_sweep(tmp_path, {"method": "random", "samples": 5, "parameters": {
        "train.batch_size": {"distribution": "int_uniform", "min": 4, "max": 6}}})
    code, _, err = cli("sweep", path)
    assert code == 2 and "samples: only 3 different settings could be drawn" in err


def test_dry_run_lists_the_trials_and_writes_nothing(tmp_path, cli):
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1, 0.2]}}, "seeds": [0, 1]})
    code, out, err = cli("sweep", path, "--dry-run")
    assert code == 0 and "4 trials, grid" in out and "learning_rate-0.2_seed-1" in out
    assert not (tmp_path / "runs").exists()
    code, out, _ = cli("sweep", path, "--dry-run", "--json")
    rows = json.loads(out)["trials"]
    assert [r["on_disk"] for r in rows] == ["new"] * 4 and rows[3]["config"]["run"]["seed"] == 1
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- a sweep and its results


@pytest.fixture
def small_sweep(tmp_path, cli):
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.01, 0.1]},
                                                 "train.eval_every": {"value": 20}}, "seeds": [0, 1, 2]})
    code, out, err = cli("sweep", path)
    assert code == 0, err
    return path, tmp_path / "runs" / "sw", out, err


def test_trials_are_ordinary_runs_and_the_summary_groups_them_over_seeds(small_sweep, tmp_path, cli):
    path, directory, out, _ = small_sweep
    result = sweep_json(directory)
    assert [t["status"] for t in result["trials"]] == ["finished"] * 6
    assert result["metric"] == {"name": "mse", "goal": "minimize"}  # regression: mse, the default
    groups = result["groups"]
    assert [g["params"][LR] for g in groups] == [0.1, 0.01]  # best (lowest mse) first
    for g in groups:
        values = []
        for name in g["trials"]:  # each trial's figure is what `gdtrain eval` says of its run
            code, text, _ = cli("eval", directory / name, "--json")
            values.append(json.loads(text)["mse"])
        assert g["values"] == values and g["n"] == 3
        assert g["mean"] == statistics.fmean(values) and g["std"] == statistics.stdev(values)
    assert groups[0]["mean"] < groups[1]["mean"]
    assert re.search(r"1 +│ +0\.1 +│ +\d\.\d{4} ± \d\.\d{4} +│ +3 +│ +60", out), out
    csv_lines = (directory / "sweep.csv").read_text().splitlines()
    assert csv_lines[0] == "trial,optimizer.learning_rate,seed,status,step,total_steps,mse,seconds,error"
    assert len(csv_lines) == 7 and csv_lines[1].startswith("learning_rate-0.01_seed-0,0.01,0,finished,60,60,")
    # the commands that read runs read trials unchanged
    code, text, _ = cli("runs", directory, "--json")
    assert code == 0 and [r["status"] for r in json.loads(text)] == ["finished"] * 6
    config = yaml.safe_load((directory / "learning_rate-0.1_seed-2" / "config.yaml").read_text())
    assert config["optimizer"]["learning_rate"] == 0.1 and config["run"]["seed"] == 2
    assert resolve(config) == config  # a resolved config: `gdtrain run` takes it as it is


def test_a_finished_sweep_run_again_trains_nothing(small_sweep, cli):
    path, directory, _, _ = small_sweep
    files = {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file() and "sweep." not in p.name}
    code, out, err = cli("sweep", path, "--json")
    result = json.loads(out)
    assert code == 0 and result["backend"] is None  # no backend was even started
    assert all(t["earlier"] and t["status"] == "finished" for t in result["trials"])
    assert {p: p.stat().st_mtime_ns for p in files} == files  # not a byte of a trial rewritten


def test_plot_of_a_sweep_draws_its_groups(small_sweep, tmp_path, cli):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    from gdtrain.commands.plots import plot_sweep

    _, directory, _, _ = small_sweep
    code, out, err = cli("plot", directory, "--out", tmp_path / "sweep.png")
    assert code == 0 and "wrote" in out and (tmp_path / "sweep.png").stat().st_size > 10_000
    assert plot_sweep(directory, tmp_path / "s.svg").read_text().count("(n=3)") >= 2


def test_a_diverging_setting_is_recorded_not_fatal(tmp_path, cli):
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1, 1e6]}}})
    code, out, err = cli("sweep", path, "--json")
    assert code == 0, err
    trials = {t["trial"]: t for t in json.loads(out)["trials"]}
    bad = trials["learning_rate-1000000.0_seed-0"]
    assert bad["status"] == "diverged" and bad["error"].startswith("training diverged at step")
    assert trials["learning_rate-0.1_seed-0"]["status"] == "finished"
    assert json.loads(out)["groups"][-1]["params"][LR] == 1e6  # ranked last


def test_a_trial_that_fails_is_recorded_with_its_message(tmp_path, cli):
    path = write_sweep(tmp_path, {"parameters": {"train.batch_size": {"values": [8, 64]}}})
    code, out, err = cli("sweep", path, "--json")
    assert code == 0, err
    trials = {t["trial"]: t for t in json.loads(out)["trials"]}
    assert trials["batch_size-8_seed-0"]["status"] == "finished"
    failed = trials["batch_size-64_seed-0"]
    assert failed["status"] == "failed" and "batch_size" in failed["error"] and "32" in failed["error"]
    assert "batch_size-64_seed-0: failed" in err  # the line a log gets


def test_a_trial_locked_by_another_process_is_running_elsewhere_and_waited_for(tmp_path, cli):
    from gdtrain.run.rundir import RunDir

    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1, 0.2]}}})
    held = RunDir(tmp_path / "runs" / "sw" / "learning_rate-0.1_seed-0")
    held.ensure_writable()
    held.lock()
    seen = []

    def release():
        time.sleep(1.5)
        held.unlock()

    threading.Thread(target=release, daemon=True).start()
    result = api.sweep(path, on_update=lambda s: seen.append((s.trial.name, s.status)))
    assert ("learning_rate-0.1_seed-0", "elsewhere") in seen
    assert [t["status"] for t in result["trials"]] == ["finished", "finished"]


# ---------------------------------------------------------------- the runner's stop_at


def test_stop_at_saves_with_status_stopped_and_a_resume_equals_never_stopping(tmp_path, cli):
    config = resolve({**BASE, "run": {**BASE["run"], "dir": str(tmp_path / "a")}})
    summary = api.train(config, stop_at=30, stopped_by="a test")
    status = json.loads((tmp_path / "a" / "base" / "status.json").read_text())
    assert summary["status"] == "stopped" and status["status"] == "stopped" and status["step"] == 30
    assert status["stopped_by"] == "a test" and status["total_steps"] == 60
    assert (tmp_path / "a" / "base" / "checkpoints" / "ckpt-00000030.npz").is_file()
    code, out, _ = cli("runs", tmp_path / "a")
    assert "stopped (by a test)" in out
    again = api.train(config, stop_at=30)  # already there: nothing trained
    assert again["steps"] == 30 and again["status"] == "stopped"
    assert api.train(config)["status"] == "finished"
    straight = reference(config, tmp_path / "b")
    assert_same_state(checkpoint_arrays(tmp_path / "a" / "base"), checkpoint_arrays(straight))

    def curve(run):
        return [{k: v for k, v in r.items() if k != "elapsed"} for r in api.read_metrics(run)
                if r["event"] == "train"]

    assert curve(tmp_path / "a" / "base") == curve(straight)  # no extra log line at the stop


# ---------------------------------------------------------------- successive halving


def test_halving_keeps_the_best_and_its_survivors_end_bit_identical(tmp_path, cli):
    rates = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25]
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": rates}}, "seeds": [0, 1],
                                  "early_stop": {"method": "halving", "rate": 3, "min_steps": 6}},
                       base={**BASE, "train": {**BASE["train"], "steps": 120, "checkpoint_every": 0}})
    code, out, err = cli("sweep", path, "--json")
    assert code == 0, err
    result = json.loads(out)
    trials = {t["trial"]: t for t in result["trials"]}
    by_rate = {r: [t for t in trials.values() if t["params"][LR] == r] for r in rates}
    # rung 1: 9 settings to 6 steps, 3 go on to 18 steps, 1 goes on to the end (120)
    steps = sorted({t["step"] for t in trials.values()})
    assert steps == [6, 18, 120]
    finished = [r for r, ts in by_rate.items() if all(t["status"] == "finished" for t in ts)]
    at_18 = [r for r, ts in by_rate.items() if all(t["step"] == 18 for t in ts)]
    assert len(finished) == 1 and len(at_18) == 2
    # the rung decisions: the best third by the mean over seeds at each budget
    spec = load_sweep(path)
    at6 = {}
    for t in spec.trials:
        ev = [r for r in api.read_metrics(t.run_dir) if r["event"] == "eval" and r["step"] == 6]
        at6.setdefault(t.setting, []).append(ev[-1]["mse"])
    kept = survivors(at6, 3, "minimize")
    assert sorted(json.loads(s)[LR] for s in kept) == sorted(finished + at_18)
    # a trial the sweep stopped: status stopped, who stopped it, its checkpoint saved
    for r, ts in by_rate.items():
        for t in ts:
            status = json.loads((Path(t["run_dir"]) / "status.json").read_text())
            if r in finished:
                assert status["status"] == "finished"
                continue
            assert status["status"] == "stopped" and status["stopped_by"].startswith("sweep: halving budget")
            assert (Path(t["run_dir"]) / "checkpoints" / f"ckpt-{t['step']:08d}.npz").is_file()
    # the winner was stopped twice and resumed twice: it ends as an uninterrupted run
    for t in spec.trials:
        if t.params[LR] in finished:
            straight = reference(t.config, tmp_path / "straight")
            assert_same_state(checkpoint_arrays(t.run_dir), checkpoint_arrays(straight), t.name)
    # run again: the same decisions, read from the run directories, nothing trained
    code, out, _ = cli("sweep", path, "--json")
    again = json.loads(out)
    assert again["backend"] is None
    assert [(t["status"], t["step"]) for t in again["trials"]] == [
        (t["status"], t["step"]) for t in result["trials"]]


# ---------------------------------------------------------------- interrupted and killed sweeps

# Long enough to be caught mid-trial: an MLP on 2000 points, 1500 steps, saving every 25.
SLOW = {**BASE, "data": {"name": "linear_sum", "samples": 2000}, "model": {"name": "mlp", "hidden": 64},
        "train": {"batch_size": 50, "steps": 1500, "log_every": 100, "checkpoint_every": 25}}


def _start_sweep(tmp_path: Path, path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*GDTRAIN, "sweep", str(path), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: its workers with it


def _wait_mid_trial(directory: Path, proc: subprocess.Popen, count: int = 1, timeout: float = 120) -> None:
    """Until `count` trials have saved a checkpoint and none has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        saved = [d for d in directory.glob("*/checkpoints") if any(d.glob("ckpt-*.npz"))]
        if len(saved) >= count:
            return
        time.sleep(0.01)
    raise AssertionError("no trial saved a checkpoint in time")


# Trials six times SLOW's length (as many checkpoints): a signal sent once two trials have
# saved must find both still running. With SLOW (about 0.1 s a trial on a quiet machine),
# the second worker started 600 steps behind the first, which finished before the signal.
LONG = {**SLOW, "train": {**SLOW["train"], "steps": 9000, "checkpoint_every": 150, "log_every": 600}}


@pytest.fixture(scope="module")
def slow_references(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    spec = load_sweep(write_sweep(tmp, {"parameters": {LR: {"values": [0.02, 0.05]}}, "seeds": [0, 1]},
                                  base=LONG))
    return {t.name: checkpoint_arrays(reference(t.config, tmp / "straight")) for t in spec.trials}


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_makes_every_running_trial_save_and_stop_and_a_rerun_resumes_exactly(
        tmp_path, slow_references, workers):
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.02, 0.05]}}, "seeds": [0, 1]}, base=LONG)
    directory = tmp_path / "runs" / "sw"
    proc = _start_sweep(tmp_path, path, "--workers", str(workers))
    _wait_mid_trial(directory, proc, count=workers)
    os.kill(proc.pid, signal.SIGINT)  # the driver alone: it hands the signal to its workers
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGINT: every running trial saved and stopped; run the same command again" in err
    assert "Traceback" not in err
    statuses = {d.name: json.loads((d / "status.json").read_text()) for d in directory.iterdir()
                if (d / "status.json").exists()}
    interrupted = [n for n, s in statuses.items() if s["status"] == "interrupted"]
    assert len(interrupted) == workers, statuses
    assert len(statuses) == workers  # nothing started after the signal
    for name in interrupted:  # saved where it stopped
        step = statuses[name]["step"]
        assert (directory / name / "checkpoints" / f"ckpt-{step:08d}.npz").is_file()
    result = sweep_json(directory)
    assert result["interrupted"] == signal.SIGINT
    proc = _start_sweep(tmp_path, path, "--workers", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    for name, arrays in slow_references.items():
        assert_same_state(checkpoint_arrays(directory / name), arrays, name)


def test_a_sweep_killed_with_sigkill_resumes_every_trial_exactly(tmp_path, slow_references):
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.02, 0.05]}}, "seeds": [0, 1]}, base=LONG)
    directory = tmp_path / "runs" / "sw"
    proc = _start_sweep(tmp_path, path, "--workers", "2")
    _wait_mid_trial(directory, proc, count=2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, no chance to save
    proc.communicate(timeout=60)
    left = [json.loads(p.read_text())["status"] for p in directory.glob("*/status.json")]
    assert "running" in left  # killed mid-trial: the status could not be updated
    proc = _start_sweep(tmp_path, path, "--workers", "2", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert [t["status"] for t in json.loads(out)["trials"]] == ["finished"] * 4
    for name, arrays in slow_references.items():
        assert_same_state(checkpoint_arrays(directory / name), arrays, name)


# ---------------------------------------------------------------- the local pool


def test_a_pool_pins_blas_threads_and_equals_in_process_trials(tmp_path, cli):
    from gdtrain.sweep.backends import cores

    base = {**BASE, "run": {k: v for k, v in BASE["run"].items() if k != "threads"}}
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.05, 0.1]}}}, base=base)
    code, out, err = cli("sweep", path, "--workers", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["backend"] == "local pool" and result["workers"] == 2
    expected = max(1, cores() // 2)
    for t in result["trials"]:
        status = json.loads((Path(t["run_dir"]) / "status.json").read_text())
        assert status["compute"]["threads"] == expected and t["status"] == "finished"
        assert t["node"] is None and t["seconds"] > 0


def test_a_worker_killed_mid_trial_is_replaced_and_its_trial_retried(tmp_path):
    from gdtrain.sweep.backends import LocalPool

    spec = load_sweep(write_sweep(tmp_path, {"parameters": {LR: {"values": [0.02]}}}, base=SLOW))
    trial = spec.trials[0]
    pool = LocalPool(1)
    try:
        future = pool.submit({"name": trial.name, "config": trial.config, "stop_at": None})
        deadline = time.monotonic() + 120
        while not any((trial.run_dir / "checkpoints").glob("ckpt-*.npz")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(pool._workers[0].process.pid, signal.SIGKILL)
        result = future.result(timeout=300)
    finally:
        pool.close()
    assert result["status"] == "finished"
    straight = reference(trial.config, tmp_path / "straight")
    assert_same_state(checkpoint_arrays(trial.run_dir), checkpoint_arrays(straight))


# ---------------------------------------------------------------- backends and options


def test_backend_options_are_checked_before_anything_runs(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1]}}})
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["run"]["dir"] = "runs"  # relative: fine here, not on a cluster
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    code, _, err = cli("sweep", path, "--backend", "ray", "--address", "127.0.0.1:1")
    assert code == 2 and "run.dir: 'runs' is relative; the nodes of a cluster (--address)" in err
    code, _, err = cli("sweep", path, "--address", "127.0.0.1:1")
    assert code == 2 and "--address goes with --backend ray" in err
    code, _, err = cli("sweep", path, "--backend", "dask")
    assert code == 2 and "--backend: expected local or ray, got 'dask'" in err
    code, _, err = cli("sweep", path, "--workers", "0")
    assert code == 2
    assert not (tmp_path / "runs").exists()


def test_without_ray_the_ray_backend_says_how_to_install_it(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were absent
    path = write_sweep(tmp_path, {"parameters": {LR: {"values": [0.1]}}})
    code, _, err = cli("sweep", path, "--backend", "ray")
    assert code == 2 and "--backend ray needs ray, an optional extra: pip install 'gdtrain[ray]'" in err
    assert "RAY_AUTH_TOKEN" not in os.environ and "RAY_USAGE_STATS_ENABLED" not in os.environ
    assert not (tmp_path / "runs" / "sw").exists()


def test_render_value_spells_values_as_names():
    assert [render_value(v) for v in (0.01, 1e-05, 3, True, None, "adam", ["W", "b"], "a/b")] == [
        "0.01", "1e-05", "3", "true", "null", "adam", "W.b", "a_b"]


# ---------------------------------------------------------------- the public API


def test_api_trains_with_a_metrics_callback_and_reads_what_the_run_wrote(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, "run": {**BASE["run"], "dir": str(tmp_path)}}))
    config = api.load_config(tmp_path / "c.yaml", {LR: 0.05, "train.eval_every": 20, "run.name": "lr"})
    assert config["optimizer"]["learning_rate"] == 0.05
    assert api.load_config(tmp_path / "c.yaml", ["optimizer.learning_rate=0.05", "train.eval_every=20",
                                                 "run.name=lr"]) == config
    with pytest.raises(ConfigError, match="--set optimizer.learnig_rate: unknown option"):
        api.load_config(tmp_path / "c.yaml", {"optimizer.learnig_rate": 0.1})
    seen = []
    summary = api.train(config, on_metrics=seen.append)
    assert summary["status"] == "finished" and summary["steps"] == 60
    assert seen == api.read_metrics(tmp_path / "lr")
    assert [r["event"] for r in seen].count("eval") == 3
    assert api.evaluate(tmp_path / "lr")["mse"] == summary["eval"]["mse"]
    assert api.run_status(tmp_path / "lr")["status"] == "finished"


def test_api_train_in_a_thread_installs_no_signal_handlers(tmp_path):
    config = resolve({**BASE, "run": {**BASE["run"], "dir": str(tmp_path)}})
    before = signal.getsignal(signal.SIGINT)
    out = {}

    def work():
        out["summary"] = api.train(config)  # signal.signal() would raise ValueError here

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert out["summary"]["status"] == "finished"
    assert signal.getsignal(signal.SIGINT) is before


def test_the_readme_notebook_example_runs_as_shown(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- api example -->\n```python\n(.*?)```", readme, re.S)
    assert block, "README's Python API example (marked <!-- api example -->) is missing"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "data").symlink_to(REPO / "data")
    for name in ("mnist_softmax.yaml",):
        (tmp_path / "configs" / name).write_text((REPO / "configs" / name).read_text())
    from threadpoolctl import threadpool_limits

    namespace: dict = {}
    with threadpool_limits(1, user_api="blas"):  # two threads on a busy machine take 10x as long
        exec(compile(block.group(1), "README.md", "exec"), namespace)  # our own README
    assert api.run_status(tmp_path / "runs" / "softmax_lr0.003")["status"] == "finished"


def test_dump_yaml_of_a_trial_config_is_what_its_run_directory_holds(small_sweep):
    path, directory, _, _ = small_sweep
    for t in load_sweep(path).trials:
        assert (t.run_dir / "config.yaml").read_text() == dump_yaml(t.config)
