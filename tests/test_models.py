"""Every model × loss backward pass against central differences (float64, every parameter),
for each option that changes the graph (use_bias, the MLP's activation); the `wanted`
subset; dtypes. Driven by MODELS and LOSSES so that a new component is tested here too.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gdtrain.losses import LOSSES
from gdtrain.models import ACTIVATIONS, MODELS

IN, OUT, BATCH, HIDDEN = 4, 3, 6, 5


def variants(name: str) -> list[dict]:
    """Every combination of the options that change the computation."""
    axes = {}
    for opt in MODELS.options(name):
        if opt.name == "use_bias":
            axes["use_bias"] = [True, False]
        elif opt.name == "activation":
            axes["activation"] = list(ACTIVATIONS)
        elif opt.name == "hidden":
            axes["hidden"] = [HIDDEN]
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]


MODEL_CASES = [
    pytest.param(name, opts, id=f"{name}-" + "-".join(f"{k}={v}" for k, v in opts.items()))
    for name in MODELS.names()
    for opts in variants(name)
]


def build_model(name, opts):
    return MODELS.build(name, dict(opts), "model", input_dim=IN, output_dim=OUT)


def random_params(model, rng, dtype=np.float64):
    return {k: rng.normal(0, 0.7, s).astype(dtype) for k, s in model.shapes.items()}


def targets_for(loss, rng):
    if loss.accepts_classes:
        return rng.integers(0, OUT, BATCH)
    return rng.normal(0, 1, (BATCH, OUT))


def objective(model, loss, params, x, y) -> float:
    out, _ = model.forward(params, x)
    return loss.value_and_grad(out, y)[0]


def analytic(model, loss, params, x, y, wanted):
    out, cache = model.forward(params, x)
    _, dout = loss.value_and_grad(out, y)
    return model.backward(params, cache, dout, wanted)


@pytest.mark.parametrize("loss_name", LOSSES.names())
@pytest.mark.parametrize("name,opts", MODEL_CASES)
def test_backward_matches_central_differences(name, opts, loss_name):
    rng = np.random.default_rng(0)
    model = build_model(name, opts)
    loss = LOSSES.build(loss_name, {"reduction": "mean"}, "loss")
    params = random_params(model, rng)
    x = rng.normal(0, 1, (BATCH, IN))
    y = targets_for(loss, rng)
    grads = analytic(model, loss, params, x, y, frozenset(model.names))
    assert set(grads) == set(model.names)
    h = 1e-6
    for k, p in params.items():
        assert grads[k].shape == p.shape, k
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + h
            up = objective(model, loss, params, x, y)
            p[idx] = saved - h
            down = objective(model, loss, params, x, y)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-5, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("name,opts", MODEL_CASES)
def test_forward_leaves_inputs_alone(name, opts):
    rng = np.random.default_rng(1)
    model = build_model(name, opts)
    params = random_params(model, rng)
    before = {k: v.copy() for k, v in params.items()}
    x = rng.normal(0, 1, (BATCH, IN))
    x0 = x.copy()
    out, cache = model.forward(params, x)
    model.backward(params, cache, np.ones_like(out), frozenset(model.names))
    assert out.shape == (BATCH, OUT)
    np.testing.assert_array_equal(x, x0)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


@pytest.mark.parametrize("name,opts", MODEL_CASES)
def test_wanted_subset_gets_only_its_gradients(name, opts):
    """Frozen names get no gradient; the ones asked for equal the full computation's."""
    rng = np.random.default_rng(2)
    model = build_model(name, opts)
    loss = LOSSES.build("mse", {}, "loss")
    params = random_params(model, rng)
    x = rng.normal(0, 1, (BATCH, IN))
    y = rng.normal(0, 1, (BATCH, OUT))
    full = analytic(model, loss, params, x, y, frozenset(model.names))
    for r in range(len(model.names) + 1):
        for subset in itertools.combinations(model.names, r):
            grads = analytic(model, loss, params, x, y, frozenset(subset))
            assert set(grads) == set(subset)
            for k in subset:
                np.testing.assert_array_equal(grads[k], full[k])


@pytest.mark.parametrize("name,opts", MODEL_CASES)
def test_names_shapes_and_defaults(name, opts):
    model = build_model(name, opts)
    assert set(model.weights) <= set(model.names)
    assert all(len(model.shapes[w]) == 2 for w in model.weights)  # L2's default: matrices only
    assert set(model.names) <= set(model.default_init)
    if opts.get("use_bias") is False:
        assert not [n for n in model.names if n.startswith("b")]
    assert model.parameter_count() == sum(int(np.prod(s)) for s in model.shapes.values())


def test_parameter_names_follow_the_design():
    assert build_model("linear", {}).names == ["W", "b"]
    assert build_model("softmax", {}).names == ["W", "b"]
    assert build_model("linear", {"use_bias": False}).names == ["W"]
    assert build_model("mlp", {"hidden": 7}).names == ["W1", "b1", "W2", "b2"]
    assert build_model("mlp", {"hidden": 7}).shapes["W1"] == (IN, 7)


@pytest.mark.parametrize("name,opts", MODEL_CASES)
def test_float32_stays_float32(name, opts):
    rng = np.random.default_rng(3)
    model = build_model(name, opts)
    params = random_params(model, rng, np.float32)
    x = rng.normal(0, 1, (BATCH, IN)).astype(np.float32)
    out, cache = model.forward(params, x)
    assert out.dtype == np.float32
    grads = model.backward(params, cache, np.ones_like(out), frozenset(model.names))
    assert {k: g.dtype for k, g in grads.items()} == {k: np.dtype(np.float32) for k in model.names}


def test_mlp_activations_by_hand():
    """The forward pass of one hidden unit, for each activation, against its definition."""
    x = np.array([[1.0, -2.0]])
    reference = {"relu": lambda z: max(z, 0.0), "tanh": np.tanh,
                 "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}
    assert set(ACTIVATIONS) <= set(reference)
    for act in ACTIVATIONS:
        model = MODELS.build("mlp", {"hidden": 1, "activation": act}, "model", input_dim=2, output_dim=1)
        p = {"W1": np.array([[0.5], [0.75]]), "b1": np.array([0.25]),
             "W2": np.array([[2.0]]), "b2": np.array([-1.0])}
        out, _ = model.forward(p, x)
        z = 1.0 * 0.5 - 2.0 * 0.75 + 0.25
        assert out[0, 0] == pytest.approx(2.0 * reference[act](z) - 1.0, rel=1e-15), act


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activations_stable_at_large_inputs(activation, dtype):
    """Pre-activations of ±1000 give finite outputs and gradients, without overflow warnings."""
    model = MODELS.build("mlp", {"hidden": 2, "activation": activation}, "model", input_dim=1, output_dim=1)
    p = {"W1": np.array([[1.0, -1.0]], dtype), "b1": np.zeros(2, dtype),
         "W2": np.ones((2, 1), dtype), "b2": np.zeros(1, dtype)}
    x = np.array([[1000.0], [-1000.0], [0.5]], dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, cache = model.forward(p, x)
        grads = model.backward(p, cache, np.ones_like(out), frozenset(model.names))
    assert out.dtype == dtype and np.isfinite(out).all()
    assert all(np.isfinite(g).all() for g in grads.values())
    if activation == "sigmoid":  # σ(1000) = 1, σ(-1000) = 0: each row's two units sum to 1
        np.testing.assert_allclose(out[:, 0], 1.0, rtol=1e-6)
