"""The command line end to end (typer's CliRunner, in-process): run on MNIST and on small
generators, eval --json, resume after raising train.steps, --smoke, check, dtypes, errors,
and the small seed-experiment configs reaching the figures in DESIGN.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gdtrain.run import checkpoint
from gdtrain.run.inspect_run import load_trainer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """The newest checkpoint's arrays, read without pickle and verified."""
    path = checkpoint.resolve_path(run_dir)
    with np.load(path, allow_pickle=False) as npz:  # the format promise: plain npz, no pickle
        assert any(f.startswith("param/") for f in npz.files)
        for f in npz.files:
            npz[f]  # every member loads without pickle
    arrays, _ = checkpoint.load(path)
    return arrays


# ------------------------------------------------------------------ MNIST


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """20 steps of the seed's softmax regression on real MNIST (shared by the MNIST tests)."""
    from typer.testing import CliRunner

    from gdtrain.commands.cli import app

    runs = tmp_path_factory.mktemp("mnist")
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "mnist_softmax.yaml"), "--quiet",
                                      "--set", "train.steps=20", "--set", f"run.dir={runs}"])
    return runs / "mnist_softmax", result


def test_run_on_mnist(mnist_run):
    run_dir, result = mnist_run
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "step 20" in lines[0] and "test accuracy" in lines[0]
    assert (run_dir / "config.yaml").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["steps"] == 20 and saved["loss"]["reduction"] == "sum"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r.get("event") == "train"]
    assert train_records[-1]["step"] == 20
    assert np.isfinite(train_records[-1]["loss"]) and train_records[-1]["lr"] == 0.01
    arrays = final_arrays(run_dir)
    assert arrays["param/W"].shape == (784, 10) and arrays["param/W"].dtype == np.float32


def test_eval_json_on_mnist(mnist_run, cli):
    run_dir, result = mnist_run
    assert result.exit_code == 0
    code, out, err = cli("eval", run_dir, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["split"] == "test" and report["examples"] == 10000 and report["step"] == 20
    assert report["weights"] == "raw"  # the run has no EMA
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10000
    # the test set's class counts are MNIST's
    assert confusion.sum(1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 10000)
    assert 0.6 < report["accuracy"] < 0.95  # 20 steps of 100: well above chance, short of 0.92
    per_class = np.diag(confusion) / confusion.sum(1)
    np.testing.assert_allclose(report["per_class_accuracy"], per_class)
    assert np.isfinite(report["loss"])

    code, out, _ = cli("eval", run_dir, "--json", "--split", "train")
    assert code == 0 and json.loads(out)["examples"] == 60000


# ------------------------------------------------------------------ small generators


def test_readme_softmax_examples_work_in_order_after_make_run(tmp_path, monkeypatch):
    """README's `gdtrain run configs/mnist_softmax.yaml ...` lines, as a new user types them
    in a fresh clone right after `make run` trained that config for 1000 steps."""
    import shlex

    from typer.testing import CliRunner

    from gdtrain.commands.cli import app

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    # README's figure commands write under /tmp/gdtrain-docs: here under tmp_path, so that
    # runs left there by someone who ran them (with other settings) cannot refuse these
    examples = [[arg.replace("/tmp/gdtrain-docs", str(tmp_path / "gdtrain-docs"))
                 for arg in shlex.split(line, comments=True)[1:]] for line in readme.splitlines()
                if line.startswith("gdtrain run configs/mnist_softmax.yaml ")]
    assert len(examples) >= 3
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    for args in [["run", "configs/mnist_softmax.yaml"], *examples]:  # `make run` first
        result = CliRunner().invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, f"gdtrain {shlex.join(args)}: {result.stderr}"


def test_run_and_eval_regression_generator(cli, write_config, tmp_path):
    code, out, err = cli("run", write_config(), "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "small"
    assert "step 20" in out
    code, out, err = cli("eval", run_dir, "--json")
    assert code == 0, err
    report = json.loads(out)
    # no test split: evaluated on the training set, and it says so
    assert report["split"] == "train" and "note" in report and report["examples"] == 32
    assert "accuracy" not in report and "confusion" not in report
    assert report["mse"] == pytest.approx(report["loss"], rel=1e-6)  # MSE loss, mean: the same figure


def test_run_and_eval_classifier_generator(cli, write_config, tmp_path):
    config = write_config({"run": {"name": "twog"},
                           "data": {"name": "two_gaussians", "samples_per_class": 20, "test_fraction": 0.25},
                           "loss": {"name": "sigmoid_cross_entropy"},
                           "ema": {"decay": 0.9}})
    code, _, err = cli("run", config, "--quiet")
    assert code == 0, err
    for weights in ("ema", "raw"):
        code, out, err = cli("eval", tmp_path / "runs" / "twog", "--json", "--weights", weights)
        assert code == 0, err
        report = json.loads(out)
        assert report["weights"] == weights and report["split"] == "test" and report["examples"] == 10
        confusion = np.array(report["confusion"])
        assert confusion.shape == (2, 2) and confusion.sum() == 10
        assert confusion.sum(1).tolist() == [5, 5]
        assert 0 <= report["mse"] <= 1  # probabilities against 0/1 labels, not logits


def test_resume_after_raising_steps_equals_one_straight_run(cli, write_config, tmp_path):
    changes = {"model": {"name": "mlp", "hidden": 4},
               "optimizer": {"name": "momentum", "learning_rate": 0.05},
               "schedule": {"name": "exponential", "decay_rate": 0.9, "decay_steps": "epoch"},
               "ema": {"decay": 0.99}, "l2": {"scale": 0.01},
               "data": {"name": "linear_sum", "samples": 30},
               "train": {"steps": 25, "batch_size": 8}}
    straight = write_config({**changes, "run": {"name": "straight"}}, name="straight.yaml")
    split = write_config({**changes, "run": {"name": "split"}}, name="split.yaml")
    assert cli("run", straight, "--quiet")[0] == 0
    code, out, _ = cli("run", split, "--quiet", "--set", "train.steps=11")
    assert code == 0 and "step 11" in out
    code, out, err = cli("run", split)
    assert code == 0, err
    assert "resuming" in out + err and "from step 11" in out + err
    a = final_arrays(tmp_path / "runs" / "straight")
    b = final_arrays(tmp_path / "runs" / "split")
    assert set(a) == set(b) and any(k.startswith("ema/") for k in a)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_a_resumed_runs_summary_gives_this_sessions_time_and_the_whole(cli, write_config, tmp_path):
    """metrics.jsonl's elapsed counts every session; the summary says which figure is which."""
    import re

    config = write_config({"run": {"name": "timed"}, "train": {"steps": 40}})
    code, out, err = cli("run", config, "--set", "train.steps=20")
    assert code == 0, err
    assert re.search(r"training time\W+[0-9.]+s\W*$", out, re.M), out  # one session: one figure
    code, out, err = cli("run", config)
    assert code == 0, err
    found = re.search(r"training time\W+([0-9.]+)s this session, ([0-9.]+)s in all", out)
    assert found, out
    session, total = map(float, found.groups())
    status = json.loads((tmp_path / "runs" / "timed" / "status.json").read_text())
    assert session <= total and total == pytest.approx(status["elapsed"], abs=0.006)


def test_verify_one_checkpoint_file(cli, write_config, tmp_path):
    config = write_config({"run": {"name": "v"}, "train": {"steps": 6, "checkpoint_every": 3}})
    assert cli("run", config, "-q")[0] == 0
    ckpts = tmp_path / "runs" / "v" / "checkpoints"
    code, out, err = cli("verify", ckpts / "ckpt-00000003.npz")
    assert code == 0, err
    assert out.startswith("good") and "ckpt-00000003.npz  step 3" in out and len(out.splitlines()) == 1
    damaged = ckpts / "ckpt-00000006.npz"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    code, out, err = cli("verify", damaged)
    assert code == 1 and out.startswith("BAD") and "ckpt-00000006.npz" in err
    code, _, err = cli("verify", ckpts / "ckpt-00000009.npz")
    assert code == 2 and "no such run directory or checkpoint" in err


def test_restart_starts_over(cli, write_config, tmp_path):
    config = write_config()
    assert cli("run", config, "--quiet")[0] == 0
    first = final_arrays(tmp_path / "runs" / "small")
    code, out, err = cli("run", config, "--restart")
    assert code == 0 and "resuming" not in out + err
    again = final_arrays(tmp_path / "runs" / "small")
    assert first["param/W"].tobytes() == again["param/W"].tobytes()  # same seed, same run
    assert len(checkpoint.list_checkpoints(tmp_path / "runs" / "small" / "checkpoints")) == 1


def test_smoke_prints_one_line_and_leaves_no_run(cli, write_config, tmp_path):
    config = write_config({"ema": {"decay": 0.9}, "optimizer": {"name": "adam", "learning_rate": 0.01}})
    code, out, err = cli("run", config, "--smoke")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 and out.startswith("smoke ok")
    assert "bit-identical" in out
    assert not (tmp_path / "runs" / "small").exists()


def test_check_prints_the_resolved_config(cli, write_config):
    config = write_config({"l2": {"scale": "1e-4"}})
    config.write_text(config.read_text().replace("'1e-4'", "1e-4"))  # YAML 1.1 would read a string
    code, out, err = cli("check", config, "--set", "optimizer.learning_rate=2.5e-3")
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["optimizer"]["learning_rate"] == 0.0025  # a number, not the string '2.5e-3'
    assert resolved["l2"]["scale"] == 1e-4 and resolved["l2"]["params"] == ["W"]
    assert resolved["train"]["shuffle"] is True and resolved["train"]["trainable"] == ["*"]
    assert resolved["loss"]["reduction"] == "mean"
    assert resolved["run"]["dtype"] == "float32" and resolved["model"]["use_bias"] is True


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_everywhere(cli, write_config, tmp_path, dtype):
    config = write_config({"run": {"dtype": dtype}, "model": {"name": "mlp", "hidden": 3},
                           "optimizer": {"name": "adam", "learning_rate": 0.01},
                           "ema": {"decay": 0.9}, "l2": {"scale": 0.01}})
    code, _, err = cli("run", config, "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "small"
    arrays = final_arrays(run_dir)
    assert {a.dtype for a in arrays.values()} == {np.dtype(dtype)}
    assert {k.split("/")[0] for k in arrays} == {"param", "slot", "ema"}
    trainer, _, _ = load_trainer(run_dir)
    out, _ = trainer.model.forward(trainer.eval_params("ema"), trainer.dataset.train.x)
    assert out.dtype == np.dtype(dtype)
    assert trainer.loss.predict(out).dtype == np.dtype(dtype)
    code, out, _ = cli("eval", run_dir, "--json")
    assert code == 0 and np.isfinite(json.loads(out)["loss"])


@pytest.mark.parametrize("changes,code,message", [
    ({"optimizer": {"name": "adamax", "learning_rate": 0.1}}, 2, "did you mean 'adam'"),
    ({"train": {"trainable": ["V"]}}, 2, "matches no parameter"),
    ({"schedule": {"name": "exponential", "decay_steps": "0 epochs"}}, 2, "decay_steps"),
    ({"optimizer": {"name": "sgd", "learning_rate": 1e30}}, 3, "diverged"),
])
def test_bad_input_is_one_line_and_an_exit_code(cli, write_config, changes, code, message):
    got, out, err = cli("run", write_config(changes), "--quiet")
    assert got == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdtrain: error:") and message in lines[0]
    assert "Traceback" not in out + err


# ------------------------------------------------------------------ the seed experiments


def run_seed_config(cli, tmp_path, name: str) -> dict[str, np.ndarray]:
    code, _, err = cli("run", CONFIGS / f"{name}.yaml", "--quiet", "--set", f"run.dir={tmp_path}")
    assert code == 0, err
    return {k.removeprefix("param/"): v for k, v in final_arrays(tmp_path / name).items()}


def test_linear_sum_finds_weights_near_one(cli, tmp_path):
    """Seed: weights ≈ [0.98, 1.02] (in some order)."""
    w = sorted(run_seed_config(cli, tmp_path, "linear_sum")["W"].ravel().tolist())
    assert w == pytest.approx([0.98, 1.02], abs=0.05)


def test_constant_target_scale_near_9_75(cli, tmp_path):
    """Seed: a ≈ 9.75 after 100 steps."""
    a = run_seed_config(cli, tmp_path, "constant_target")["W"].item()
    assert a == pytest.approx(9.75, abs=0.1)


def test_two_gaussians_shift_near_minus_1_1(cli, tmp_path):
    """Seed: a ≈ -1.1; W stays at 1 (frozen)."""
    p = run_seed_config(cli, tmp_path, "two_gaussians")
    assert p["W"].item() == 1.0
    assert p["b"].item() == pytest.approx(-1.1, abs=0.15)


@pytest.mark.parametrize("name", ["mnist_deep_sigmoid", "mnist_deep_relu", "mnist_deep_decay",
                                  "mnist_deep_dropout"])
def test_tutorial_ladder_configs_smoke(cli, name):
    """The deep MNIST configs (Görner's tutorial) build, train a few steps, save, resume
    bit-identically and evaluate; each names the tutorial step its header reproduces."""
    path = CONFIGS / f"{name}.yaml"
    assert "without a PhD" in path.read_text().split("run:")[0]
    code, out, err = cli("run", path, "--smoke")
    assert code == 0, err
    assert out.startswith("smoke ok") and "bit-identical" in out
    resolved = yaml.safe_load(cli("check", path, "--no-data")[1])
    assert resolved["model"]["hidden"] == [200, 100, 60, 30]
    assert resolved["model"]["dropout"] == (0.25 if name.endswith("dropout") else 0.0)
