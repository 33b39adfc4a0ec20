"""`gdtrain gradcheck`: every model × loss passes; a deliberately broken gradient fails."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tool_runs import classes_npz, config, values_npz, write_yaml

from gdtrain.commands.gradcheck import gradcheck
from gdtrain.config.validate import resolve
from gdtrain.core.losses import LOSSES
from gdtrain.core.models import ACTIVATIONS, MODELS

# every model, and the MLP with each activation, two layers and four with dropout
MODEL_CASES = [(m, {}) for m in sorted(MODELS) if m != "mlp"] + [
    ("mlp", {"hidden": 5, "activation": a}) for a in sorted(ACTIVATIONS)] + [
    ("mlp", {"hidden": [5, 4, 3], "activation": a, "dropout": 0.3}) for a in sorted(ACTIVATIONS)]


def _config(tmp_path, model: str, model_opts: dict, loss: str, **sections) -> dict:
    """model × loss on data the loss accepts: class labels where it takes them, else values."""
    if LOSSES.build(loss, {}, "loss").accepts_classes:
        data = {"name": "npz", "path": str(classes_npz(tmp_path, n=30, k=3, d=4))}
    else:
        data = {"name": "npz", "path": str(values_npz(tmp_path, n=30, d=4, outputs=2))}
    return resolve(config(tmp_path, data=data, model={"name": model, **model_opts},
                          loss={"name": loss, "reduction": "sum"}, **sections))


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("model,opts", MODEL_CASES,
                         ids=[f"{m}-{o.get('activation', '')}{'-deep' if 'dropout' in o else ''}".rstrip("-")
                              for m, o in MODEL_CASES])
def test_every_model_and_loss_passes(tmp_path, model, opts, loss):
    result = gradcheck(_config(tmp_path, model, opts, loss, l2={"scale": 0.05}), batch=6, entries=12)
    assert result["ok"], result["params"]
    names = MODELS.build(model, opts, "model", input_dim=4, output_dim=3 if loss != "mse" else 2).names
    assert [r["name"] for r in result["params"]] == names
    for row in result["params"]:
        assert row["checked"] == min(12, row["size"])
        assert row["relative_error"] < 1e-7  # far inside the tolerance: float64 differences are this good
        assert row["max_abs_grad"] > 0


def test_dropout_is_checked_with_its_masks_held_fixed(tmp_path, cli):
    """With dropout the masks are drawn from one key, (run seed, step 0), for the analytic
    gradient and every perturbation: the check passes, reports the key, and checks a
    different function than the model without dropout."""
    model = {"hidden": [6, 5], "activation": "tanh"}
    plain = gradcheck(_config(tmp_path, "mlp", model, "cross_entropy"))
    cfg = _config(tmp_path, "mlp", {**model, "dropout": 0.5}, "cross_entropy", run={"seed": 4})
    dropped = gradcheck(cfg)
    assert dropped["ok"] and plain["ok"]
    assert dropped["dropout_key"] == [4, 0] and plain["dropout_key"] is None
    assert dropped["objective"] != plain["objective"]
    path = write_yaml(tmp_path / "gc.yaml", config(tmp_path, model={"name": "mlp", **model, "dropout": 0.5},
                                                   run={"seed": 4}))
    code, out, err = cli("gradcheck", path)
    assert code == 0, err
    assert "dropout: masks held fixed (key seed 4, step 0) for every evaluation" in out
    code, out, _ = cli("gradcheck", path, "--json")
    assert code == 0 and json.loads(out)["dropout_key"] == [4, 0]


def test_only_trainable_parameters_and_l2_is_included(tmp_path):
    cfg = _config(tmp_path, "softmax", {}, "cross_entropy", l2={"scale": 3.0}, train={"trainable": ["W"]})
    result = gradcheck(cfg)
    assert [r["name"] for r in result["params"]] == ["W"] and result["frozen"] == ["b"]
    assert result["ok"] and [p["params"] for p in result["penalties"]] == [["W"]]


def _broken_model(monkeypatch, factor: float):
    """Register a 'linear' whose backward scales W's gradient: an error gradcheck must catch."""
    real = MODELS.get("linear")

    def broken(input_dim, output_dim, use_bias: bool = True):
        model = real(input_dim, output_dim, use_bias)
        backward = model.backward

        def wrong(p, cache, dout, wanted):
            grads = backward(p, cache, dout, wanted)
            if "W" in grads:
                grads["W"] = grads["W"] * factor
            return grads

        return dataclasses.replace(model, backward=wrong)

    monkeypatch.setitem(MODELS._table, "linear", broken)


def test_a_broken_model_gradient_fails(tmp_path, monkeypatch):
    cfg = _config(tmp_path, "linear", {}, "mse")
    _broken_model(monkeypatch, 1.001)  # off by a tenth of a percent
    result = gradcheck(cfg)
    rows = {r["name"]: r for r in result["params"]}
    assert not result["ok"]
    assert not rows["W"]["ok"] and rows["W"]["relative_error"] == pytest.approx(1e-3, rel=0.01)
    assert rows["b"]["ok"]


def test_a_broken_loss_gradient_fails(tmp_path, monkeypatch):
    real = LOSSES.get("mse")

    def half_mse(reduction="mean"):
        loss = real(reduction)
        value_and_grad = loss.value_and_grad

        def wrong(x, y):
            value, grad = value_and_grad(x, y)
            return value, grad / 2  # forgot the 2 of d(x - y)²/dx

        return dataclasses.replace(loss, value_and_grad=wrong)

    cfg = _config(tmp_path, "mlp", {"hidden": 3}, "mse")
    monkeypatch.setitem(LOSSES._table, "mse", half_mse)
    result = gradcheck(cfg)
    assert not any(r["ok"] for r in result["params"])
    assert all(r["relative_error"] == pytest.approx(0.5, rel=1e-3) for r in result["params"])


def test_cli_exit_codes(tmp_path, cli, monkeypatch):
    path = write_yaml(tmp_path / "gc.yaml", config(tmp_path))
    code, out, err = cli("gradcheck", path)
    assert code == 0, err
    assert "W" in out and "ok" in out
    code, out, err = cli("gradcheck", path, "--json", "--set", "l2.scale=0.1")
    assert code == 0, err
    assert [p["options"] for p in json.loads(out)["penalties"]] == [{"scale": 0.1}]
    _broken_model(monkeypatch, 1.5)
    code, out, err = cli("gradcheck", path)
    assert code == 1
    assert "FAIL" in out
    assert err.startswith("gdtrain: error: gradient check failed") and " W " in err and "b " not in err
    code, _, err = cli("gradcheck", path, "--tolerance", "0")
    assert code == 2 and "--tolerance" in err


def test_a_config_that_evaluates_on_a_validation_split_is_checked_as_run_accepts_it(tmp_path, cli):
    """gradcheck builds its small float64 batch from the training split, but the config's
    other splits stay: train.eval_split: validation needs the held-out split to exist."""
    data = {"name": "npz", "path": str(classes_npz(tmp_path, n=30, k=3, d=4)), "validation": 6}
    raw = config(tmp_path, data=data, model={"name": "softmax"}, loss={"name": "cross_entropy"},
                 train={"eval_split": "validation", "steps": 4})
    path = write_yaml(tmp_path / "gc.yaml", raw)
    code, _, err = cli("run", path, "-q")
    assert code == 0, err
    code, out, err = cli("gradcheck", path, "--json")
    assert code == 0, err
    assert json.loads(out)["ok"]
