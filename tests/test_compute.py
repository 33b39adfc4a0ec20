"""run.threads and the record of the numerical machinery (BLAS, kernel, threads) that a
checkpoint was computed with: a resume on other machinery says it will not be bit-exact."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from resume_helpers import Recorder, assert_same_state, checkpoint_arrays, cut_back, make_config, run

from gdtrain.core import compute
from gdtrain.core.train import Trainer
from gdtrain.run import checkpoint, npz
from gdtrain.run.hooks import Reporter

needs_blas = pytest.mark.skipif(not compute.describe().get("blas"),
                                reason="threadpoolctl sees no BLAS in this numpy")


def with_threads(config: dict, count: int) -> dict:
    config["run"]["threads"] = count
    return config


class StartInfo(Recorder):
    def start(self, info: dict) -> None:
        self.info = info


def test_describe_names_numpy_and_the_blas():
    info = compute.describe()
    assert info["numpy"] == np.__version__
    if info.get("blas"):
        assert isinstance(info["threads"], int) and info["threads"] >= 1
        assert compute.label(info).startswith(info["blas"])


@needs_blas
def test_threads_limits_inside_and_restores_after():
    before = compute.describe()["threads"]
    with compute.threads(1):
        assert compute.describe()["threads"] == 1
    assert compute.describe()["threads"] == before
    with compute.threads(None):
        assert compute.describe()["threads"] == before


@needs_blas
def test_threads_warns_when_the_blas_cannot_follow(monkeypatch):
    warnings = []
    monkeypatch.setattr(compute, "_blas_pools", lambda: [{"num_threads": 4}])
    with compute.threads(1, warnings.append):
        pass
    assert warnings == ["run.threads: asked for 1 BLAS threads, the BLAS runs 4"]


def test_label_and_differences():
    info = {"numpy": "2.4.6", "blas": "openblas", "blas_version": "0.3.31", "kernel": "Haswell",
            "threads": 1}
    assert compute.label(info) == "openblas 0.3.31 (Haswell), 1 thread"
    assert compute.label({"numpy": "2.4.6", "blas": None}) == "BLAS unknown"
    other = dict(info, kernel="SkylakeX", threads=2)
    assert compute.differences(info, other) == ["kernel Haswell -> SkylakeX", "threads 1 -> 2"]
    assert compute.differences(info, dict(info)) == []
    assert compute.differences(None, info) == []  # a checkpoint from before the record
    assert compute.differences(["forged"], info) == []  # metadata is untrusted input


@needs_blas
def test_run_threads_applies_to_the_run_and_is_recorded(tmp_path):
    reporter = StartInfo()
    summary = run(with_threads(make_config(tmp_path, "one", {"train": {"steps": 5}}), 1), reporter)
    assert reporter.info["compute"]["threads"] == 1
    assert summary["compute"]["threads"] == 1
    _, meta = checkpoint.load(Path(summary["checkpoint"]))
    assert meta["compute"] == compute.describe() | {"threads": 1}
    status = json.loads((tmp_path / "one" / "status.json").read_text())
    assert status["status"] == "finished" and status["compute"] == meta["compute"]
    assert not reporter.warnings


def test_resume_on_the_same_machinery_is_silent_and_bit_exact(tmp_path):
    changes = {"train": {"steps": 12}}
    straight = run(with_threads(make_config(tmp_path, "ref", changes), 1))
    cut_back(tmp_path / "ref", tmp_path / "cut", 6)
    reporter = Recorder()
    resumed = run(with_threads(make_config(tmp_path, "cut", changes), 1), reporter)
    assert resumed["resumed_from"] == 6
    assert not [w for w in reporter.warnings if "machinery" in w]
    assert_same_state(checkpoint_arrays(tmp_path / "cut"), checkpoint_arrays(tmp_path / "ref"))
    assert straight["steps"] == resumed["steps"] == 12


def test_resume_on_other_machinery_warns(tmp_path, monkeypatch):
    config = make_config(tmp_path, "ref", {"train": {"steps": 6}})
    run(config)
    real = compute.describe()
    monkeypatch.setattr(compute, "describe", lambda: real | {"kernel": "Elsewhere", "threads": 64})
    reporter = Recorder()
    config["train"]["steps"] = 8
    run(config, reporter)
    (warning,) = [w for w in reporter.warnings if "machinery" in w]
    assert f"kernel {real.get('kernel')} -> Elsewhere" in warning
    assert f"threads {real.get('threads')} -> 64" in warning
    assert "last bits" in warning and "run.threads" in warning


def test_reporter_base_accepts_the_compute_info():
    Reporter().start({"compute": compute.describe()})  # the no-op base reporter takes any info


@needs_blas
def test_evaluating_a_checkpoint_uses_the_runs_thread_count(tmp_path, monkeypatch):
    from gdtrain.run import inspect_run

    summary = run(with_threads(make_config(tmp_path, "one", {"train": {"steps": 3}}), 1))
    seen = []
    real = inspect_run.evaluate

    def spy(*args, **kwargs):
        seen.append(compute.describe()["threads"])
        return real(*args, **kwargs)

    monkeypatch.setattr(inspect_run, "evaluate", spy)
    inspect_run.evaluate_checkpoint(summary["checkpoint"], split="train")
    assert seen == [1]


@pytest.mark.parametrize("forged", ["openblas", ["x"], 7, {"threads": "many"}])
def test_a_forged_machinery_record_never_breaks_a_resume(tmp_path, forged):
    config = make_config(tmp_path, "ref", {"train": {"steps": 4}})
    summary = run(config)
    path = Path(summary["checkpoint"])
    data = npz.read_npz(path)
    meta = json.loads(data.pop(checkpoint.META_KEY).tobytes())
    meta["compute"] = forged
    np.savez(path, **data, **{checkpoint.META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    config["train"]["steps"] = 6
    reporter = Recorder()
    assert run(config, reporter)["resumed_from"] == 4


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_training_steps_do_not_fault_their_temporaries_in_again(tmp_path):
    """A float64 784-500-10 step allocates and frees ~3 MB arrays; with glibc's adaptive
    thresholds each step faulted ~2,600 fresh pages in (5 ms of a 13 ms step)."""
    import resource

    from gdtrain.config.validate import resolve
    from gdtrain.core.dataset import Dataset, Split

    rng = np.random.default_rng(0)
    data = Dataset("blobs", Split(rng.random((400, 784)), rng.integers(0, 10, 400)), num_classes=10)
    config = resolve({
        "run": {"name": "faults", "dir": str(tmp_path), "dtype": "float64"},
        "data": {"name": "linear_sum"},  # replaced by `data` below; resolve needs a valid one
        "model": {"name": "mlp", "hidden": 500},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "momentum", "learning_rate": 0.01},
        "l2": {"scale": 1e-4},
        "ema": {"decay": 0.99},
        "train": {"batch_size": 200, "steps": 40},
    })
    trainer = Trainer(config, data)
    for _ in range(5):
        trainer.step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        trainer.step()
    per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
    assert per_step < 50, f"{per_step:.0f} page faults per step"
