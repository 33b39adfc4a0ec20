"""Shared fixtures: the CLI in-process, and small configs written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gdtrain.cli import app

REPO = Path(__file__).resolve().parents[1]

# A small generator-backed config: fast, real-valued targets, every section plain.
SMALL_CONFIG = {
    "run": {"name": "small", "seed": 0},
    "data": {"name": "linear_sum", "samples": 32},
    "model": {"name": "linear"},
    "loss": {"name": "mse", "reduction": "mean"},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "train": {"batch_size": 8, "steps": 20, "log_every": 0},
}


def _merge(base: dict, changes: dict) -> dict:
    """Sections merged key by key, except that a component given a new name starts afresh
    (the options of sgd mean nothing to adam)."""
    out = dict(base)
    for key, value in changes.items():
        old = out.get(key)
        both = isinstance(old, dict) and isinstance(value, dict)
        if both and value.get("name", old.get("name")) == old.get("name"):
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


@pytest.fixture
def cli():
    """Run `gdtrain ARGS...` in-process: returns (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [str(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a traceback is a bug: let pytest show it
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture
def write_config(tmp_path):
    """write_config(changes=None, base=SMALL_CONFIG, name='config.yaml') -> path.

    Sections in `changes` are merged into `base` key by key (None removes a section);
    run.dir always points inside tmp_path so that nothing lands in the repo's runs/.
    """

    def write(changes: dict | None = None, base: dict | None = None, name: str = "config.yaml") -> Path:
        config = _merge(base if base is not None else SMALL_CONFIG, changes or {})
        config = {k: v for k, v in config.items() if v is not None}
        config["run"] = {**config.get("run", {}), "dir": str(tmp_path / "runs")}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture
def make_trainer(write_config):
    """make_trainer(changes=None, base=SMALL_CONFIG) -> Trainer built from the resolved config."""
    from gdtrain.config import load
    from gdtrain.data import load_dataset
    from gdtrain.train import Trainer

    def make(changes: dict | None = None, base: dict | None = None):
        config = load(write_config(changes, base, name="trainer.yaml"))
        return Trainer(config, load_dataset(config["data"], config["run"]["dtype"]))

    return make
