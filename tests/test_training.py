"""The training step as a whole: one update by hand, EMA and L2 against TF1's formulas,
the trainable mask, dtypes, batch order, and resume == never having stopped, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from gdtrain.config.loading import load
from gdtrain.core.batching import BatchStream
from gdtrain.core.dataset import Split
from gdtrain.core.losses import LOSSES
from gdtrain.core.models import MODELS
from gdtrain.core.optimizers import OPTIMIZERS
from gdtrain.errors import ConfigError, DivergedError
from gdtrain.run import checkpoint
from gdtrain.run.loop import RunOptions, train

F64 = {"run": {"dtype": "float64"}}
MLP = {"model": {"name": "mlp", "hidden": 3, "activation": "tanh"}}


def snapshot(arrays: dict) -> dict:
    return {k: v.copy() for k, v in arrays.items()}


# ------------------------------------------------------------------ one step, composed


def test_first_step_by_hand(make_trainer):
    """Linear model, MSE mean, momentum, L2 on W, rows 0..7 in order: one update written out."""
    t = make_trainer({**F64, "optimizer": {"name": "momentum", "learning_rate": 0.1, "momentum": 0.9},
                      "l2": {"scale": 0.01}, "train": {"shuffle": False}})
    W0, b0 = t.params["W"].copy(), t.params["b"].copy()
    x, y = t.dataset.train.x[:8], t.dataset.train.y[:8]
    residual = x @ W0 + b0 - y
    loss = float(np.mean(residual**2))
    dout = 2 * residual / residual.size
    gW = x.T @ dout + 0.01 * W0  # L2 gradient scale·w on the weight matrix only
    gb = dout.sum(0)
    result = t.step()
    assert result.step == 1 and result.lr == 0.1
    assert result.loss == pytest.approx(loss, rel=1e-14)  # the loss before the update
    np.testing.assert_allclose(t.params["W"], W0 - 0.1 * gW, rtol=1e-14)
    np.testing.assert_allclose(t.params["b"], b0 - 0.1 * gb, rtol=1e-14)
    np.testing.assert_allclose(t.opt_state["accum"]["W"], gW, rtol=1e-14)


# ------------------------------------------------------------------ EMA


def test_ema_with_num_updates_by_hand(make_trainer):
    """d = min(decay, (1+n)/(10+n)) with n = 1 on the first update; shadows start at the
    initial values; applied after each update (TF1's control_dependencies([train_op]))."""
    t = make_trainer({**F64, "ema": {"decay": 0.99, "num_updates": True}})
    shadow = snapshot(t.params)
    for k in t.params:
        np.testing.assert_array_equal(t.ema[k], t.params[k])
    for n in (1, 2, 3):
        t.step()
        d = min(0.99, (1 + n) / (10 + n))
        for k in shadow:
            shadow[k] = shadow[k] - (1 - d) * (shadow[k] - t.params[k])
            np.testing.assert_allclose(t.ema[k], shadow[k], rtol=1e-14, atol=1e-16, err_msg=f"{k} n={n}")
    # the first decay is 2/11, far below 0.99: the shadow moved most of the way
    assert t.average.decay_at(1) == pytest.approx(2 / 11)
    assert t.average.decay_at(1000) == 0.99


def test_ema_without_num_updates_uses_decay(make_trainer):
    t = make_trainer({**F64, "ema": {"decay": 0.5, "num_updates": False}})
    shadow = snapshot(t.params)
    for _ in range(3):
        t.step()
        for k in shadow:
            shadow[k] = shadow[k] - 0.5 * (shadow[k] - t.params[k])
            np.testing.assert_allclose(t.ema[k], shadow[k], rtol=1e-14, atol=1e-16)


def test_eval_params_use_shadows_for_trainable_only(make_trainer):
    t = make_trainer({**MLP, "ema": {"decay": 0.9}, "train": {"trainable": ["W*"]}})
    for _ in range(3):
        t.step()
    assert set(t.ema) == {"W1", "W2"}
    ev = t.eval_params("ema")
    assert ev["W1"] is t.ema["W1"] and ev["b1"] is t.params["b1"]
    assert t.eval_params("raw") is t.params


def test_unknown_weights_are_a_plain_value_error_in_the_core(make_trainer):
    """The core names no command-line flag: `--weights` is the commands' wording."""
    t = make_trainer()
    with pytest.raises(ValueError, match="weights: expected one of ema, raw, got 'best'") as info:
        t.weights_used("best")
    assert "--" not in str(info.value)


# ------------------------------------------------------------------ L2


def test_l2_term_and_gradient_on_configured_params_only(make_trainer):
    changes = {**F64, **MLP, "optimizer": {"name": "sgd", "learning_rate": 0.5}}
    plain = make_trainer(changes)
    reg = make_trainer({**changes, "l2": {"scale": 0.1, "params": ["W1"]}})
    start = snapshot(reg.params)
    w = start["W1"].ravel().tolist()
    assert reg.penalty_terms()["l2"] == pytest.approx(0.1 * sum(v * v for v in w) / 2, rel=1e-14)
    assert plain.penalty_terms() == {}  # no penalty, no term
    plain.step()
    reg.step()
    # same data gradient in both; the regularised run also moves W1 by -lr·scale·W1
    np.testing.assert_allclose(reg.params["W1"] - plain.params["W1"], -0.5 * 0.1 * start["W1"],
                               rtol=1e-9, atol=1e-15)
    for k in ("b1", "W2", "b2"):
        np.testing.assert_array_equal(reg.params[k], plain.params[k])


def test_l2_defaults_to_weight_matrices(make_trainer):
    t = make_trainer({**MLP, "l2": {"scale": 0.1}})
    assert [p.params for p in t.penalties] == [["W1", "W2"]]
    assert t.config["l2"]["params"] == ["W1", "W2"]


def test_l2_pattern_matching_nothing_is_a_config_error(make_trainer):
    with pytest.raises(ConfigError, match="W1"):
        make_trainer({**MLP, "l2": {"scale": 0.1, "params": ["V*"]}})


# ------------------------------------------------------------------ the trainable mask


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_frozen_arrays_bit_identical_and_without_slots(make_trainer, optimizer):
    t = make_trainer({**MLP, "optimizer": {"name": optimizer, "learning_rate": 0.05},
                      "ema": {"decay": 0.9}, "l2": {"scale": 0.01},
                      "train": {"trainable": ["W1", "b2"]}})
    frozen = {k: t.params[k].tobytes() for k in ("b1", "W2")}
    start = snapshot(t.params)
    for _ in range(12):
        t.step()
    for k, raw in frozen.items():
        assert t.params[k].tobytes() == raw, f"{k} changed"
    for k in ("W1", "b2"):
        assert not np.array_equal(t.params[k], start[k]), f"{k} did not train"
    for name in t.state_arrays():
        if name.startswith(("slot/", "ema/")) and not name.startswith("slot/power/"):
            assert name.rsplit("/", 1)[1] in ("W1", "b2"), name


def test_trainable_glob(make_trainer):
    t = make_trainer({**MLP, "train": {"trainable": ["W*"]}})
    assert t.trainable == ["W1", "W2"]
    b1 = t.params["b1"].tobytes()
    t.step()
    assert t.params["b1"].tobytes() == b1


def test_trainable_pattern_matching_nothing_lists_the_names(make_trainer):
    with pytest.raises(ConfigError, match="matches no parameter; the model has W1, b1, W2, b2"):
        make_trainer({**MLP, "train": {"trainable": ["W1", "c*"]}})


# ------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_no_array_changes_dtype(make_trainer, optimizer, dtype):
    t = make_trainer({"run": {"dtype": dtype}, **MLP,
                      "optimizer": {"name": optimizer, "learning_rate": 0.01},
                      "schedule": {"name": "exponential", "decay_steps": "epoch"},
                      "ema": {"decay": 0.99}, "l2": {"scale": 1e-3}})
    for _ in range(5):
        t.step()
    wanted = np.dtype(dtype)
    assert {k: v.dtype for k, v in t.state_arrays().items()} == {k: wanted for k in t.state_arrays()}
    assert t.dataset.train.x.dtype == wanted
    out, _ = t.model.forward(t.params, t.dataset.train.x)
    assert out.dtype == wanted


def test_schedule_sees_steps_per_epoch_and_step_count(make_trainer):
    """30 rows in batches of 8: 3.75 steps per epoch; update k uses lr(k), staircase by epoch."""
    t = make_trainer({"data": {"name": "linear_sum", "samples": 30},
                      "schedule": {"name": "exponential", "decay_rate": 0.5, "decay_steps": "epoch",
                                   "staircase": True}})
    lrs = [t.step().lr for _ in range(9)]
    assert lrs == [0.1 * 0.5 ** int(k // 3.75) for k in range(9)]
    assert lrs[3] == 0.1 and lrs[4] == 0.05 and lrs[8] == 0.025


def test_epochs_round_up_to_whole_steps(make_trainer):
    t = make_trainer({"data": {"name": "linear_sum", "samples": 30},
                      "train": {"steps": None, "epochs": 2}})
    assert t.total_steps == 8  # 60 examples / 8 = 7.5 -> 8


def test_divergence_is_reported(make_trainer):
    t = make_trainer({"optimizer": {"name": "sgd", "learning_rate": 1e20}})
    with np.errstate(all="ignore"), pytest.raises(DivergedError, match="diverged"):
        for _ in range(50):
            t.step()


# ------------------------------------------------------------------ batch order


def rows_stream(n, batch, seed=0, shuffle=False):
    x = np.arange(n, dtype=np.float64)[:, None]
    return BatchStream(Split(x, np.arange(n)), batch, seed, shuffle)


def test_in_order_batches_wrap_around():
    """shuffle false: batch i = rows (i·B mod N) … (i·B + B - 1 mod N)."""
    n, b = 10, 4
    s = rows_stream(n, b)
    for i in range(12):
        x, y = s.batch(i)
        expected = [(i * b + j) % n for j in range(b)]
        assert y.tolist() == expected and x[:, 0].tolist() == expected
    # fewer rows than a batch: the batch wraps around more than once
    assert rows_stream(3, 8).batch(0)[1].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_shuffled_batches_are_a_permutation_per_epoch():
    n, b = 12, 4  # three batches per epoch
    s = rows_stream(n, b, seed=5, shuffle=True)
    epochs = [np.concatenate([s.batch(e * 3 + i)[1].copy() for i in range(3)]) for e in range(4)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))
    assert len({tuple(o) for o in epochs}) == 4  # reshuffled every epoch


def test_shuffled_batches_cross_epochs_and_cover_every_row():
    n, b = 10, 4  # batches straddle epoch boundaries
    s = rows_stream(n, b, seed=1, shuffle=True)
    seen = np.concatenate([s.batch(i)[1].copy() for i in range(5)])  # 20 positions = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(n))
    assert sorted(seen[10:].tolist()) == list(range(n))


def test_order_is_deterministic_per_seed_and_random_access():
    a = rows_stream(50, 8, seed=3, shuffle=True)
    sequence = [a.batch(i)[1].copy() for i in range(20)]
    b = rows_stream(50, 8, seed=3, shuffle=True)
    for i in reversed(range(20)):  # any order of access: a resume needs only the step
        np.testing.assert_array_equal(b.batch(i)[1], sequence[i])
    c = rows_stream(50, 8, seed=4, shuffle=True)
    assert not all(np.array_equal(c.batch(i)[1], sequence[i]) for i in range(20))


# ------------------------------------------------------------------ resume


RESUME_BASE = {
    "run": {"name": "r", "seed": 3},
    "data": {"name": "linear_sum", "samples": 30},  # 30 / 8 = 3.75 steps per epoch
    "model": {"name": "mlp", "hidden": 4, "activation": "relu",
              "init": {"W1": {"name": "truncated_normal", "stddev": 0.5},
                       "W2": {"name": "truncated_normal", "stddev": 0.5}}},
    "loss": {"name": "mse", "reduction": "mean"},
    "optimizer": {"name": "momentum", "learning_rate": 0.05, "momentum": 0.9},
    "schedule": {"name": "exponential", "decay_rate": 0.9, "decay_steps": "epoch"},
    "l2": {"scale": 0.01},
    "ema": {"decay": 0.99, "num_updates": True},
    "train": {"batch_size": 8, "steps": 23, "shuffle": True, "log_every": 5, "checkpoint_every": 0},
}
QUIET = RunOptions(handle_signals=False)


def run_config(write_config, name: str, changes: dict, overrides: list[str]):
    path = write_config({**changes, "run": {"name": name}}, RESUME_BASE, name=f"{name}.yaml")
    return train(load(path, overrides), opts=QUIET)


@pytest.mark.parametrize("changes", [
    {},
    {"optimizer": {"name": "adam", "learning_rate": 0.01}},
    {"model": {"name": "mlp", "hidden": [4, 3], "activation": "elu", "dropout": [0.3, 0.2]}},
], ids=["momentum-ema-l2-exponential", "adam", "deep-dropout"])
def test_resume_is_bit_identical(write_config, changes):
    straight = run_config(write_config, "straight", changes, [])
    first = run_config(write_config, "split", changes, ["train.steps=9"])
    assert first["steps"] == 9
    second = run_config(write_config, "split", changes, [])
    assert second["resumed_from"] == 9 and second["steps"] == 23
    a = straight["trainer"].state_arrays()
    b = second["trainer"].state_arrays()
    assert set(a) == set(b)
    assert any(k.startswith("ema/") for k in a) and any(k.startswith("slot/") for k in a)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    # and what is on disk is the same as what was in memory
    arrays, meta = checkpoint.load(checkpoint.resolve_path(second["run_dir"]))
    assert meta["step"] == 23
    for k in a:
        assert arrays[k].tobytes() == a[k].tobytes(), k
    assert straight["final_loss"] == second["final_loss"]


def test_trainer_state_round_trip_in_memory(make_trainer):
    """load_state into a fresh trainer at step k, then continue: equal to one trainer going on."""
    changes = {k: v for k, v in RESUME_BASE.items() if k not in ("run", "data", "train")}
    changes["train"] = {**RESUME_BASE["train"], "batch_size": 8}
    changes["data"] = RESUME_BASE["data"]
    one = make_trainer(changes)
    for _ in range(7):
        one.step()
    saved = snapshot(one.state_arrays())
    two = make_trainer(changes)
    two.load_state(saved, 7)
    for _ in range(9):
        one.step()
        two.step()
    for k, v in one.state_arrays().items():
        assert v.tobytes() == two.state_arrays()[k].tobytes(), k


# ------------------------------------------------------------------ every combination runs


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """Three-class labels and three real-valued targets for the same 40 rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    labels = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "classes.npz", x=x, y=labels)
    np.savez(folder / "values.npz", x=x, y=x[:, :3] @ rng.normal(size=(3, 3)))
    return folder


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("loss", LOSSES.names())
@pytest.mark.parametrize("model", MODELS.names())
def test_every_model_loss_optimizer_trains(make_trainer, small_npz, model, loss, optimizer):
    from gdtrain.core.evaluate import evaluate

    data = "values.npz" if not LOSSES.build(loss, {}, "loss").accepts_classes else "classes.npz"
    t = make_trainer({"data": {"name": "npz", "path": str(small_npz / data)},
                      "model": {"name": model}, "loss": {"name": loss},
                      "optimizer": {"name": optimizer, "learning_rate": 0.01},
                      "ema": {"decay": 0.9}, "train": {"batch_size": 16}})
    losses = [t.step().loss for _ in range(6)]
    assert all(np.isfinite(losses))
    result = evaluate(t.model, t.loss, t.eval_params(), t.dataset.train, t.dataset.num_classes)
    assert np.isfinite(result["loss"])
    assert ("accuracy" in result) == (data == "classes.npz")


# ------------------------------------------------------------------ dropout in the step


DROPOUT_MLP = {"model": {"name": "mlp", "hidden": [5, 4], "activation": "relu", "dropout": 0.5}}


def test_a_step_drops_units_with_the_key_of_its_seed_and_step(make_trainer):
    """Update k descends the gradient of the model with the masks of key (run.seed, k):
    three SGD steps written out with model.forward/backward, against Trainer.step."""
    t = make_trainer({**F64, **DROPOUT_MLP, "run": {"seed": 9}})
    assert t.model.dropout
    params = snapshot(t.params)
    for k in range(3):
        x, y = t.stream.batch(k)
        out, cache = t.model.forward(params, x, (9, k))
        _, dout = t.loss.value_and_grad(out, y)
        grads = t.model.backward(params, cache, dout, frozenset(t.model.names))
        for name, g in grads.items():
            params[name] = params[name] - 0.1 * g
        t.step()
        for name in params:
            np.testing.assert_allclose(t.params[name], params[name], rtol=1e-13, atol=1e-15, err_msg=name)


def test_evaluation_never_drops_units(make_trainer):
    """After training with dropout, evaluation equals the same weights in the model without
    dropout, bit for bit, and is the same every time."""
    from gdtrain.core.evaluate import evaluate

    t = make_trainer(DROPOUT_MLP)
    for _ in range(5):
        t.step()
    plain = MODELS.build("mlp", {"hidden": [5, 4], "activation": "relu"}, "model",
                         input_dim=t.dataset.input_dim, output_dim=t.dataset.output_dim)
    split = t.dataset.train
    first = evaluate(t.model, t.loss, t.eval_params(), split, t.dataset.num_classes)
    assert evaluate(t.model, t.loss, t.eval_params(), split, t.dataset.num_classes) == first
    assert evaluate(plain, t.loss, t.eval_params(), split, t.dataset.num_classes) == first
