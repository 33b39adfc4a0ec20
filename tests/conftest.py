"""Shared fixtures: the CLI in-process, and small configs written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tool_runs import SMALL, merged
from typer.testing import CliRunner

from gdtrain.commands.cli import app

REPO = Path(__file__).resolve().parents[1]


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
    """write_config(changes=None, base=SMALL, name='config.yaml') -> path.

    `changes` are merged into `base` (tool_runs.merged: None removes a key, a component
    given another name starts afresh); run.dir always points inside tmp_path so that
    nothing lands in the repo's runs/.
    """

    def write(changes: dict | None = None, base: dict | None = None, name: str = "config.yaml") -> Path:
        config = merged(base if base is not None else SMALL, changes or {})
        config["run"] = {**config.get("run", {}), "dir": str(tmp_path / "runs")}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture
def make_trainer(write_config):
    """make_trainer(changes=None, base=SMALL) -> Trainer built from the resolved config."""
    from gdtrain.config.loading import load
    from gdtrain.core.train import Trainer
    from gdtrain.data import load_dataset
    from gdtrain.run.npz import read_npz

    def make(changes: dict | None = None, base: dict | None = None):
        config = load(write_config(changes, base, name="trainer.yaml"))
        return Trainer(config, load_dataset(config["data"], config["run"]["dtype"]), read_arrays=read_npz)

    return make
