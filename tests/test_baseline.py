"""Today's numbers stay today's: every config of configs/ trains to the very bits it did
when the fixtures were written (tests/fixtures/make_baseline.py, code of f5a46fb), and a
checkpoint written by that code resumes to the uninterrupted run's final bits."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from resume_helpers import QUIET

from gdtrain.config.validate import resolve
from gdtrain.core.train import Trainer
from gdtrain.data import load_dataset
from gdtrain.run.checkpoint import array_digest
from gdtrain.run.hooks import Reporter
from gdtrain.run.loop import train

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BASELINE = json.loads((FIXTURES / "baseline.json").read_text())


def _digests(trainer) -> dict[str, str]:
    return {k: array_digest(v) for k, v in sorted(trainer.state_arrays().items())}


@pytest.mark.parametrize("name", sorted(BASELINE["configs"]))
def test_config_trains_to_the_recorded_bits(name):
    case = BASELINE["configs"][name]
    raw = copy.deepcopy(case["raw"])
    raw["train"].update(steps=case["steps"], epochs=None)
    if raw["data"]["name"] == "mnist":
        raw["data"]["dir"] = str(REPO / "data" / "mnist")
    config = resolve(raw, name)
    trainer = Trainer(config, load_dataset(config["data"], config["run"]["dtype"]))
    for _ in range(case["steps"]):
        trainer.step()
    assert _digests(trainer) == case["digests"]


@pytest.mark.parametrize("name", sorted(BASELINE["old_runs"]))
def test_old_checkpoint_resumes_to_the_uninterrupted_bits(tmp_path, name):
    case = BASELINE["old_runs"][name]
    shutil.copytree(FIXTURES / "old_runs" / name, tmp_path / name)
    raw = copy.deepcopy(case["raw"])
    raw["run"]["dir"] = str(tmp_path)
    summary = train(resolve(raw), Reporter(), QUIET)
    assert summary["resumed_from"] == case["cut"]
    assert _digests(summary["trainer"]) == case["final_digests"]
