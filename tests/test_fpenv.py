"""run.flush_subnormals: FTZ/DAZ in the training loop (gdtrain/core/fpenv.py).

A slot that decays through the subnormal range becomes exactly what the flags specify
(zero where the result would be subnormal), in every thread that computes, and a resumed
run with flushing on ends with the uninterrupted run's bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from resume_helpers import QUIET, Recorder, assert_same_state, checkpoint_arrays, cut_back

from gdtrain.config.validate import resolve
from gdtrain.core import compute, fpenv
from gdtrain.run import checkpoint
from gdtrain.run.loop import train

needs_fpenv = pytest.mark.skipif(not fpenv.supported(), reason="FTZ/DAZ cannot be set on this platform")
TINY = np.finfo(np.float32).tiny


def subnormal_count(a: np.ndarray) -> int:
    """From the bits: with DAZ set, `x != 0` is false for a subnormal x."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return int(np.count_nonzero(((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)))


SMALLEST = np.array([1], np.uint32).view(np.float32)  # 1.4e-45, made from the bits


# ------------------------------------------------------------------ the flags

@needs_fpenv
def test_flushed_sets_ftz_and_daz_and_puts_them_back():
    half_tiny = np.full(4, TINY, np.float32) * np.float32(0.5)
    assert subnormal_count(half_tiny) == 4 and not fpenv.flushing()
    with fpenv.flushed(True) as every:
        assert every and fpenv.flushing()
        assert subnormal_count(np.full(4, TINY, np.float32) * np.float32(0.5)) == 0  # FTZ: results
        assert (SMALLEST * np.float32(1e30)).item() == 0.0  # DAZ: a subnormal operand reads as 0
        assert np.float64(2.2250738585072014e-308) / 4 == 0.0  # float64 too
    assert not fpenv.flushing()
    assert (SMALLEST * np.float32(1e30)).item() > 0
    with pytest.raises(RuntimeError), fpenv.flushed(True):
        raise RuntimeError
    assert not fpenv.flushing()


def test_flushed_off_changes_nothing():
    before = fpenv.flushing()
    with fpenv.flushed(False) as every:
        assert every is False and fpenv.flushing() == before


def test_a_platform_without_the_flags_warns_and_computes_as_before(monkeypatch):
    monkeypatch.setattr(fpenv, "_LIB", None)
    warnings = []
    with fpenv.flushed(True, warnings.append) as every:
        assert every is False
        assert (SMALLEST * np.float32(1e30)).item() > 0
    assert len(warnings) == 1 and "run.flush_subnormals" in warnings[0] and "no way to set" in warnings[0]


@needs_fpenv
@pytest.mark.skipif(compute.describe().get("blas") != "openblas", reason="OpenBLAS's worker threads")
def test_the_blas_worker_threads_flush_inside_and_not_after():
    """The flags are per thread: set in the main thread alone, the part of a product that a
    BLAS worker computes keeps its subnormals; flushed() restarts the workers with them."""
    a = np.full((512, 64), 1e-20, np.float32)
    b = np.full((64, 512), 1e-20 / 64, np.float32)  # every result 1e-40: subnormal
    with compute.threads(2):
        if compute.describe()["threads"] < 2:
            pytest.skip("the BLAS runs one thread here")
        assert subnormal_count(a @ b) == a.shape[0] * b.shape[1]
        fpenv.set_flush(True)  # this thread only
        try:
            main_only = subnormal_count(a @ b)
        finally:
            fpenv.set_flush(False)
        assert 0 < main_only < a.shape[0] * b.shape[1]  # the workers' share kept them
        with fpenv.flushed(True) as every:
            assert every and subnormal_count(a @ b) == 0
        assert subnormal_count(a @ b) == a.shape[0] * b.shape[1]  # the workers are back to IEEE


def test_the_record_names_a_change_of_flushing():
    info = {"numpy": "2.4.6", "blas": "openblas", "blas_version": "0.3.31", "kernel": "Haswell",
            "threads": 1}
    assert compute.differences(info, info | {"flush_subnormals": False}) == []  # before the record: off
    assert compute.differences(info, info | {"flush_subnormals": True}) == ["flush_subnormals false -> true"]
    assert compute.label(info | {"flush_subnormals": True}) == (
        "openblas 0.3.31 (Haswell), 1 thread, subnormals flushed")


# ------------------------------------------------------------------ in a run

STEPS, EVERY = 1000, 100
MOMENTUM = np.float32(0.9)


def _data(path: Path) -> Path:
    """Feature 1 is nonzero in example 0 only: in batches of 1, unshuffled, W[1]'s gradient
    is nonzero at step 0 and exactly zero for the 999 steps after, so its momentum slot
    decays as 0.9^t, through the subnormal range from about step 830 on."""
    rng = np.random.default_rng(0)
    x = np.zeros((STEPS, 2), np.float32)
    x[:, 0] = rng.random(STEPS)
    x[0, 1] = 1.0
    np.savez(path, x=x, y=(2 * x[:, 0] + x[:, 1])[:, None])
    return path


def _config(root: Path, name: str, flush: bool) -> dict:
    data = root / "d.npz"
    if not data.exists():
        _data(data)
    return resolve({
        "run": {"name": name, "dir": str(root), "flush_subnormals": flush, "threads": 1},
        "data": {"name": "npz", "path": str(data)},
        "model": {"name": "linear", "use_bias": False},
        "loss": {"name": "mse"},
        "optimizer": {"name": "momentum", "learning_rate": 0.01, "momentum": 0.9},
        "train": {"batch_size": 1, "steps": STEPS, "shuffle": False, "log_every": 0,
                  "checkpoint_every": EVERY, "keep_checkpoints": 100},
    })


def _decayed(a: np.float32, steps: int, flush: bool) -> np.float32:
    """The slot after `steps` updates with a zero gradient, TF1's accum = m·accum + g: each
    result that would be subnormal is 0 with flushing (FTZ), and no operand is subnormal."""
    for _ in range(steps):
        a = a * MOMENTUM
        if flush and abs(a) < TINY:
            a = np.float32(0.0)
        a = a + np.float32(0.0)
    return a


def _slots(run_dir: Path) -> dict[int, np.float32]:
    out = {}
    for p in checkpoint.list_checkpoints(run_dir / "checkpoints"):
        arrays, _ = checkpoint.load(p)
        out[checkpoint.step_of(p)] = arrays["slot/accum/W"][1, 0]
    return out


@needs_fpenv
@pytest.mark.parametrize("flush", [False, True])
def test_a_slot_decaying_through_the_subnormal_range_is_flushed_as_specified(tmp_path, monkeypatch, flush):
    monkeypatch.setattr("os.fsync", lambda fd: None)
    summary = train(_config(tmp_path, "run", flush), Recorder(), QUIET)
    slots = _slots(tmp_path / "run")
    for step in range(2 * EVERY, STEPS + 1, EVERY):  # from each checkpoint's value, the next's
        expected = _decayed(slots[step - EVERY], EVERY, flush)
        assert abs(slots[step]).tobytes() == abs(expected).tobytes(), step  # the sign of 0 aside
    final = summary["trainer"].state_arrays()
    if flush:
        assert slots[STEPS] == 0 and slots[800] != 0
        assert not any(subnormal_count(v) for v in final.values())
    else:  # the case meets subnormals: decayed, and stuck there (0.9·4 ulp rounds back to 4)
        assert 0 < abs(slots[STEPS]) < TINY and subnormal_count(final["slot/accum/W"]) >= 1
    _, meta = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert meta["compute"]["flush_subnormals"] is flush
    assert not fpenv.flushing()  # the run put the flags back


@needs_fpenv
@pytest.mark.parametrize("cut", [800, 900])  # just before the slot flushes, and after
def test_a_resumed_run_with_flushing_ends_with_the_uninterrupted_bits(tmp_path, monkeypatch, cut):
    monkeypatch.setattr("os.fsync", lambda fd: None)
    train(_config(tmp_path, "ref", True), Recorder(), QUIET)
    cut_back(tmp_path / "ref", tmp_path / "cut", cut)
    reporter = Recorder()
    resumed = train(_config(tmp_path, "cut", True), reporter, QUIET)
    assert resumed["resumed_from"] == cut
    assert not [w for w in reporter.warnings if "machinery" in w]
    assert_same_state(checkpoint_arrays(tmp_path / "cut"), checkpoint_arrays(tmp_path / "ref"))


@needs_fpenv
def test_resuming_with_the_other_setting_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("os.fsync", lambda fd: None)
    config = _config(tmp_path, "ref", True)
    config["train"]["steps"] = 300
    train(config, Recorder(), QUIET)
    reporter = Recorder()
    config = _config(tmp_path, "ref", False)
    train(config, reporter, QUIET)
    (warning,) = [w for w in reporter.warnings if "machinery" in w]
    assert "flush_subnormals true -> false" in warning and "run.flush_subnormals" in warning
    assert any("run.flush_subnormals: True -> False" in m for m in reporter.messages)


@needs_fpenv
def test_evaluating_a_checkpoint_flushes_as_its_run_did(tmp_path, monkeypatch):
    from gdtrain.run import inspect_run

    monkeypatch.setattr("os.fsync", lambda fd: None)
    config = _config(tmp_path, "run", True)
    config["train"]["steps"] = 100
    summary = train(config, Recorder(), QUIET)
    seen = []
    real = inspect_run.evaluate

    def spy(*args, **kwargs):
        seen.append(fpenv.flushing())
        return real(*args, **kwargs)

    monkeypatch.setattr(inspect_run, "evaluate", spy)
    inspect_run.evaluate_checkpoint(summary["checkpoint"], split="train")
    assert seen == [True] and not fpenv.flushing()
