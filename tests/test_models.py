"""Every model × loss backward pass against central differences (float64, every parameter),
for each option that changes the graph (use_bias, the MLP's activation, depth and dropout);
the `wanted` subset; dtypes; the activations against their definitions; dropout against
TF1's formula. Driven by MODELS, LOSSES and ACTIVATIONS so that a new component is tested
here too.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gdtrain.config.validate import resolve
from gdtrain.core.losses import LOSSES
from gdtrain.core.models import ACTIVATIONS, LEAKY_RELU_ALPHA, MODELS
from gdtrain.errors import ConfigError

IN, OUT, BATCH, HIDDEN = 4, 3, 6, 5
DEEP = [5, 4, 3]  # four layers: W1 … W4
KEY = (3, 5)  # a dropout key (seed, step): every forward below that may drop units gets it


def variants(name: str) -> list[dict]:
    """Every combination of the options that change the computation (each axis a list of
    option fragments)."""
    axes = []
    names = {opt.name for opt in MODELS.options(name)}
    if "use_bias" in names:
        axes.append([{"use_bias": True}, {"use_bias": False}])
    if "activation" in names:
        axes.append([{"activation": a} for a in ACTIVATIONS])
    if "hidden" in names:
        depth = [{"hidden": HIDDEN}, {"hidden": DEEP}]
        if "dropout" in names:  # one rate for all, and one per layer with an undropped one
            depth += [{"hidden": HIDDEN, "dropout": 0.4}, {"hidden": DEEP, "dropout": [0.4, 0.0, 0.2]}]
        axes.append(depth)
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


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
    out, _ = model.forward(params, x, KEY)  # the same key, the same masks: a fixed function
    return loss.value_and_grad(out, y)[0]


def analytic(model, loss, params, x, y, wanted):
    out, cache = model.forward(params, x, KEY)
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
    out, cache = model.forward(params, x, KEY)
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
    out, cache = model.forward(params, x, KEY)
    assert out.dtype == np.float32
    grads = model.backward(params, cache, np.ones_like(out), frozenset(model.names))
    assert {k: g.dtype for k, g in grads.items()} == {k: np.dtype(np.float32) for k in model.names}


def test_mlp_activations_by_hand():
    """The forward pass of one hidden unit, for each activation, against its definition."""
    x = np.array([[1.0, -2.0]])
    reference = {"relu": lambda z: max(z, 0.0), "tanh": np.tanh,
                 "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z,
                 "elu": lambda z: z if z > 0 else np.exp(z) - 1,
                 "leaky_relu": lambda z: max(0.2 * z, z), "softplus": lambda z: np.log(np.exp(z) + 1),
                 "relu6": lambda z: min(max(z, 0.0), 6.0)}
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


# Each activation and its derivative as TF1 documents them (tf.nn.*), in float64 scalars.
def _sigma(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


DEFINITIONS = {
    "relu": (lambda z: max(z, 0.0), lambda z: float(z > 0)),
    "tanh": (math.tanh, lambda z: 1 - math.tanh(z) ** 2),
    "sigmoid": (_sigma, lambda z: _sigma(z) * (1 - _sigma(z))),
    "identity": (lambda z: z, lambda z: 1.0),
    "elu": (lambda z: z if z > 0 else math.expm1(z), lambda z: 1.0 if z > 0 else math.exp(z)),
    "leaky_relu": (lambda z: z if z > 0 else 0.2 * z, lambda z: 1.0 if z > 0 else 0.2),
    "softplus": (lambda z: max(z, 0) + math.log1p(math.exp(-abs(z))), _sigma),
    "relu6": (lambda z: min(max(z, 0.0), 6.0), lambda z: float(0 < z < 6)),
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_and_derivative_match_their_definitions(activation):
    """Values and derivatives on a grid through every region (kinks at 0 and 6 excluded).
    Derivatives are compared to an ulp of 1 too: tanh's 1 - h² and sigmoid's h(1 - h) lose
    their relative precision where they are far below 1 (|z| > 10), as TF1's do."""
    assert set(ACTIVATIONS) == set(DEFINITIONS)
    act, dact = ACTIVATIONS[activation]
    f, df = DEFINITIONS[activation]
    z = np.concatenate([np.linspace(-30, 30, 601), [-1e-7, 1e-7, 5.999, 6.001, -700, 700]])
    z = z[(z != 0) & (z != 6)]
    h = act(z.copy())
    np.testing.assert_allclose(h, [f(v) for v in z], rtol=1e-13, atol=1e-300)
    slope = np.ones_like(h) if dact is None else np.asarray(dact(h), np.float64)
    np.testing.assert_allclose(slope, [df(v) for v in z], rtol=1e-12, atol=2 * np.finfo(float).eps)
    assert LEAKY_RELU_ALPHA == 0.2  # TF1's default, documented in the model's options


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_slope_from_its_output_is_within_a_few_ulps(dtype):
    """σ(z) recovered as 1 - exp(-h) from h = softplus(z): within 3 ulps of σ(z) wherever h
    is a normal number (float32: z > -87), and within one ulp of 1 absolutely everywhere."""
    act, dact = ACTIVATIONS["softplus"]
    eps = np.finfo(dtype).eps
    z = np.linspace(-100, 100, 400_001).astype(dtype)
    slope = dact(act(z.copy())).astype(np.float64)
    z64 = z.astype(np.float64)
    e = np.exp(-np.abs(z64))
    exact = np.where(z64 >= 0, 1 / (1 + e), e / (1 + e))
    normal = z64 > (-87 if dtype == np.float32 else -100)
    assert np.max(np.abs(slope - exact)[normal] / exact[normal]) <= 3 * eps
    assert np.max(np.abs(slope - exact)) <= eps


DEEP_NAMES = ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4", "W5", "b5"]


def test_depth_from_a_list_names_every_layer():
    model = MODELS.build("mlp", {"hidden": [200, 100, 60, 30]}, "model", input_dim=784, output_dim=10)
    assert model.names == DEEP_NAMES
    assert [model.shapes[f"W{i}"] for i in range(1, 6)] == [
        (784, 200), (200, 100), (100, 60), (60, 30), (30, 10)]
    assert [model.shapes[f"b{i}"] for i in range(1, 6)] == [(200,), (100,), (60,), (30,), (10,)]
    assert model.weights == ["W1", "W2", "W3", "W4", "W5"]
    assert model.default_init == {n: "glorot_uniform" if n[0] == "W" else "zeros" for n in DEEP_NAMES}
    assert not model.dropout
    # one width in a list is the two-layer net
    one = MODELS.build("mlp", {"hidden": [7]}, "model", input_dim=IN, output_dim=OUT)
    assert one.names == ["W1", "b1", "W2", "b2"] and one.shapes == build_model("mlp", {"hidden": 7}).shapes


def test_deep_forward_by_hand():
    """Three layers of tanh against the same products written out."""
    rng = np.random.default_rng(4)
    model = build_model("mlp", {"hidden": [5, 2], "activation": "tanh"})
    p = random_params(model, rng)
    x = rng.normal(0, 1, (BATCH, IN))
    h1 = np.tanh(x @ p["W1"] + p["b1"])
    h2 = np.tanh(h1 @ p["W2"] + p["b2"])
    np.testing.assert_allclose(model.forward(p, x)[0], h2 @ p["W3"] + p["b3"], rtol=1e-14)


def _config(model: dict) -> dict:
    return {"data": {"name": "linear_sum"}, "model": {"name": "mlp", **model}, "loss": {"name": "mse"},
            "optimizer": {"name": "sgd", "learning_rate": 0.1}, "train": {"steps": 1}}


@pytest.mark.parametrize("model, message", [
    ({"hidden": []}, "model.hidden: must not be empty, got a list []"),
    ({"hidden": 0}, "model.hidden: must be >= 1, got 0"),
    ({"hidden": [200, 0, 30]}, "model.hidden: item 1: must be >= 1, got 0"),
    ({"hidden": [200, 2.5]}, "model.hidden: item 1: expected an integer, got 2.5"),
    ({"hidden": 2.5}, "model.hidden: expected int (>= 1) | list[int (>= 1)] (non-empty), got 2.5"),
    ({"hidden": "wide"}, "model.hidden: expected int (>= 1) | list[int (>= 1)] (non-empty), got 'wide'"),
    ({"hidden": [True]}, "model.hidden: item 0: expected an integer, got true"),
    ({"dropout": 1}, "model.dropout: must be < 1, got 1.0"),
    ({"dropout": 1.5}, "model.dropout: must be < 1, got 1.5"),
    ({"dropout": -0.1}, "model.dropout: must be >= 0, got -0.1"),
    ({"dropout": []}, "model.dropout: must not be empty, got a list []"),
    ({"dropout": [0.2, 1.0]}, "model.dropout: item 1: must be < 1, got 1.0"),
    ({"hidden": [5, 4], "dropout": [0.2]},
     "model: dropout: 1 rates for 2 hidden layers; give one rate for all, or one per hidden layer"),
])
def test_bad_depth_or_dropout_is_one_line_naming_the_key(model, message):
    with pytest.raises(ConfigError) as info:
        resolve(_config(model))
    assert info.value.problems == [message]


def test_bad_width_in_a_file_names_its_line(tmp_path, cli):
    path = tmp_path / "deep.yaml"
    path.write_text("data: {name: linear_sum}\nmodel:\n  name: mlp\n  hidden: [200, 0]\n"
                    "loss: {name: mse}\noptimizer: {name: sgd, learning_rate: 0.1}\ntrain: {steps: 1}\n")
    code, out, err = cli("check", path)
    assert code == 2
    assert err.strip().splitlines() == [
        f"gdtrain: error: {path}: line 4: model.hidden: item 1: must be >= 1, got 0"]


# ------------------------------------------------------------------ dropout


def _deep(dropout, activation="relu", dtype=np.float64, hidden=(6, 5, 4)):
    model = build_model("mlp", {"hidden": list(hidden), "activation": activation, "dropout": dropout})
    rng = np.random.default_rng(5)
    return model, random_params(model, rng, dtype), rng.normal(0, 1, (BATCH, IN)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_follows_tf1_arithmetic(dtype):
    """Each hidden output is TF1's x / keep_prob * floor(keep_prob + uniform), the uniform
    drawn from default_rng([seed, 2, step, layer]) in the model's dtype."""
    rates = [0.25, 0.0, 0.5]
    model, p, x = _deep(rates, dtype=dtype)
    seed, step = 11, 42
    a = x
    for layer, rate in enumerate(rates, start=1):
        h = np.maximum(a @ p[f"W{layer}"] + p[f"b{layer}"], 0)
        if rate:
            keep = dtype(1 - rate)
            uniform = np.random.default_rng([seed, 2, step, layer]).random(h.shape, dtype=dtype)
            a = h / keep * np.floor(keep + uniform)
        else:
            a = h
    expected = a @ p["W4"] + p["b4"]
    out, _ = model.forward(p, x, (seed, step))
    assert out.dtype == dtype and model.dropout
    np.testing.assert_array_equal(out, expected)


def test_dropout_keeps_about_keep_prob_of_the_units_and_scales_them():
    model = MODELS.build("mlp", {"hidden": 1000, "dropout": 0.25, "activation": "identity"}, "model",
                         input_dim=1, output_dim=1)
    p = {"W1": np.ones((1, 1000)), "b1": np.zeros(1000), "W2": np.ones((1000, 1)), "b2": np.zeros(1)}
    x = np.ones((100, 1))
    _, (_, _, masks) = model.forward(p, x, (0, 0))
    kept = masks[0]
    assert set(np.unique(kept)) == {0.0, 1.0}
    assert abs(kept.mean() - 0.75) < 0.005  # 100,000 units: the standard error is 0.0014
    out, (inputs, _, _) = model.forward(p, x, (0, 0))
    assert set(np.unique(inputs[1])) == {0.0, 1 / 0.75}


def test_masks_depend_on_seed_step_and_layer_only():
    model, p, x = _deep(0.5)
    def masks(key):
        return model.forward(p, x, key)[1][2]
    same = masks((1, 7))
    for m, n in zip(same, masks((1, 7)), strict=True):
        np.testing.assert_array_equal(m, n)
    for other in ((1, 8), (2, 7)):
        assert all(not np.array_equal(m, n) for m, n in zip(same, masks(other), strict=True))
    assert not np.array_equal(same[0][:, :4], same[1][:, :4])  # layers draw their own


def test_without_a_key_dropout_changes_nothing():
    """Evaluation, predict and export call forward without a key: the outputs are the
    no-dropout model's, bit for bit; with a key they differ."""
    dropped, p, x = _deep(0.5)
    plain = build_model("mlp", {"hidden": [6, 5, 4], "activation": "relu"})
    np.testing.assert_array_equal(dropped.forward(p, x)[0], plain.forward(p, x)[0])
    np.testing.assert_array_equal(plain.forward(p, x, (0, 0))[0], plain.forward(p, x)[0])
    assert not np.array_equal(dropped.forward(p, x, (0, 0))[0], plain.forward(p, x)[0])


def test_zero_dropout_is_the_plain_model():
    assert not build_model("mlp", {"dropout": 0.0}).dropout
    assert not build_model("mlp", {"hidden": [3, 3], "dropout": [0.0, 0.0]}).dropout
    assert build_model("mlp", {"hidden": [3, 3], "dropout": [0.0, 0.1]}).dropout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_is_numpys_maximum_with_zero_bit_for_bit(dtype):
    """The relu runs max(z, 0) against a row of zeros (faster than the scalar form): the
    same bits, for signed zeros, NaN, infinities and subnormals too, in any shape."""
    act, _ = ACTIVATIONS["relu"]
    special = np.array([-0.0, 0.0, np.nan, -np.inf, np.inf, 1e-45, -1e-45, 3.0, -3.0], dtype)
    rng = np.random.default_rng(0)
    for z in (special, np.concatenate([special, rng.standard_normal(991).astype(dtype)]).reshape(20, 50)):
        with np.errstate(invalid="ignore"):
            want = np.maximum(z.copy(), 0)
        assert act(z.copy()).tobytes() == want.tobytes()
