"""The step's element-wise parts run block by block (gdtrain/core/elementwise.py) with the very
bits of running each part over the whole arrays in turn, as the step did before: for every
optimizer x penalty x clip x EMA, float32 and float64, frozen parameters, block sizes that
divide no array, two threads, non-contiguous arrays; Adam's powers advance once per step."""

from __future__ import annotations

import copy
import itertools
import warnings

import numpy as np
import pytest
from tool_runs import config, values_npz

from gdtrain.config.validate import resolve
from gdtrain.core.elementwise import ElementwisePass, plan_blocks
from gdtrain.core.optimizers import OPTIMIZERS
from gdtrain.core.train import StepResult, Trainer
from gdtrain.data import load_dataset

OPTIMIZER_CASES = {
    "sgd": {"name": "sgd", "learning_rate": 0.05},
    "momentum": {"name": "momentum", "learning_rate": 0.05, "momentum": 0.9},
    "nesterov": {"name": "momentum", "learning_rate": 0.05, "momentum": 0.5, "nesterov": True},
    "adam": {"name": "adam", "learning_rate": 0.01},
    "adamw": {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1},
    "rmsprop": {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5},
    "adagrad": {"name": "adagrad", "learning_rate": 0.05},
}
PENALTY_CASES = {
    "none": {},
    "l2": {"l2": {"scale": 0.01, "params": ["*"]}},
    "l1": {"penalties": [{"name": "l1", "scale": 0.01}]},
    "l2+l1": {"l2": {"scale": 0.01}, "penalties": [{"name": "l1", "scale": 0.02, "params": ["W1", "b1"]}]},
}
CLIP_CASES = {
    "none": {},
    "value": {"clip": {"name": "value", "min": -0.05, "max": 0.04}},
    "norm": {"clip": {"name": "norm", "clip_norm": 0.1}},
    "global_norm": {"clip": {"name": "global_norm", "clip_norm": 0.1}},
}
# (EMA, trainable): without an EMA every parameter trains; with one, b1 is frozen
AVERAGE_CASES = {"no-ema": ({}, ["*"]), "ema-b1-frozen": ({"ema": {"decay": 0.9}}, ["W1", "W2", "b2"])}
STEPS = 4


def test_every_optimizer_has_a_case():
    assert {c["name"] for c in OPTIMIZER_CASES.values()} == set(OPTIMIZERS.names())


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return values_npz(tmp_path_factory.mktemp("elementwise"), n=48, d=5, outputs=3)


def _trainers(data_path, dtype, sections, passes):
    """Twin trainers of one config (MLP 5-13-3: W1 65 values, b1 13, W2 39, b2 3), one per pass."""
    raw = config(data_path.parent, **{"data": {"name": "npz", "path": str(data_path)},
                                      "model": {"name": "mlp", "hidden": 13, "activation": "tanh"},
                                      "run": {"dtype": dtype}, **copy.deepcopy(sections)})
    resolved = resolve(raw)
    dataset = load_dataset(resolved["data"], dtype)
    out = []
    for elementwise in passes:
        t = Trainer(copy.deepcopy(resolved), dataset)
        t.elementwise = elementwise
        out.append(t)
    return out


def whole_array_step(t: Trainer) -> StepResult:
    """The step as it was before the blocked pass: each part over the whole arrays in turn."""
    step = t.step_count
    x, y = t.stream.batch(step)
    loss, grads = t.gradients(t.params, x, y, (t.seed, step))
    lr = t.lr(step)
    if t.clip is not None:
        t.clip.apply(grads)
    updates, t.opt_state = t.optimizer.update(grads, t.opt_state, lr, t.params)
    for k, u in updates.items():
        t.params[k] += u
    t.step_count = step + 1
    if t.average is not None:
        t.average.update(t.params, t.step_count)
    return StepResult(t.step_count, loss, lr)


def _assert_same_bits(got: Trainer, want: Trainer, what: str):
    a, b = got.state_arrays(), want.state_arrays()
    assert a.keys() == b.keys(), what
    for name in a:
        assert a[name].dtype == b[name].dtype, f"{what}: {name}"
        # same bytes: equal values, NaNs and the sign of zero included
        assert a[name].tobytes() == b[name].tobytes(), f"{what}: {name} differs"
    assert got.scalars() == want.scalars(), what


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_CASES))
def test_blocked_steps_give_the_whole_array_bits(data_path, optimizer, dtype):
    for (p_name, penalty), (c_name, clip), (a_name, (average, trainable)) in itertools.product(
            PENALTY_CASES.items(), CLIP_CASES.items(), AVERAGE_CASES.items()):
        what = f"{optimizer} {dtype} penalty {p_name} clip {c_name} {a_name}"
        sections = {"optimizer": OPTIMIZER_CASES[optimizer], **penalty, **clip, **average}
        sections["train"] = {"batch_size": 8, "trainable": trainable}
        reference, *blocked = _trainers(data_path, dtype, sections, [
            ElementwisePass(None),  # every part over whole arrays, through the pass
            ElementwisePass(7),  # 7 divides none of 65, 13, 39, 3: cut W1, W2, b1; b2 shares
            ElementwisePass(30, threads=2),  # W1 in 3 blocks, b1, W2 in 2, b2: two threads
            ElementwisePass(10_000),  # everything in one block
        ])
        before, = _trainers(data_path, dtype, sections, [ElementwisePass()])
        for _ in range(STEPS):
            want = whole_array_step(before)
            assert reference.step() == want, what
            for t in blocked:
                assert t.step() == want, what
        _assert_same_bits(reference, before, what)
        for t in blocked:
            _assert_same_bits(t, before, f"{what}, blocks of {t.elementwise.block_elements}")


def test_the_blocks_cut_large_arrays_evenly_and_group_small_ones():
    sizes = {"W1": 65, "b1": 13, "W2": 39, "b2": 3}
    assert plan_blocks(sizes, set(), 30) == [
        [("W1", slice(0, 21))], [("W1", slice(21, 43))], [("W1", slice(43, 65))],
        [("W2", slice(0, 19))], [("W2", slice(19, 39))], [("b1", None), ("b2", None)]]
    assert plan_blocks({"W": 7840, "b": 10}, set(), 32768) == [[("W", None), ("b", None)]]
    assert plan_blocks(sizes, {"W1"}, 30) == [[("W1", None)], [("W2", slice(0, 19))],
                                              [("W2", slice(19, 39))], [("b1", None), ("b2", None)]]
    # every value in exactly one block, in order
    cuts = plan_blocks({"W": 392_000}, set(), 32768)
    assert len(cuts) == 12 and cuts[0][0][1].start == 0 and cuts[-1][0][1].stop == 392_000
    assert all(a[0][1].stop == b[0][1].start for a, b in zip(cuts, cuts[1:], strict=False))


def test_adam_powers_advance_once_per_step_whatever_the_blocks(data_path):
    sections = {"optimizer": OPTIMIZER_CASES["adam"]}
    (t,) = _trainers(data_path, "float64", sections, [ElementwisePass(4)])
    assert len(t.elementwise.blocks(t.data_gradients(t.params, *t.stream.batch(0))[1], t.params,
                                    t.opt_state, None)) > 10
    for _ in range(3):
        t.step()
    assert t.opt_state["power"]["beta1"] == np.float64(0.9) * 0.9 * 0.9 * 0.9
    assert t.opt_state["power"]["beta2"] == np.float64(0.999) * 0.999 * 0.999 * 0.999


def test_arrays_that_are_not_c_contiguous_stay_whole_and_give_the_same_bits(data_path):
    """A Fortran-order parameter (e.g. loaded so from model.init.from) has no flat view."""
    sections = {"optimizer": OPTIMIZER_CASES["momentum"], "l2": {"scale": 0.01}, "ema": {"decay": 0.9}}
    blocked, before = _trainers(data_path, "float32", sections, [ElementwisePass(7), ElementwisePass()])
    for t in (blocked, before):
        t.params["W1"] = np.asfortranarray(t.params["W1"])
    for _ in range(STEPS):
        blocked.step()
        whole_array_step(before)
    _assert_same_bits(blocked, before, "Fortran-order W1")
    cuts = [c for b in blocked.elementwise.blocks({"W1": before.params["W1"]}, blocked.params,
                                                  blocked.opt_state, blocked.ema) for c in b.cuts]
    assert cuts == [("W1", None)]


def test_new_arrays_are_seen_at_the_next_step(data_path):
    """The pass keeps its views of the parameters while they are the same arrays; a
    parameter replaced by a new array is updated in its place, not in the old one's."""
    sections = {"optimizer": OPTIMIZER_CASES["momentum"]}
    blocked, before = _trainers(data_path, "float64", sections, [ElementwisePass(7), ElementwisePass()])
    blocked.step()
    whole_array_step(before)
    for t in (blocked, before):
        t.params["W1"] = t.params["W1"] * 0.5
    blocked.step()
    whole_array_step(before)
    _assert_same_bits(blocked, before, "after replacing W1")


def test_the_worker_thread_keeps_the_runs_error_state(data_path):
    """A run ignores NumPy's floating-point warnings (a divergence is reported in one line);
    the second thread's share of the update must not warn either."""
    sections = {"optimizer": {"name": "sgd", "learning_rate": 1e30}}
    (t,) = _trainers(data_path, "float32", sections, [ElementwisePass(7, threads=2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="ignore"):
            for _ in range(3):
                try:
                    t.step()
                except Exception:  # the diverged loss: what the run reports
                    break


def test_the_default_pass_times_the_candidates_and_keeps_the_fastest(data_path, monkeypatch):
    """By default the pass tries whole arrays and each candidate block size for a few steps
    and keeps the fastest; whichever it runs, the bits are the whole-array step's."""
    from gdtrain.core import elementwise

    monkeypatch.setattr(elementwise, "CANDIDATES", (None, 7, 30, 10_000))  # 10_000: as None here
    monkeypatch.setattr(elementwise, "TURNS", 2)
    monkeypatch.setattr(elementwise, "RUNS", 2)
    sections = {"optimizer": OPTIMIZER_CASES["adam"], "l2": {"scale": 0.01}, "ema": {"decay": 0.9},
                "clip": {"name": "global_norm", "clip_norm": 0.1}}
    tuned, before = _trainers(data_path, "float32", sections, [ElementwisePass(), ElementwisePass(None)])
    for _ in range(3 * 2 * 2 + 2):  # three distinct candidates, two turns of two steps, then the choice
        assert tuned.step() == whole_array_step(before)
    assert set(tuned.elementwise.timings) == {None, 7, 30}
    assert tuned.elementwise.block_elements in (None, 7, 30)
    _assert_same_bits(tuned, before, "tuned")
    monkeypatch.setattr(elementwise, "CANDIDATES", (None, 30, 10_000))
    (small,) = _trainers(data_path, "float32", {"model": {"name": "linear"}}, [ElementwisePass()])
    small.step()  # every candidate cuts the linear model's 15 + 3 values alike: nothing to try
    assert small.elementwise.timings == {} and small.elementwise.block_elements is None


@pytest.mark.skipif(not __import__("gdtrain.core.fpenv", fromlist=["x"]).supported(),
                    reason="FTZ/DAZ cannot be set here")
def test_the_worker_thread_flushes_subnormals_when_the_step_does(data_path):
    """run.flush_subnormals sets FTZ/DAZ, a per-thread register: the worker's half of the
    blocks must flush as the step's thread does, or its bits would differ."""
    from gdtrain.core import fpenv

    # W starts at 0 and moves by lr·g: subnormal float32 where |g| < 0.5 (lr itself is normal);
    # flushed, it stays 0
    sections = {"model": {"name": "linear", "init": "zeros"},
                "optimizer": {"name": "sgd", "learning_rate": 2e-38}}
    results = []
    shared = ElementwisePass(7, threads=2)  # its worker thread starts unflushed, in the first run
    for flush in (False, True):
        with fpenv.flushed(flush):
            threaded, before = _trainers(data_path, "float32", sections, [shared, ElementwisePass()])
            for _ in range(3):
                threaded.step()
                whole_array_step(before)
        _assert_same_bits(threaded, before, f"flush {flush}")
        results.append(threaded.params["W"].copy())
    assert np.any(results[0] != results[1])  # flushing did change something
