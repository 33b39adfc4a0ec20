"""Random damage to valid configs never makes `gdtrain check` crash.

Hypothesis takes a few valid configs that between them use every section, and
mutates them: deletes keys, replaces values with other types, strings, huge or
non-finite numbers and nested junk, adds unknown keys, renames keys, and also feeds
random `--set` overrides. Whatever comes out, `gdtrain check` (which also loads the
data and builds the model) must answer with exit code 0 or 2 and never a traceback.

Sizes are drawn small (up to 100) or beyond 2**40: a dataset or layer of 2**40
elements fails to allocate at once, while one of 10**9 is a valid request that
really allocates gigabytes, which a test should not do.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tool_runs import SMALL, merged
from typer.testing import CliRunner

from gdtrain.commands.cli import app

VALID = [
    merged(SMALL, {"run": {"name": "a"}, "train": {"steps": 5}}),
    {
        "run": {"name": "b", "seed": 1, "dtype": "float64"},
        "data": {"name": "circle", "samples": 40, "seed": 2},
        "model": {"name": "mlp", "hidden": 4, "activation": "tanh",
                  "init": {"W1": {"name": "truncated_normal", "stddev": 0.1},
                           "b1": {"name": "constant", "value": 0.1}, "W2": "glorot_uniform", "b2": "zeros"}},
        "loss": {"name": "mse"},
        "optimizer": {"name": "momentum", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
        "schedule": {"name": "exponential", "decay_rate": 0.99, "decay_steps": "epoch", "staircase": True},
        "l2": {"scale": 1.0e-4, "params": ["W1", "W2"]},
        "ema": {"decay": 0.99, "num_updates": True},
        "train": {"batch_size": 10, "epochs": 2, "trainable": ["W*", "b2"], "eval_every": 2,
                  "checkpoint_every": 3, "keep_checkpoints": 2},
    },
    {
        "run": {"name": "c"},
        "data": {"name": "two_gaussians", "samples_per_class": 20, "test_fraction": 0.25},
        "model": {"name": "linear", "init": {"W": {"name": "constant", "value": 1.0}}},
        "loss": {"name": "sigmoid_cross_entropy", "reduction": "sum"},
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "schedule": {"name": "cosine", "decay_steps": "2 epochs", "alpha": 0.1, "warmup_steps": 3},
        "train": {"batch_size": 1, "steps": 20, "shuffle": False, "trainable": ["b"]},
    },
]

# Names and words that configs use, so that mutations also reach deep into valid territory.
WORDS = ["linear", "mlp", "softmax", "mse", "cross_entropy", "sigmoid_cross_entropy", "sgd", "adam",
         "momentum", "rmsprop", "adagrad", "constant", "exponential", "cosine", "piecewise_constant",
         "mnist", "npz", "csv", "circle", "zeros", "normal", "epoch", "3 epochs", "*", "W", "b1", "name",
         "from", "float32", "float16", "mean", "sum", "relu", "../x", "/abs", ""]

HUGE = [2**40, 2**62, 2**63, -(2**63) - 1, 10**30, 10**400]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 100),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e308, 0.5, 1.5]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(WORDS),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
                 st.integers(-2, 3))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(keys, inner, max_size=3)),
                    max_leaves=6)


def paths(node, prefix=()):
    """Every path to a value inside nested dicts and lists."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


def containers(node, prefix=()):
    if isinstance(node, dict):
        yield prefix
        for k, v in node.items():
            yield from containers(v, prefix + (k,))


def at(node, path):
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated(draw):
    config = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "replace", "replace", "add", "rename"]))
        if op == "add":
            where = draw(st.sampled_from(list(containers(config))))
            at(config, where)[draw(keys)] = draw(junk)
            continue
        candidates = list(paths(config))
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent, last = at(config, path[:-1]), path[-1]
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(junk)
        elif isinstance(parent, dict):  # rename: a typo of the key
            key = str(last)
            typo = draw(st.sampled_from([key[:-1], key + "s", key[1:] + key[:1], key.upper()]))
            parent[typo] = parent.pop(last)
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """An empty working directory: relative data paths (data/mnist) find nothing there."""
    return tmp_path_factory.mktemp("fuzz")


def check(workdir: Path, config_text: str, *overrides: str) -> tuple[int, str]:
    path = workdir / "config.yaml"
    path.write_text(config_text, encoding="utf-8")
    args = ["check", str(path)] + [a for o in overrides for a in ("--set", o)]
    old = os.getcwd()
    os.chdir(workdir)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {config_text!r} {overrides}") from result.exception
    return result.exit_code, result.stdout + result.stderr


def dump(config) -> str:
    config = copy.deepcopy(config)
    if isinstance(config, dict) and isinstance(config.get("run"), dict):
        config["run"]["dir"] = "runs"  # relative to the empty working directory
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


# GDTRAIN_FUZZ_EXAMPLES=5000 for a longer hunt than the suite's default
FUZZ = settings(max_examples=int(os.environ.get("GDTRAIN_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("config", VALID, ids=["linear", "mlp", "sigmoid"])
def test_the_valid_configs_pass(workdir, config):
    code, out = check(workdir, dump(config))
    assert code == 0, out


@FUZZ
@given(config=mutated())
def test_mutated_configs_never_crash(workdir, config):
    code, out = check(workdir, dump(config))
    assert code in (0, 2), out
    assert "Traceback" not in out
    if code == 2:
        assert "gdtrain: error:" in out


@FUZZ
@given(base=st.sampled_from(VALID),
       key=st.one_of(st.sampled_from(["optimizer.learning_rate", "train.batch_size", "model.hidden",
                                      "schedule.decay_steps", "model.init", "train.trainable", "run.name",
                                      "data.samples", "l2.params", "ema.decay", "train", "model.name"]),
                     st.text(st.characters(blacklist_categories=("Cs",)), max_size=15)),
       value=st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=15),
                       st.sampled_from(["[1, 2", "{a: 1}", ".nan", "-.inf", "1e999", "!!python/none ''",
                                        "&a [*a]", "0x1F", "1_000", "~", "'", "- 1"])),
       sep=st.sampled_from(["=", "", "=="]))
def test_random_overrides_never_crash(workdir, base, key, value, sep):
    code, out = check(workdir, dump(base), f"{key}{sep}{value}")
    assert code in (0, 2), out
    assert "Traceback" not in out


def test_whole_file_junk_never_crashes(workdir):
    """Documents that are not configs at all, each a different way."""
    for text in ["", "---\n...\n", "[]", "42", "a: b: c", "*x", "&a [*a, *a]", "!!binary AAAA", "\t- x",
                 "run: !!set {a, b}", "run: !!omap [{a: 1}]", "run: {name: &a x, dir: *a}", "? [a]: 1",
                 "x: 2001-12-14", "run: {name: 2001-12-14}", "%YAML 1.1\n---\nrun: {}", "\ufeffrun: {}"]:
        code, out = check(workdir, text)
        assert code == 2, (text, out)
        assert "Traceback" not in out
