"""The step's parts (gdtrain/core/chain.py) against closed forms written out here in float64,
table-driven over the registries, so that a new penalty or clip must bring its formula:
each penalty's term and gradient, one whole step with it by hand and the objective
against finite differences; each clip on gradients below and above its threshold, zero
and non-finite; AdamW one step; the order penalties -> clip -> optimizer -> EMA; what
the runs report under each part's name; old configs keeping their meaning and bits;
resume with L1 + clipping + AdamW bit for bit."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from resume_helpers import Recorder, assert_same_state, checkpoint_arrays, cut_back, make_config
from resume_helpers import run as run_resolved
from tool_runs import config, run, run_dir, values_npz, write_yaml

from gdtrain.commands.gradcheck import gradcheck
from gdtrain.commands.plan import make_plan
from gdtrain.config.overrides import apply_overrides
from gdtrain.config.validate import resolve
from gdtrain.core.clipping import CLIPS
from gdtrain.core.penalties import PENALTIES
from gdtrain.core.train import Trainer
from gdtrain.errors import ConfigError
from gdtrain.run.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
F64 = {"run": {"dtype": "float64"}}
LINEAR = {"model": {"name": "linear", "init": "normal"}}  # W off zero, so that sign(W) is not 0

# ------------------------------------------------------------------ penalties, by hand

# name -> (term of one array, its gradient), at scale s
PENALTY_FORMS = {
    "l2": (lambda w, s: s * np.sum(w * w) / 2, lambda w, s: s * w),  # tf.nn.l2_loss halves it
    "l1": (lambda w, s: s * np.sum(np.abs(w)),
           lambda w, s: s * np.where(w > 0, 1.0, np.where(w < 0, -1.0, 0.0))),  # 0 at 0, TF's sign
}


def test_every_penalty_has_a_closed_form():
    assert set(PENALTIES.names()) == set(PENALTY_FORMS)


@pytest.mark.parametrize("name", PENALTIES.names())
def test_penalty_term_and_gradient_match_the_closed_form(name):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(0, 1, (3, 4)), np.array([0.0, -2.0, 3.5, 0.0])]  # exact zeros: L1's kink
    term, grad = PENALTY_FORMS[name]
    penalty = PENALTIES.build(name, {"scale": 0.3}, "penalties.0")
    assert penalty.term(arrays) == pytest.approx(sum(term(w, 0.3) for w in arrays), rel=1e-14)
    for w in arrays:
        g = np.full_like(w, 1.5)
        penalty.add_gradient(g, w)
        np.testing.assert_allclose(g, 1.5 + grad(w, 0.3), rtol=1e-15, atol=0)
    zero = np.zeros(3)
    g = np.zeros(3)
    penalty.add_gradient(g, zero)
    assert np.array_equal(g, np.zeros(3))  # no push at 0: l2's gradient is 0 there, l1's TF sign(0)


def _first_batch(t: Trainer):
    x, y = t.dataset.train.x[:8], t.dataset.train.y[:8]
    W0, b0 = t.params["W"].copy(), t.params["b"].copy()
    residual = x @ W0 + b0 - y
    dout = 2 * residual / residual.size  # mse, mean over every element
    return W0, b0, x.T @ dout, dout.sum(0)


@pytest.mark.parametrize("name", PENALTIES.names())
def test_one_step_with_each_penalty_by_hand(make_trainer, name):
    """sgd on the linear model: W -= lr·(data gradient + penalty gradient); b is not a weight
    matrix, so the default selection leaves it alone."""
    t = make_trainer({**F64, **LINEAR, "penalties": [{"name": name, "scale": 0.05}],
                      "train": {"shuffle": False}})
    W0, b0, gW, gb = _first_batch(t)
    t.step()
    _, grad = PENALTY_FORMS[name]
    np.testing.assert_allclose(t.params["W"], W0 - 0.1 * (gW + grad(W0, 0.05)), rtol=1e-14)
    np.testing.assert_allclose(t.params["b"], b0 - 0.1 * gb, rtol=1e-14)
    term, _ = PENALTY_FORMS[name]
    assert t.penalty_terms() == {name: pytest.approx(term(t.params["W"], 0.05), rel=1e-14)}


def test_penalties_select_parameters_by_pattern(make_trainer):
    t = make_trainer({**F64, **LINEAR, "penalties": [{"name": "l1", "scale": 0.05, "params": ["b"]}],
                      "train": {"shuffle": False}})
    W0, b0, gW, gb = _first_batch(t)
    t.step()
    np.testing.assert_allclose(t.params["W"], W0 - 0.1 * gW, rtol=1e-14)
    np.testing.assert_allclose(t.params["b"], b0 - 0.1 * (gb + 0.05 * np.sign(b0)), rtol=1e-14)
    assert t.config["penalties"][0]["params"] == ["b"]
    default = make_trainer({"penalties": [{"name": "l1", "scale": 0.1}]})
    assert default.config["penalties"][0]["params"] == ["W"]  # the weight matrices, as l2's


@pytest.mark.parametrize("name", PENALTIES.names())
def test_objective_with_each_penalty_passes_finite_differences(tmp_path, name):
    data = {"name": "npz", "path": str(values_npz(tmp_path, n=30, d=4, outputs=2))}
    raw = config(tmp_path, data=data, model={"name": "mlp", "hidden": 5, "activation": "tanh"},
                 loss={"name": "mse", "reduction": "sum"},
                 penalties=[{"name": name, "scale": 0.7, "params": ["*"]}])
    result = gradcheck(resolve(raw), batch=6, entries=12)
    assert result["ok"], result["params"]
    assert all(r["relative_error"] < 1e-7 for r in result["params"])
    assert [(p["label"], p["params"]) for p in result["penalties"]] == [(name, ["W1", "b1", "W2", "b2"])]


def test_a_broken_penalty_gradient_fails_gradcheck(tmp_path, monkeypatch):
    """gradcheck checks the penalties' gradients too: one 1% off is caught."""
    real = PENALTIES.get("l1")

    def broken(scale):
        penalty = real(scale)

        def wrong(g, w):
            g += 1.01 * scale * np.sign(w)

        return dataclasses.replace(penalty, add_gradient=wrong)

    raw = config(tmp_path, penalties=[{"name": "l1", "scale": 5.0}])
    monkeypatch.setitem(PENALTIES._table, "l1", broken)
    rows = {r["name"]: r for r in gradcheck(resolve(raw))["params"]}
    assert not rows["W"]["ok"] and rows["b"]["ok"]


# ------------------------------------------------------------------ clipping, by hand


def ref_value(grads, min, max):
    return {k: np.maximum(np.minimum(g, max), min) for k, g in grads.items()}


def ref_norm(grads, clip_norm):
    return {k: g * clip_norm / max(math.sqrt(float(np.sum(g * g))), clip_norm) for k, g in grads.items()}


def ref_global_norm(grads, clip_norm):
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    return {k: g * clip_norm / max(norm, clip_norm) for k, g in grads.items()}


# (name, options, reference); gradients of W (4x3) and b (3) ~ N(0, 1): norms about 3.5 and 1.7
CLIP_CASES = [
    ("value", {"min": -0.5, "max": 0.25}, ref_value),
    ("value", {"min": -10.0, "max": 10.0}, ref_value),  # nothing to clip
    ("norm", {"clip_norm": 1.0}, ref_norm),  # both above
    ("norm", {"clip_norm": 2.5}, ref_norm),  # W above, b below
    ("norm", {"clip_norm": 100.0}, ref_norm),  # both below
    ("global_norm", {"clip_norm": 1.0}, ref_global_norm),
    ("global_norm", {"clip_norm": 100.0}, ref_global_norm),
]
CASE_IDS = [f"{n}-{'-'.join(f'{v:g}' for v in o.values())}" for n, o, _ in CLIP_CASES]


def _grads(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 1, (4, 3)), "b": rng.normal(0, 1, (3,))}


def test_every_clip_has_a_closed_form():
    assert set(CLIPS.names()) == {name for name, _, _ in CLIP_CASES}


@pytest.mark.parametrize("name,options,reference", CLIP_CASES, ids=CASE_IDS)
def test_clip_matches_the_closed_form(name, options, reference):
    grads = _grads()
    expected = reference(copy.deepcopy(grads), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CLIPS.build(name, options, "clip")(grads)
    for k in grads:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-15, atol=0, err_msg=k)


@pytest.mark.parametrize("name,options,reference", CLIP_CASES, ids=CASE_IDS)
def test_a_zero_gradient_stays_zero(name, options, reference):
    grads = {"W": np.zeros((4, 3)), "b": np.zeros(3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0, no 1/0 warning
        scalars = CLIPS.build(name, options, "clip")(grads)
    assert all(np.array_equal(g, np.zeros_like(g)) for g in grads.values())
    assert scalars.get("global_norm", 0.0) == 0.0


def test_norm_clips_above_the_threshold_and_keeps_gradients_below_it():
    grads = _grads()
    before = copy.deepcopy(grads)
    CLIPS.build("norm", {"clip_norm": 2.5}, "clip")(grads)
    assert np.linalg.norm(before["W"]) > 2.5 > np.linalg.norm(before["b"])
    assert np.linalg.norm(grads["W"]) == pytest.approx(2.5, rel=1e-15)
    np.testing.assert_allclose(grads["b"], before["b"], rtol=2.3e-16, atol=0)  # g·c/c: one rounding
    np.testing.assert_allclose(grads["W"], before["W"] * 2.5 / np.linalg.norm(before["W"]), rtol=1e-15)


def test_global_norm_reports_the_norm_before_clipping_and_scales_all_gradients_alike():
    grads = _grads()
    before = copy.deepcopy(grads)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in before.values()))
    scalars = CLIPS.build("global_norm", {"clip_norm": 1.0}, "clip")(grads)
    assert scalars == {"global_norm": pytest.approx(norm, rel=1e-15)}
    assert math.sqrt(sum(float(np.sum(g * g)) for g in grads.values())) == pytest.approx(1.0, rel=1e-15)
    ratios = {k: grads[k] / before[k] for k in grads}
    assert all(np.allclose(r, 1 / norm, rtol=1e-15, atol=0) for r in ratios.values())
    below = _grads()
    assert CLIPS.build("global_norm", {"clip_norm": 100.0}, "clip")(below) == {
        "global_norm": pytest.approx(norm, rel=1e-15)}


def test_a_non_finite_global_norm_makes_every_gradient_nan_as_tf1_does():
    grads = {"W": np.array([[1.0, np.inf]]), "b": np.array([2.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scalars = CLIPS.build("global_norm", {"clip_norm": 1.0}, "clip")(grads)
    assert scalars["global_norm"] == math.inf
    assert all(np.isnan(g).all() for g in grads.values())


def test_clip_value_refuses_min_above_max():
    with pytest.raises(ConfigError, match=r"clip: min \(1\) must be <= max \(-1\)"):
        CLIPS.build("value", {"min": 1, "max": -1}, "clip")


@pytest.mark.parametrize("name,options,reference", CLIP_CASES, ids=CASE_IDS)
def test_one_step_with_each_clip_by_hand(make_trainer, name, options, reference):
    t = make_trainer({**F64, **LINEAR, "clip": {"name": name, **options}, "train": {"shuffle": False}})
    W0, b0, gW, gb = _first_batch(t)
    t.step()
    clipped = reference({"W": gW, "b": gb}, **options)
    np.testing.assert_allclose(t.params["W"], W0 - 0.1 * clipped["W"], rtol=1e-14)
    np.testing.assert_allclose(t.params["b"], b0 - 0.1 * clipped["b"], rtol=1e-14)


def test_penalties_are_clipped_with_the_data_gradient(make_trainer):
    """TF1 practice: clip the gradient of loss + regularisation, so the penalty's gradient
    is inside the clipped norm; the l2 section's penalty comes before the list's."""
    t = make_trainer({**F64, **LINEAR, "l2": {"scale": 3.0}, "penalties": [{"name": "l1", "scale": 2.0}],
                      "clip": {"name": "global_norm", "clip_norm": 0.5}, "train": {"shuffle": False}})
    assert [p.label for p in t.penalties] == ["l2", "l1"]
    W0, b0, gW, gb = _first_batch(t)
    t.step()
    clipped = ref_global_norm({"W": gW + 3.0 * W0 + 2.0 * np.sign(W0), "b": gb}, 0.5)
    np.testing.assert_allclose(t.params["W"], W0 - 0.1 * clipped["W"], rtol=1e-14)
    np.testing.assert_allclose(t.params["b"], b0 - 0.1 * clipped["b"], rtol=1e-14)


# ------------------------------------------------------------------ AdamW through the Trainer


def test_adamw_steps_match_the_formula_with_the_scheduled_rate(make_trainer):
    """var -= lr_k·wd·var (Keras 3, PyTorch) beside Adam's TF1 step, lr_k the schedule's rate
    for update k: halved every step here, so the second step's decay uses half the rate."""
    lr, wd, b1, b2, eps = 0.05, 0.2, 0.9, 0.999, 1e-8
    t = make_trainer({**F64, **LINEAR,
                      "optimizer": {"name": "adamw", "learning_rate": lr, "weight_decay": wd},
                      "schedule": {"name": "exponential", "decay_rate": 0.5, "decay_steps": 1},
                      "train": {"shuffle": False}})
    w = {k: v.copy() for k, v in t.params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(v) for k, v in w.items()}
    for step in (1, 2):
        x, y = t.dataset.train.x[8 * (step - 1): 8 * step], t.dataset.train.y[8 * (step - 1): 8 * step]
        residual = x @ w["W"] + w["b"] - y
        dout = 2 * residual / residual.size
        g = {"W": x.T @ dout, "b": dout.sum(0)}
        rate = lr * 0.5 ** (step - 1)
        alpha = rate * math.sqrt(1 - b2**step) / (1 - b1**step)
        for k in w:
            m[k] = m[k] + (g[k] - m[k]) * (1 - b1)
            v[k] = v[k] + (g[k] ** 2 - v[k]) * (1 - b2)
            w[k] = w[k] - rate * wd * w[k] - alpha * m[k] / (np.sqrt(v[k]) + eps)
        result = t.step()
        assert result.lr == rate
        for k in w:
            np.testing.assert_allclose(t.params[k], w[k], rtol=1e-13, err_msg=f"{k} after step {step}")
    # the decay is decoupled: not in the moments, which hold the data gradient only
    np.testing.assert_allclose(t.opt_state["m"]["W"], m["W"], rtol=1e-13)


def test_adamw_without_decay_is_adam_bit_for_bit(make_trainer):
    a = make_trainer({"optimizer": {"name": "adam", "learning_rate": 0.01}})
    b = make_trainer({"optimizer": {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.0}})
    for _ in range(5):
        a.step()
        b.step()
    assert_same_state(b.state_arrays(), a.state_arrays())


# ------------------------------------------------------------------ old configs keep their meaning


def test_a_config_without_the_new_sections_resolves_without_them(tmp_path):
    resolved = resolve(config(tmp_path, l2={"scale": 0.01}, ema={"decay": 0.9}))
    assert "penalties" not in resolved and "clip" not in resolved
    assert resolved["l2"] == {"scale": 0.01, "params": ["W"]}


def test_the_l2_section_and_an_l2_penalty_train_to_the_same_bits(make_trainer):
    section = make_trainer({"l2": {"scale": 0.05}, "optimizer": {"name": "momentum", "learning_rate": 0.1}})
    listed = make_trainer({"penalties": [{"name": "l2", "scale": 0.05}],
                           "optimizer": {"name": "momentum", "learning_rate": 0.1}})
    for _ in range(10):
        section.step()
        listed.step()
    assert_same_state(listed.state_arrays(), section.state_arrays())
    assert listed.penalty_terms() == section.penalty_terms()


def test_circle_l1_is_circle_l2_with_an_l1_penalty_of_the_same_scale():
    from gdtrain.config.loading import load

    l1, l2 = (load(REPO / "configs" / f"circle_{k}.yaml") for k in ("l1", "l2"))
    assert l1.pop("penalties") == [{"name": "l1", "scale": l2["l2"]["scale"], "params": l2["l2"]["params"]}]
    del l2["l2"]
    l1["run"].pop("name"), l2["run"].pop("name")
    assert l1 == l2


def test_two_penalties_of_one_kind_get_distinct_stable_names(make_trainer):
    t = make_trainer({"model": {"name": "mlp", "hidden": 3},
                      "penalties": [{"name": "l2", "scale": 0.1, "params": ["W1"]},
                                    {"name": "l1", "scale": 0.2},
                                    {"name": "l2", "scale": 0.3, "params": ["W2"]}]})
    assert [p.label for p in t.penalties] == ["l2", "l1", "l2_2"]
    terms = t.penalty_terms()
    w1, w2 = (t.params[k].astype(np.float64) for k in ("W1", "W2"))
    assert terms["l2"] == pytest.approx(0.1 * np.sum(w1 * w1) / 2, rel=1e-6)
    assert terms["l2_2"] == pytest.approx(0.3 * np.sum(w2 * w2) / 2, rel=1e-6)


def test_components_lists_penalties_and_clips(cli):
    code, out, err = cli("components", "penalties")
    assert code == 0, err
    assert out.startswith("penalties") and "l1" in out and "params: list[str] | null, default null" in out
    code, out, err = cli("components", "clip")
    assert code == 0 and "global_norm" in out and "clip_norm: float (> 0), required" in out


def test_set_reaches_into_the_penalties_list():
    raw = {"penalties": [{"name": "l2", "scale": 0.1}, {"name": "l1", "scale": 0.2}]}
    assert apply_overrides(raw, ["penalties.1.scale=0.5"])["penalties"][1] == {"name": "l1", "scale": 0.5}
    with pytest.raises(ConfigError, match="penalties is a list of 2; expected an index from 0 to 1, got '2'"):
        apply_overrides(raw, ["penalties.2.scale=0.5"])
    with pytest.raises(ConfigError, match="penalties.0.name is 'l2', not a mapping"):
        apply_overrides(raw, ["penalties.0.name.x=1"])


# ------------------------------------------------------------------ what a run reports, by part


def _chain_raw(tmp_path, **sections):
    return config(tmp_path, "chain", model={"name": "mlp", "hidden": 3},
                  penalties=[{"name": "l1", "scale": 0.01}, {"name": "l2", "scale": 0.02}],
                  clip={"name": "global_norm", "clip_norm": 0.5}, ema={"decay": 0.9}, **sections)


def test_metrics_summary_and_console_name_every_part(tmp_path, cli):
    raw = _chain_raw(tmp_path)
    summary = run(raw)
    records = [r for r in RunDir(run_dir(raw)).read_metrics() if r["event"] == "train"]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for r in records:
        assert list(r) == ["event", "step", "loss", "l1", "l2", "lr", "epoch", "elapsed", "global_norm",
                           "ema_decay"]
        assert r["l1"] > 0 and r["l2"] > 0 and r["global_norm"] > 0
    last = {k: records[-1][k] for k in ("l1", "l2")}  # logged at the final step
    assert summary["penalties"] == summary["trainer"].penalty_terms() == last
    # the same run through the CLI: each term in the log lines and in the summary table
    again = {**raw, "run": {**raw["run"], "name": "cli"}}
    code, out, err = cli("run", write_yaml(tmp_path / "chain.yaml", again))
    assert code == 0, err
    logged = [line for line in out.splitlines() if line.startswith("step")]
    assert len(logged) == 4 and all(" l1 " in line and " l2 " in line for line in logged)
    assert "l1 term" in out and "l2 term" in out


def test_tensorboard_gets_a_scalar_per_part(tmp_path):
    pytest.importorskip("tensorboardX")
    from test_tensorboard import scalars

    raw = _chain_raw(tmp_path, train={"tensorboard": True})
    run(raw)
    got = scalars(run_dir(raw) / "tb")
    assert {"train/ema_decay", "train/global_norm", "train/l1", "train/l2"} <= set(got)
    records = [r for r in RunDir(run_dir(raw)).read_metrics() if r["event"] == "train"]
    assert got["train/l1"] == {r["step"]: float(np.float32(r["l1"])) for r in records}


def test_plan_and_gradcheck_list_the_parts_in_step_order(tmp_path, cli):
    raw = _chain_raw(tmp_path)
    plan = make_plan(resolve(copy.deepcopy(raw)))
    assert [(p["stage"], p["label"]) for p in plan["chain"]] == [
        ("penalty", "l1"), ("penalty", "l2"), ("clip", "clip"), ("optimizer", "optimizer"),
        ("average", "ema")]
    assert plan["chain"][2]["options"] == {"clip_norm": 0.5}
    path = write_yaml(tmp_path / "chain.yaml", raw)
    code, out, err = cli("plan", path)
    assert code == 0, err
    assert "penalty   l1 scale 0.01 on W1, W2" in out and "clip      global_norm clip_norm 0.5" in out
    code, out, err = cli("gradcheck", path)
    assert code == 0, err
    assert "mlp + mse + l1 scale 0.01 on W1, W2 + l2 scale 0.02 on W1, W2" in out
    code, out, err = cli("gradcheck", path, "--json")
    assert code == 0, err
    assert [p["label"] for p in json.loads(out)["penalties"]] == ["l1", "l2"]


# ------------------------------------------------------------------ resume with the new parts


@pytest.mark.parametrize("name", ["adam_f64", "mlp_momentum"])
def test_old_checkpoints_resume_without_any_config_change_note(tmp_path, name):
    """A checkpoint of the code before the chain holds a saved config without penalties or
    clip: resuming it with the same config must see no change at all (test_baseline.py
    checks the bits)."""
    from test_baseline import BASELINE, FIXTURES

    case = BASELINE["old_runs"][name]
    shutil.copytree(FIXTURES / "old_runs" / name, tmp_path / name)
    raw = copy.deepcopy(case["raw"])
    raw["run"]["dir"] = str(tmp_path)
    recorder = Recorder()
    summary = run_resolved(resolve(raw), recorder)
    assert summary["resumed_from"] == case["cut"]
    assert not [m for m in recorder.messages if "config change" in m] and not recorder.warnings

CHAIN = {"optimizer": {"name": "adamw", "learning_rate": 0.05, "weight_decay": 0.1},
         "penalties": [{"name": "l1", "scale": 0.003}], "clip": {"name": "global_norm", "clip_norm": 0.3}}


def test_resume_with_l1_clipping_and_adamw_is_bit_identical(tmp_path, monkeypatch):
    """L2 section + L1 penalty + global-norm clip + AdamW + staircase + EMA, cut at several
    steps and resumed: every state array ends with the uninterrupted run's bits."""
    monkeypatch.setattr("os.fsync", lambda fd: None)
    reference = run_resolved(make_config(tmp_path / "ref", "r", CHAIN))
    kinds = {name.split("/")[0] for name in reference["trainer"].state_arrays()}
    assert kinds == {"param", "slot", "ema"}
    final = checkpoint_arrays(tmp_path / "ref" / "r", 30)
    for cut in (1, 12, 13, 29):
        cut_back(tmp_path / "ref" / "r", tmp_path / f"cut{cut}" / "r", cut)
        summary = run_resolved(make_config(tmp_path / f"cut{cut}", "r", CHAIN))
        assert summary["resumed_from"] == cut
        assert_same_state(summary["trainer"].state_arrays(), final, f"cut at {cut}")
