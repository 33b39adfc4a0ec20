"""Initializers: shapes and dtypes for every registered one, their distributions' bounds,
determinism per (seed, parameter name), per-parameter and whole-model specs, and
`model.init: {from: file.npz}` with its shape check.
"""

from __future__ import annotations

import numpy as np
import pytest

from gdtrain.core.initializers import INITIALIZERS
from gdtrain.core.models import MODELS
from gdtrain.core.train import initial_params
from gdtrain.errors import ConfigError, DataError

SHAPES = [(7,), (30, 20), (1, 1)]


def draw(name, shape, dtype=np.float64, seed=0, **options):
    return INITIALIZERS.build(name, options, f"model.init.{name}", shape=shape,
                              rng=np.random.default_rng(seed), dtype=np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", INITIALIZERS.names())
def test_shape_dtype_finite_and_seeded(name, shape, dtype):
    a = draw(name, shape, dtype)
    assert a.shape == shape and a.dtype == dtype
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, draw(name, shape, dtype))  # same rng seed, same values
    a.flat[0] += 1  # writable, not a shared constant
    assert not np.shares_memory(a, draw(name, shape, dtype))


def test_constants():
    np.testing.assert_array_equal(draw("zeros", (3, 2)), np.zeros((3, 2)))
    np.testing.assert_array_equal(draw("ones", (4,)), np.ones(4))
    np.testing.assert_array_equal(draw("constant", (2, 2), value=0.1), np.full((2, 2), 0.1))
    assert draw("constant", (2,), np.float32, value=0.1).dtype == np.float32


def test_truncated_normal_stays_within_two_stddevs():
    a = draw("truncated_normal", (200, 100), stddev=0.1, mean=0.5)
    assert np.all(np.abs(a - 0.5) <= 0.2)
    assert abs(a.mean() - 0.5) < 0.005
    # a unit normal truncated at ±2 has stddev 0.8796
    assert a.std() == pytest.approx(0.1 * 0.8796, rel=0.02)


def test_normal_and_uniform_statistics():
    a = draw("normal", (300, 100), stddev=2.0, mean=1.0)
    assert a.mean() == pytest.approx(1.0, abs=0.03) and a.std() == pytest.approx(2.0, rel=0.02)
    u = draw("uniform", (300, 100), low=-1.0, high=3.0)
    assert u.min() >= -1.0 and u.max() < 3.0 and u.mean() == pytest.approx(1.0, abs=0.03)


def test_glorot_and_he_scales():
    g = draw("glorot_uniform", (300, 100))
    limit = np.sqrt(6.0 / 400)
    assert np.abs(g).max() <= limit and np.abs(g).max() > 0.95 * limit
    h = draw("he_normal", (400, 100))
    assert h.std() == pytest.approx(np.sqrt(2.0 / 400), rel=0.03)  # variance 2/fan_in after truncation
    assert np.abs(h).max() <= 2 * np.sqrt(2.0 / 400) / 0.87962566103423978 + 1e-12


@pytest.mark.parametrize("name,options,message", [
    ("uniform", {"low": 1.0, "high": 1.0}, "high"),
    ("normal", {"stddev": 0}, "stddev"),
    ("truncated_normal", {"stddev": -1}, "stddev"),
    ("constant", {"value": "a"}, "value"),
    ("zeros", {"value": 1}, "value"),
    ("glorot_normal", {}, "initializer"),
])
def test_bad_options_are_config_errors(name, options, message):
    with pytest.raises(ConfigError, match=message):
        draw(name, (2, 2), **options)


# ------------------------------------------------------------------ parameters of a model


def mlp(use_bias=True):
    return MODELS.build("mlp", {"hidden": 6, "use_bias": use_bias}, "model", input_dim=4, output_dim=3)


TN = {"name": "truncated_normal", "stddev": 0.1}


def test_determinism_per_seed_and_name():
    model = mlp()
    spec = {"W1": TN, "W2": TN, "b1": "zeros", "b2": "zeros"}
    a = initial_params(model, spec, 7, np.float64)
    b = initial_params(model, spec, 7, np.float64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = initial_params(model, spec, 8, np.float64)
    assert not np.array_equal(a["W1"], c["W1"])
    # W1 and W2 draw from different streams even though their spec is the same
    assert not np.array_equal(a["W1"][:3, :3], a["W2"][:3, :3])
    # a parameter's values do not depend on which others exist
    d = initial_params(mlp(use_bias=False), {"W1": TN, "W2": TN}, 7, np.float64)
    np.testing.assert_array_equal(a["W1"], d["W1"])
    np.testing.assert_array_equal(a["W2"], d["W2"])


def test_float32_draw_matches_float64_draw_rounded():
    model = mlp()
    a = initial_params(model, {"name": "normal", "stddev": 1.0}, 3, np.float32)
    b = initial_params(model, {"name": "normal", "stddev": 1.0}, 3, np.float64)
    for k in a:
        assert a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k].astype(np.float32))


def test_whole_model_spec_sets_weights_and_leaves_biases_zero():
    model = mlp()
    p = initial_params(model, {"name": "constant", "value": 0.5}, 0, np.float64)
    np.testing.assert_array_equal(p["W1"], np.full((4, 6), 0.5))
    np.testing.assert_array_equal(p["W2"], np.full((6, 3), 0.5))
    np.testing.assert_array_equal(p["b1"], np.zeros(6))
    np.testing.assert_array_equal(p["b2"], np.zeros(3))
    p = initial_params(model, "ones", 0, np.float64)
    assert p["W1"].min() == 1 and p["b1"].max() == 0


def test_per_parameter_spec_and_model_defaults():
    model = mlp()
    p = initial_params(model, {"b1": {"name": "constant", "value": 0.1}}, 0, np.float64)
    np.testing.assert_array_equal(p["b1"], np.full(6, 0.1))
    limit = np.sqrt(6.0 / (4 + 6))  # W1 keeps the model's default, glorot_uniform
    assert np.abs(p["W1"]).max() <= limit and p["W1"].std() > 0
    softmax = MODELS.build("softmax", {}, "model", input_dim=5, output_dim=3)
    p = initial_params(softmax, None, 0, np.float32)
    assert not p["W"].any() and not p["b"].any()  # TF1 tutorial: zeros


# ------------------------------------------------------------------ init from an npz file


def test_init_from_npz_through_the_config(tmp_path, make_trainer):
    rng = np.random.default_rng(0)
    arrays = {"W1": rng.normal(size=(2, 3)), "b1": rng.normal(size=3),
              "W2": rng.normal(size=(3, 1)), "b2": rng.normal(size=1)}
    path = tmp_path / "start.npz"
    np.savez(path, **arrays)
    trainer = make_trainer({"model": {"name": "mlp", "hidden": 3, "init": {"from": str(path)}}})
    for k, v in arrays.items():
        assert trainer.params[k].dtype == np.float32
        np.testing.assert_array_equal(trainer.params[k], v.astype(np.float32))
    trainer = make_trainer({"run": {"dtype": "float64"},
                            "model": {"name": "mlp", "hidden": 3, "init": {"from": str(path)}}})
    for k, v in arrays.items():
        np.testing.assert_array_equal(trainer.params[k], v)


@pytest.mark.parametrize("arrays,message", [
    ({"W": np.zeros((3, 1)), "b": np.zeros(1)}, "shape"),
    ({"W": np.zeros((2, 1))}, "lacks b"),
    ({"W": np.zeros((2, 1)), "b": np.zeros(1), "extra": np.zeros(2)}, "extra"),
])
def test_init_from_npz_checks_names_and_shapes(tmp_path, make_trainer, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        make_trainer({"model": {"name": "linear", "init": {"from": str(path)}}})


def test_init_from_missing_file(tmp_path, make_trainer):
    with pytest.raises(DataError, match="no such file"):
        make_trainer({"model": {"name": "linear", "init": {"from": str(tmp_path / "nope.npz")}}})


def test_init_config_errors(make_trainer):
    with pytest.raises(ConfigError, match="no such parameter"):
        make_trainer({"model": {"name": "linear", "init": {"W1": "zeros"}}})
    with pytest.raises(ConfigError, match="stddev"):
        make_trainer({"model": {"name": "linear", "init": {"W": {"name": "normal", "stddev": -1}}}})
