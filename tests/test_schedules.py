"""Every schedule's learning rate at chosen steps, against formulas written out here
(TF1's exponential_decay, piecewise_constant, cosine_decay), and every invalid option
rejected as a ConfigError by build_schedule. `step` counts updates already done.
"""

from __future__ import annotations

import math

import pytest

from gdtrain.core.schedules import SCHEDULES, build_schedule
from gdtrain.errors import ConfigError

LR = 0.1

# (schedule section, steps_per_epoch, total_steps, {step: expected learning rate})
VALUE_CASES = [
    ({"name": "constant"}, 10, 100, {0: LR, 1: LR, 99: LR, 10**6: LR}),
    (None, 10, 100, {0: LR, 50: LR}),  # no schedule section: constant
    # continuous exponential decay: lr·rate^(step/decay_steps)
    ({"name": "exponential", "decay_rate": 0.5, "decay_steps": 10}, 7, 100,
     {0: LR, 5: LR * 0.5**0.5, 10: LR * 0.5, 15: LR * 0.5**1.5, 30: LR * 0.125}),
    # staircase: the exponent floored
    ({"name": "exponential", "decay_rate": 0.5, "decay_steps": 10, "staircase": True}, 7, 100,
     {0: LR, 9: LR, 10: LR * 0.5, 19: LR * 0.5, 20: LR * 0.25}),
    # decay_steps 'epoch' uses steps_per_epoch (60000 / 200 = 300 for the MNIST MLP)
    ({"name": "exponential", "decay_rate": 0.99, "decay_steps": "epoch", "staircase": True}, 300, 30000,
     {0: LR, 299: LR, 300: LR * 0.99, 599: LR * 0.99, 600: LR * 0.99**2, 29999: LR * 0.99**99}),
    ({"name": "exponential", "decay_rate": 0.99, "decay_steps": "epoch"}, 300, 30000,
     {150: LR * 0.99**0.5, 450: LR * 0.99**1.5}),
    # a fractional epoch (60000 / 128 = 468.75 steps): step 468 is still epoch 0, 469 is not
    ({"name": "exponential", "decay_rate": 0.5, "decay_steps": "epoch", "staircase": True}, 468.75, 5000,
     {468: LR, 469: LR * 0.5, 937: LR * 0.5, 938: LR * 0.25}),
    ({"name": "exponential", "decay_rate": 0.5, "decay_steps": "2 epochs", "staircase": True}, 10, 100,
     {19: LR, 20: LR * 0.5, 40: LR * 0.25}),
    # with a floor m: m + (lr - m)·rate^(step/decay_steps); rate 1/e over 2000 steps is the
    # tutorial's m + (lr - m)·exp(-step/2000) (mnist_deep_dropout.yaml)
    ({"name": "exponential", "decay_rate": math.exp(-1), "decay_steps": 2000, "min_learning_rate": 0.004},
     300, 10000, {0: LR, 2000: 0.004 + 0.096 / math.e, 3000: 0.004 + 0.096 * math.exp(-1.5),
                  10000: 0.004 + 0.096 * math.exp(-5), 10**6: 0.004}),
    ({"name": "exponential", "decay_rate": 0.5, "decay_steps": 10, "staircase": True,
      "min_learning_rate": 0.02}, 7, 100, {9: LR, 10: 0.02 + 0.08 * 0.5, 25: 0.02 + 0.08 * 0.25}),
    ({"name": "exponential", "decay_rate": 0.5, "min_learning_rate": LR}, 7, 100, {0: LR, 70: LR}),
    # piecewise constant: the boundary itself still uses the earlier value (TF: step <= boundary)
    ({"name": "piecewise_constant", "boundaries": [10, 20], "values": [1.0, 0.5, 0.1]}, 5, 100,
     {0: 1.0, 9: 1.0, 10: 1.0, 11: 0.5, 20: 0.5, 21: 0.1, 1000: 0.1}),
    # cosine decay to alpha·lr over decay_steps, then flat
    ({"name": "cosine", "decay_steps": 100, "alpha": 0.1}, 5, 1000,
     {0: LR, 25: LR * (0.9 * 0.5 * (1 + math.cos(math.pi / 4)) + 0.1), 50: LR * 0.55,
      100: LR * 0.1, 500: LR * 0.1}),
    ({"name": "cosine"}, 5, 200, {0: LR, 100: LR * 0.5, 200: 0.0}),  # default: the whole run
    ({"name": "cosine", "decay_steps": "epoch"}, 40, 200, {20: LR * 0.5, 40: 0.0}),
    # linear ramp from lr to lr·end_factor
    ({"name": "linear", "end_factor": 0.1, "decay_steps": 10}, 5, 100,
     {0: LR, 5: LR * 0.55, 10: LR * 0.1, 50: LR * 0.1}),
    ({"name": "linear"}, 5, 40, {0: LR, 10: LR * 0.75, 40: 0.0}),
    # warm-up: update k < warmup_steps uses schedule(k)·(k+1)/warmup_steps
    ({"name": "constant", "warmup_steps": 4}, 5, 100, {0: LR / 4, 1: LR / 2, 3: LR, 4: LR, 50: LR}),
    ({"name": "exponential", "decay_rate": 0.5, "decay_steps": 2, "warmup_steps": 3}, 5, 100,
     {0: LR / 3, 1: LR * 0.5**0.5 * 2 / 3, 2: LR * 0.5, 4: LR * 0.25}),
    ({"name": "piecewise_constant", "boundaries": [5], "values": [0.2, 0.02], "warmup_steps": 2}, 5, 100,
     {0: 0.1, 1: 0.2, 5: 0.2, 6: 0.02}),
]


def test_every_schedule_has_value_cases():
    covered = {section["name"] for section, *_ in VALUE_CASES if section}
    assert set(SCHEDULES.names()) <= covered


@pytest.mark.parametrize("section,steps_per_epoch,total,expected", VALUE_CASES,
                         ids=[f"{i}-{(c[0] or {}).get('name', 'absent')}" for i, c in enumerate(VALUE_CASES)])
def test_values_at_chosen_steps(section, steps_per_epoch, total, expected):
    schedule = build_schedule(dict(section) if section else None, LR, steps_per_epoch, total)
    for step, value in expected.items():
        assert schedule(step) == pytest.approx(value, rel=1e-12, abs=1e-15), f"step {step}"


def test_build_does_not_consume_the_section():
    section = {"name": "constant", "warmup_steps": 3}
    build_schedule(section, LR, 10, 100)
    assert section == {"name": "constant", "warmup_steps": 3}


INVALID = [
    ({"name": "exponentail"}, "did you mean 'exponential'"),
    ({"name": "exponential", "decay_rat": 0.9}, "did you mean 'decay_rate'"),
    ({"name": "exponential", "decay_rate": 0.0}, "decay_rate"),
    ({"name": "exponential", "decay_rate": 1.5}, "decay_rate"),
    ({"name": "exponential", "decay_steps": 0}, "decay_steps"),
    ({"name": "exponential", "decay_steps": -10}, "decay_steps"),
    ({"name": "exponential", "decay_steps": "fortnight"}, "decay_steps"),
    ({"name": "exponential", "decay_steps": "0 epochs"}, "decay_steps"),
    ({"name": "exponential", "decay_steps": "-2 epochs"}, "decay_steps"),
    ({"name": "exponential", "decay_steps": "nan epochs"}, "decay_steps"),
    ({"name": "exponential", "staircase": "yes"}, "staircase"),
    ({"name": "exponential", "min_learning_rate": -0.01}, "min_learning_rate: must be >= 0"),
    ({"name": "exponential", "min_learning_rate": 0.2},
     "min_learning_rate: 0.2 is above the optimizer's learning_rate 0.1"),
    ({"name": "piecewise_constant", "boundaries": [10], "values": [0.1]}, "one more"),
    ({"name": "piecewise_constant", "boundaries": [20, 10], "values": [0.1, 0.2, 0.3]}, "increasing"),
    ({"name": "piecewise_constant", "boundaries": [10, 10], "values": [0.1, 0.2, 0.3]}, "increasing"),
    ({"name": "piecewise_constant", "boundaries": [10], "values": [0.1, 0.0]}, "values"),
    ({"name": "piecewise_constant", "boundaries": [10.5], "values": [0.1, 0.2]}, "boundaries"),
    ({"name": "piecewise_constant", "values": [0.1]}, "boundaries"),
    ({"name": "cosine", "alpha": 1.5}, "alpha"),
    ({"name": "cosine", "alpha": -0.1}, "alpha"),
    ({"name": "cosine", "decay_steps": "inf epochs"}, "decay_steps"),
    ({"name": "linear", "end_factor": -1}, "end_factor"),
    ({"name": "linear", "decay_steps": 0}, "decay_steps"),
    ({"name": "constant", "warmup_steps": -1}, "warmup_steps"),
    ({"name": "constant", "warmup_steps": 2.5}, "warmup_steps"),
    ({"name": "constant", "warmup_steps": "ten"}, "warmup_steps"),
]


@pytest.mark.parametrize("section,message", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_options_raise_config_error(section, message):
    with pytest.raises(ConfigError, match=message):
        build_schedule(dict(section), LR, 10, 100)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_unknown_option_rejected_for_every_schedule(name):
    section = next(dict(s) for s, *_ in VALUE_CASES if s and s["name"] == name)
    section["no_such_option"] = 1
    with pytest.raises(ConfigError, match="no_such_option"):
        build_schedule(section, LR, 10, 100)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_learning_rate_is_finite_and_positive_or_zero_everywhere(name):
    section = next(dict(s) for s, *_ in VALUE_CASES if s and s["name"] == name)
    schedule = build_schedule(section, LR, 7.5, 300)
    for step in range(0, 400, 7):
        value = schedule(step)
        assert math.isfinite(value) and value >= 0, (step, value)


def test_exponential_without_a_floor_is_tf1s_expression_bit_for_bit():
    """min_learning_rate 0 (the default) keeps lr · rate^(step/decay_steps) exactly, so
    every existing config's learning rates keep their bits."""
    schedule = build_schedule({"name": "exponential", "decay_rate": 0.99, "decay_steps": 300}, LR, 300, 3000)
    for step in (0, 1, 299, 300, 1234, 2999):
        assert schedule(step) == LR * 0.99 ** (step / 300)


@pytest.mark.parametrize("name, formula", [
    # mnist_2.1: 0.0001 + tf.train.exponential_decay(0.003, step, 2000, 1/e)
    ("mnist_deep_decay", lambda step: 0.0001 + 0.003 * math.exp(-step / 2000)),
    # mnist_2.2: min + (max - min) · exp(-i / decay_speed)
    ("mnist_deep_dropout", lambda step: 0.0001 + (0.003 - 0.0001) * math.exp(-step / 2000)),
])
def test_tutorial_ladder_learning_rates(name, formula):
    from pathlib import Path

    from gdtrain.config.loading import load

    config = load(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    schedule = build_schedule(config["schedule"], config["optimizer"]["learning_rate"], 600, 10000)
    for step in (0, 1, 1000, 2000, 5000, 9999):
        assert schedule(step) == pytest.approx(formula(step), rel=1e-12), step


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_schedule_declares_whether_it_spans_the_run(name):
    """The `spans_run` trait (what the resume drift check asks) matches what the rates do:
    built for two run lengths, the schedules that span the run differ, the others do not."""
    options = {o.name: o.default for o in SCHEDULES.options(name) if not o.required}
    if name == "piecewise_constant":
        options.update(boundaries=[5], values=[0.2, 0.1])
    spans_run = SCHEDULES.trait(name, "spans_run")
    declared = bool(spans_run and spans_run(options))
    rates = [[build_schedule({"name": name, **options}, 0.1, 10.0, total)(k) for k in range(0, 100, 7)]
             for total in (100, 200)]
    assert declared == (rates[0] != rates[1])
    if spans_run:
        assert not spans_run({**options, "decay_steps": 50})
