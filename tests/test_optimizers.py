"""Every optimizer against TF1's update formula (DESIGN.md), written out here independently
of gdtrain/core/optimizers.py, for one and two steps in float64; and, for every registered
optimizer, descent on a quadratic, slots only for the parameters given, dtypes kept.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdtrain.core.optimizers import OPTIMIZERS
from gdtrain.errors import ConfigError

# ------------------------------------------------------------------ TF1 formulas, by hand
# Each reference takes the options and a list of (gradient, lr) per step for one parameter
# and returns the parameter after each step, starting from w0.


def ref_sgd(w0, steps, learning_rate):
    w, out = w0.copy(), []
    for g, lr in steps:
        w = w - lr * g
        out.append(w)
    return out


def ref_momentum(w0, steps, learning_rate, momentum=0.9, nesterov=False):
    w, accum, out = w0.copy(), np.zeros_like(w0), []
    for g, lr in steps:
        accum = momentum * accum + g
        if nesterov:
            w = w - (lr * g + lr * momentum * accum)
        else:
            w = w - lr * accum
        out.append(w)
    return out


def ref_adam(w0, steps, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8):
    w, m, v, out = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), []
    for t, (g, lr) in enumerate(steps, start=1):
        m = m + (g - m) * (1 - beta1)
        v = v + (g * g - v) * (1 - beta2)
        alpha = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
        out.append(w)
    return out


def ref_adamw(w0, steps, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.01):
    # Keras 3 / PyTorch AdamW: var -= lr·wd·var from the value before the step, with the
    # step's (scheduled) lr, beside Adam's step in TF1's form
    w, m, v, out = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), []
    for t, (g, lr) in enumerate(steps, start=1):
        m = m + (g - m) * (1 - beta1)
        v = v + (g * g - v) * (1 - beta2)
        alpha = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        w = w - lr * weight_decay * w - alpha * m / (np.sqrt(v) + epsilon)
        out.append(w)
    return out


def ref_rmsprop(w0, steps, learning_rate, decay=0.9, momentum=0.0, epsilon=1e-10):
    # TF1: the mean square starts at ones; epsilon inside the square root
    w, ms, mom, out = w0.copy(), np.ones_like(w0), np.zeros_like(w0), []
    for g, lr in steps:
        ms = decay * ms + (1 - decay) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + epsilon)
        w = w - mom
        out.append(w)
    return out


def ref_adagrad(w0, steps, learning_rate, initial_accumulator_value=0.1):
    w, accum, out = w0.copy(), np.full_like(w0, initial_accumulator_value), []
    for g, lr in steps:
        accum = accum + g * g
        w = w - lr * g / np.sqrt(accum)
        out.append(w)
    return out


# (registered name, options, reference); several option sets per optimizer
FORMULA_CASES = [
    ("sgd", {"learning_rate": 0.1}, ref_sgd),
    ("momentum", {"learning_rate": 0.1, "momentum": 0.9}, ref_momentum),
    ("momentum", {"learning_rate": 0.1, "momentum": 0.5, "nesterov": True}, ref_momentum),
    ("adam", {"learning_rate": 0.01}, ref_adam),
    ("adam", {"learning_rate": 0.1, "beta1": 0.5, "beta2": 0.75, "epsilon": 0.1}, ref_adam),
    ("adamw", {"learning_rate": 0.01}, ref_adamw),
    ("adamw", {"learning_rate": 0.1, "beta1": 0.5, "beta2": 0.75, "epsilon": 0.1, "weight_decay": 0.3},
     ref_adamw),
    ("rmsprop", {"learning_rate": 0.01}, ref_rmsprop),
    ("rmsprop", {"learning_rate": 0.1, "decay": 0.8, "momentum": 0.7, "epsilon": 0.01}, ref_rmsprop),
    ("adagrad", {"learning_rate": 0.1}, ref_adagrad),
    ("adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 2.5}, ref_adagrad),
]


def build(name, options):
    return OPTIMIZERS.build(name, dict(options), "optimizer")


def run_steps(opt, params, grads_per_step, lrs):
    """Apply updates as the training loop does; return the parameters after each step."""
    state = opt.init(params)
    history = []
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        updates, state = opt.update(grads, state, lr, params)
        assert set(updates) == set(grads)
        for k, u in updates.items():
            params[k] += u
        history.append({k: v.copy() for k, v in params.items()})
    return history, state


def test_every_optimizer_has_a_formula_case():
    assert set(OPTIMIZERS.names()) <= {name for name, _, _ in FORMULA_CASES}


@pytest.mark.parametrize("name,options,reference", FORMULA_CASES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(FORMULA_CASES)])
def test_one_and_two_steps_match_tf1_formula(name, options, reference):
    rng = np.random.default_rng(0)
    w0 = {"W": rng.normal(0, 1, (3, 2)), "b": rng.normal(0, 1, (2,))}
    g = [{k: rng.normal(0, 1, v.shape) for k, v in w0.items()} for _ in range(2)]
    lrs = [options["learning_rate"], options["learning_rate"] * 0.5]  # a schedule's second value
    history, _ = run_steps(build(name, options), {k: v.copy() for k, v in w0.items()}, g, lrs)
    for k in w0:
        expected = reference(w0[k], [(g[0][k], lrs[0]), (g[1][k], lrs[1])], **options)
        for step in range(2):
            np.testing.assert_allclose(history[step][k], expected[step], rtol=1e-13, atol=1e-15,
                                       err_msg=f"{name} {k} after step {step + 1}")


def test_momentum_by_hand():
    """Numbers small enough to check on paper: accum 1, then 0.9·1 + 1 = 1.9."""
    opt = build("momentum", {"learning_rate": 0.1, "momentum": 0.9})
    history, state = run_steps(opt, {"w": np.array([1.0])}, [{"w": np.array([1.0])}] * 2, [0.1, 0.1])
    assert history[0]["w"][0] == pytest.approx(0.9, rel=1e-15)
    assert history[1]["w"][0] == pytest.approx(0.9 - 0.19, rel=1e-15)
    assert state["accum"]["w"][0] == pytest.approx(1.9, rel=1e-15)


def test_adam_first_step_is_lr_times_sign():
    """With bias correction at t = 1, m/sqrt(v) = g/|g|: the first step is ≈ lr·sign(g)."""
    opt = build("adam", {"learning_rate": 0.01, "epsilon": 1e-12})
    history, _ = run_steps(opt, {"w": np.zeros(3)}, [{"w": np.array([3.0, -0.002, 50.0])}], [0.01])
    np.testing.assert_allclose(history[0]["w"], [-0.01, 0.01, -0.01], rtol=1e-7)


# ------------------------------------------------------------------ every registered optimizer


def quadratic_grad(params, curvature):
    # f(w) = Σ c·w²/2, gradient c·w
    return {k: curvature[k] * w for k, w in params.items()}


def quadratic(params, curvature):
    return sum(float(np.sum(curvature[k] * w * w)) / 2 for k, w in params.items())


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_decreases_a_quadratic(name):
    rng = np.random.default_rng(1)
    params = {"W": rng.normal(0, 1, (4, 3)), "b": rng.normal(0, 1, (3,))}
    curvature = {k: rng.uniform(0.5, 2.0, v.shape) for k, v in params.items()}
    opt = build(name, {"learning_rate": 0.05})
    state = opt.init(params)
    start = quadratic(params, curvature)
    for _ in range(100):
        updates, state = opt.update(quadratic_grad(params, curvature), state, 0.05, params)
        for k, u in updates.items():
            params[k] += u
    end = quadratic(params, curvature)
    assert math.isfinite(end) and end < 0.5 * start


def _per_param_slots(state):
    """(slot name, {param name: array}) for the slots kept per parameter (not Adam's powers)."""
    for slot, per_param in state.items():
        if any(np.ndim(v) > 0 for v in per_param.values()):
            yield slot, per_param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_slots_only_for_the_given_params_and_dtypes_kept(name, dtype):
    """TF1's var_list: a frozen parameter is not passed to init and gets no slot."""
    rng = np.random.default_rng(2)
    model = {"W": rng.normal(0, 1, (4, 3)).astype(dtype), "b": np.zeros(3, dtype)}
    trainable = {"W": model["W"]}
    opt = build(name, {"learning_rate": 0.1})
    state = opt.init(trainable)
    for slot, per_param in _per_param_slots(state):
        assert set(per_param) == {"W"}, slot
        assert per_param["W"].shape == (4, 3) and per_param["W"].dtype == dtype, slot
        assert per_param["W"] is not model["W"], f"slot {slot} aliases the parameter"
    for per_param in state.values():
        assert "b" not in per_param
        assert all(v.dtype == dtype for v in per_param.values())
    grads = {"W": rng.normal(0, 1, (4, 3)).astype(dtype)}
    for _ in range(2):
        updates, state = opt.update(grads, state, 0.1, trainable)
        assert set(updates) == {"W"}
        assert updates["W"].dtype == dtype
    for per_param in state.values():
        assert all(v.dtype == dtype for v in per_param.values())


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_zero_learning_rate_is_rejected(name):
    with pytest.raises(ConfigError, match="learning_rate"):
        OPTIMIZERS.build(name, {"learning_rate": 0}, "optimizer")


@pytest.mark.parametrize("bad", [{"beta1": 1.0}, {"beta2": 1.0}, {"epsilon": 0}, {"beta1": -0.1}])
def test_adam_bad_options(bad):
    with pytest.raises(ConfigError):
        OPTIMIZERS.build("adam", {"learning_rate": 0.1, **bad}, "optimizer")


def test_unknown_option_suggests_the_tf1_name():
    with pytest.raises(ConfigError, match="did you mean 'momentum'"):
        OPTIMIZERS.build("momentum", {"learning_rate": 0.1, "momentun": 0.9}, "optimizer")
