"""Every loss against a closed form written here with plain `math`, and its gradient
against central differences, in float64; driven by LOSSES so a new loss needs a reference.

Reductions (gdtrain/core/losses.py, DESIGN.md): `sum` adds every term; `mean` divides by the
number of rows for softmax cross-entropy and by the number of elements (rows × outputs)
for sigmoid cross-entropy and MSE, as tf.reduce_mean does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdtrain.core.losses import LOSSES
from gdtrain.errors import ConfigError

# ------------------------------------------------------------------ independent references


def _logsumexp(row) -> float:
    m = max(row)
    return m + math.log(math.fsum(math.exp(v - m) for v in row))


def _log_sigmoid(v: float) -> float:
    # log σ(v) = -log(1 + e^-v), written so that neither branch overflows
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


def softmax_ce_terms(x, z):
    """Per row: logsumexp(x)·Σz - Σ z·x (= -Σ z·log softmax(x)); one term per row."""
    return [_logsumexp(xr) * math.fsum(zr) - math.fsum(a * b for a, b in zip(zr, xr, strict=True))
            for xr, zr in zip(x.tolist(), z.tolist(), strict=True)]


def sigmoid_ce_terms(x, z):
    """Per element: -z·log σ(x) - (1 - z)·log(1 - σ(x)), with log(1 - σ(x)) = log σ(-x)."""
    return [-zi * _log_sigmoid(xi) - (1 - zi) * _log_sigmoid(-xi)
            for xr, zr in zip(x.tolist(), z.tolist(), strict=True) for xi, zi in zip(xr, zr, strict=True)]


def mse_terms(x, z):
    return [(a - b) ** 2 for a, b in zip(x.ravel().tolist(), z.ravel().tolist(), strict=True)]


# name -> (terms function, whether `mean` divides by rows (True) or by elements (False))
REFERENCE = {
    "cross_entropy": (softmax_ce_terms, True),
    "sigmoid_cross_entropy": (sigmoid_ce_terms, False),
    "mse": (mse_terms, False),
}


def reference_value(name: str, reduction: str, x: np.ndarray, z: np.ndarray) -> float:
    terms, per_row = REFERENCE[name]
    total = math.fsum(terms(x, z))
    if reduction == "sum":
        return total
    return total / (x.shape[0] if per_row else x.size)


def one_hot(labels, k):
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def build(name: str, reduction: str = "mean"):
    return LOSSES.build(name, {"reduction": reduction}, "loss")


def target_kinds(name: str) -> list[str]:
    loss = build(name)
    kinds = []
    if loss.accepts_classes:
        kinds.append("labels")
    if loss.accepts_values:
        kinds += ["one_hot", "soft"]
    return kinds


CASES = [(n, kind) for n in LOSSES.names() for kind in target_kinds(n)]


def make_case(kind: str, rng, n: int = 5, k: int = 4):
    """(outputs, targets given to the loss, the same targets as a float matrix)."""
    x = rng.normal(0, 2, (n, k))
    labels = rng.integers(0, k, n)
    if kind == "labels":
        return x, labels, one_hot(labels, k)
    if kind == "one_hot":
        return x, one_hot(labels, k), one_hot(labels, k)
    soft = rng.dirichlet(np.ones(k), n)  # rows of probabilities
    return x, soft, soft


# ------------------------------------------------------------------ the tests


def test_every_loss_has_a_reference():
    assert set(LOSSES.names()) <= set(REFERENCE), "write a closed form for the new loss"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name,kind", CASES)
def test_value_matches_closed_form(name, kind, reduction):
    rng = np.random.default_rng(1)
    x, y, z = make_case(kind, rng)
    x_before = x.copy()
    value, grad = build(name, reduction).value_and_grad(x, y)
    assert value == pytest.approx(reference_value(name, reduction, x, z), rel=1e-12, abs=1e-12)
    assert grad.shape == x.shape and grad.dtype == np.float64
    np.testing.assert_array_equal(x, x_before)  # the loss must not write into the outputs


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name,kind", CASES)
def test_gradient_matches_central_differences(name, kind, reduction):
    rng = np.random.default_rng(2)
    x, y, _ = make_case(kind, rng)
    loss = build(name, reduction)
    _, grad = loss.value_and_grad(x.copy(), y)
    h = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (loss.value_and_grad(up, y)[0] - loss.value_and_grad(down, y)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,kind", CASES)
def test_gradient_closed_form(name, kind):
    """Cross-entropies: p - z scaled by the reduction (DESIGN.md); MSE: 2(x - z)."""
    rng = np.random.default_rng(3)
    x, y, z = make_case(kind, rng)
    _, grad = build(name, "sum").value_and_grad(x, y)
    if name == "cross_entropy":
        p = np.exp(x - x.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        expected = p * z.sum(1, keepdims=True) - z
    elif name == "sigmoid_cross_entropy":
        expected = 1 / (1 + np.exp(-x)) - z
    elif name == "mse":
        expected = 2 * (x - z)
    else:
        pytest.skip(f"no closed-form gradient written for {name}")
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", [n for n, kind in CASES if kind == "labels"])
def test_labels_and_one_hot_agree(name):
    rng = np.random.default_rng(4)
    x, labels, z = make_case("labels", rng)
    loss = build(name)
    v1, g1 = loss.value_and_grad(x.copy(), labels)
    v2, g2 = loss.value_and_grad(x.copy(), z)
    assert v1 == pytest.approx(v2, rel=1e-14)
    np.testing.assert_allclose(g1, g2, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("name,kind", CASES)
def test_sum_is_batch_size_times_mean(name, kind):
    """The seed's -reduce_sum: with N rows, sum = N·mean for softmax CE, N·K elements otherwise."""
    rng = np.random.default_rng(5)
    x, y, _ = make_case(kind, rng, n=7, k=3)
    v_sum, g_sum = build(name, "sum").value_and_grad(x.copy(), y)
    v_mean, g_mean = build(name, "mean").value_and_grad(x.copy(), y)
    divisor = x.shape[0] if REFERENCE[name][1] else x.size
    assert v_sum == pytest.approx(divisor * v_mean, rel=1e-13)
    np.testing.assert_allclose(g_sum, divisor * g_mean, rtol=1e-13)


@pytest.mark.parametrize("name,kind", CASES)
def test_mean_over_split_matches_mean_reduction(name, kind):
    """What eval reports (`mean_over`) is the mean-reduced loss, whatever the training reduction."""
    rng = np.random.default_rng(6)
    x, y, _ = make_case(kind, rng, n=9, k=3)
    for reduction in ("mean", "sum"):
        loss = build(name, reduction)
        assert loss.mean_over(x, y) == pytest.approx(build(name, "mean").value_and_grad(x.copy(), y)[0],
                                                     rel=1e-13)


EXTREME = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0], [-1000.0, -1000.0, -1000.0]])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name,kind", CASES)
def test_stable_at_logits_of_1000(name, kind, reduction):
    labels = np.array([1, 0, 2])
    z = one_hot(labels, 3)
    if kind == "soft":
        z = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    y = labels if kind == "labels" else z
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        value, grad = build(name, reduction).value_and_grad(EXTREME.copy(), y)
    assert math.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(reference_value(name, reduction, EXTREME, z), rel=1e-12)


def test_extreme_values_by_hand():
    """Spelled out: a confident wrong answer costs about the logit gap, a right one nothing."""
    ce = build("cross_entropy", "sum")
    # row 0: label 1 at -1000 vs max 1000 -> 2000; row 1: label 0 -> 2000 + log 2; row 2: log 3
    value, grad = ce.value_and_grad(EXTREME.copy(), np.array([1, 0, 2]))
    assert value == pytest.approx(2000 + 2000 + math.log(2) + math.log(3), rel=1e-15)
    np.testing.assert_allclose(grad[0], [1, -1, 0], atol=1e-300)
    np.testing.assert_allclose(grad[1], [-1, 0.5, 0.5], atol=1e-15)

    sig = build("sigmoid_cross_entropy", "sum")
    value, grad = sig.value_and_grad(np.array([[1000.0, -1000.0, 1000.0, -1000.0]]),
                                     np.array([[0.0, 1.0, 1.0, 0.0]]))
    assert value == pytest.approx(2000.0, rel=1e-15)
    np.testing.assert_array_equal(grad, [[1.0, -1.0, 0.0, 0.0]])


@pytest.mark.parametrize("name,kind", CASES)
def test_float32_stays_float32(name, kind):
    rng = np.random.default_rng(7)
    x, y, _ = make_case(kind, rng)
    x = x.astype(np.float32)
    y = y if y.dtype.kind == "i" else y.astype(np.float32)
    loss = build(name)
    _, grad = loss.value_and_grad(x, y)
    assert grad.dtype == np.float32
    assert loss.predict(x).dtype == np.float32
    assert loss.per_example(x, y).dtype == np.float32


def test_predictions():
    x = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]])
    ce = build("cross_entropy")
    p = ce.predict(x)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(ce.classify(x), [1, 2])
    sig = build("sigmoid_cross_entropy")
    np.testing.assert_allclose(sig.predict(np.array([[0.0, 2.0]])), [[0.5, 1 / (1 + math.exp(-2))]])
    np.testing.assert_array_equal(sig.classify(np.array([[-0.1], [0.2]])), [0, 1])
    assert build("mse").classify is None


@pytest.mark.parametrize("name", LOSSES.names())
def test_bad_reduction_is_a_config_error(name):
    with pytest.raises(ConfigError, match="reduction"):
        LOSSES.build(name, {"reduction": "average"}, "loss")


def test_what_a_loss_asks_of_targets_is_declared_by_the_loss():
    """check_loss_fits and predict ask the Loss, not its name."""
    xent, sig, mse = (LOSSES.build(n, {}, "loss") for n in ("cross_entropy", "sigmoid_cross_entropy", "mse"))
    assert (xent.min_outputs, xent.distribution_targets, xent.predicts) == (2, True, "distribution")
    assert (sig.min_outputs, sig.distribution_targets, sig.predicts) == (1, False, "per_output")
    assert (mse.min_outputs, mse.distribution_targets, mse.predicts) == (1, False, "values")
