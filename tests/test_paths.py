"""Relative paths, one rule for every path option (data.dir, data.path, data.test_path,
model.init.from, run.dir): relative to where the path was written. In a config file, to
that file's directory; with --set or left at the default, to the working directory. The
saved config records absolute paths, and a resume compares paths by the file they name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from tool_runs import SMALL, merged, values_npz
from typer.testing import CliRunner

from gdtrain.commands.cli import app
from gdtrain.config.drift import classify_drift
from gdtrain.config.validate import resolve
from gdtrain.run.loop import RunOptions, train

REPO = Path(__file__).resolve().parents[1]


def invoke(*args, cwd: Path) -> tuple[int, str]:
    """`gdtrain ARGS` in-process from the directory `cwd`: (exit code, stdout + stderr)."""
    old = os.getcwd()
    try:
        os.chdir(cwd)
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {args}") from result.exception
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path]:
    """(a project folder holding exp.yaml beside its data, an unrelated working directory).
    The config names its files relatively: data.npz, init.npz and run.dir runs."""
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    proj.mkdir()
    elsewhere.mkdir()
    shutil.copy(values_npz(tmp_path), proj / "data.npz")
    np.savez(proj / "init.npz", W=np.full((3, 2), 0.5, np.float32), b=np.zeros(2, np.float32))
    raw = merged(SMALL, {"run": {"name": "exp", "dir": "runs"},
                         "data": {"name": "npz", "path": "data.npz"},
                         "model": {"name": "linear", "init": {"from": "init.npz"}},
                         "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2}})
    (proj / "exp.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return proj, elsewhere


def saved_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_paths_in_a_config_file_are_relative_to_its_directory(project):
    proj, elsewhere = project
    code, out = invoke("run", proj / "exp.yaml", "--quiet", cwd=elsewhere)
    assert code == 0, out
    run = proj / "runs" / "exp"  # run.dir written in the file: beside the config too
    assert (run / "checkpoints").is_dir() and not (elsewhere / "runs").exists()
    saved = saved_config(run)
    assert saved["data"]["path"] == str(proj / "data.npz")  # absolute: unambiguous
    assert saved["model"]["init"]["from"] == str(proj / "init.npz")
    assert saved["run"]["dir"] == str(proj / "runs")


def test_the_repository_configs_run_from_any_directory(tmp_path):
    """The issue's example: `cd /tmp && gdtrain check /repo/configs/mnist_softmax.yaml`
    finds data/mnist beside the configs; run.dir, left at its default, is ./runs."""
    code, out = invoke("check", REPO / "configs" / "mnist_softmax.yaml", cwd=tmp_path)
    assert code == 0, out
    resolved = yaml.safe_load(out.split("\n" + str(REPO))[0])
    assert resolved["data"]["dir"] == str(REPO / "data" / "mnist")
    assert resolved["run"]["dir"] == str(tmp_path / "runs")


def test_set_and_defaults_are_relative_to_the_working_directory(project):
    proj, elsewhere = project
    shutil.copy(proj / "data.npz", elsewhere / "mine.npz")
    code, out = invoke("check", proj / "exp.yaml", "--set", "data.path=mine.npz",
                       "--set", "model.init=zeros", "--set", "run={name: exp}", cwd=elsewhere)
    assert code == 0, out
    resolved = yaml.safe_load(out.split("\n" + str(proj))[0])
    assert resolved["data"]["path"] == str(elsewhere / "mine.npz")
    assert resolved["run"]["dir"] == str(elsewhere / "runs")  # the default, `runs`


@pytest.mark.parametrize("how, args, fragment", [
    ("file", [], "/proj/absent.npz (data.path: 'absent.npz' in {config}, relative to the config "
                 "file's directory): no such file"),
    ("--set", ["--set", "data.path=absent.npz"],
     "/elsewhere/absent.npz (data.path: 'absent.npz' from --set, relative to the working directory): "
     "no such file"),
], ids=["file", "set"])
def test_a_missing_file_says_where_it_was_looked_for_and_why(project, how, args, fragment):
    proj, elsewhere = project
    text = (proj / "exp.yaml").read_text().replace("path: data.npz", "path: absent.npz")
    (proj / "exp.yaml").write_text(text)
    code, out = invoke("check", proj / "exp.yaml", *args, cwd=elsewhere)
    assert code == 2
    assert fragment.format(config=proj / "exp.yaml") in out, out


def test_a_missing_mnist_directory_says_how_it_was_resolved_and_where_to_get_the_files(tmp_path):
    config = tmp_path / "configs" / "digits.yaml"
    config.parent.mkdir()
    config.write_text((REPO / "configs" / "mnist_softmax.yaml").read_text())
    code, out = invoke("check", config, cwd=tmp_path)
    assert code == 2
    line = " ".join(out.split())  # unwrapped
    assert (f"{tmp_path / 'data' / 'mnist'} (data.dir: '../data/mnist' in {config}, relative to the "
            "config file's directory): no such directory") in line
    assert "http://yann.lecun.com/exdb/mnist/" in line and "gzipped or not" in line
    assert "../shared" not in line
    code, out = invoke("check", config, "--set", "data={name: mnist}", cwd=tmp_path)
    assert code == 2 and "(data.dir: the default 'data/mnist', relative to the working directory)" in out


def test_a_run_resumes_from_another_working_directory(project):
    """The paths are absolute in the checkpoint, so a resume from elsewhere finds the same run
    and the same data; a path spelt differently for the same file is no config change."""
    proj, elsewhere = project
    code, out = invoke("run", proj / "exp.yaml", "--quiet", "--set", "train.steps=2", cwd=proj)
    assert code == 0, out
    code, out = invoke("run", proj / "exp.yaml", "--set", "train.steps=4",
                       "--set", "data.path=../proj/./data.npz", cwd=elsewhere)
    assert code == 0, out
    assert "resuming" in out and "cannot resume" not in out and "config change on resume: data" not in out
    # but other data is still another run
    shutil.copy(proj / "data.npz", proj / "other.npz")
    code, out = invoke("run", proj / "exp.yaml", "--set", "data.path=other.npz", cwd=proj)
    assert code == 2 and "cannot resume" in out and "data.path" in out


def test_a_run_saved_with_relative_paths_keeps_resuming(project):
    """Runs made before paths were made absolute saved them as written, relative to the
    working directory of that run: such a run resumes from there as it always did."""
    proj, _ = project
    raw = yaml.safe_load((proj / "exp.yaml").read_text())
    raw["train"]["steps"] = 2
    old = os.getcwd()
    os.chdir(proj)
    try:  # the API does not touch the paths: this run saves them relative
        train(resolve(raw), opts=RunOptions(handle_signals=False))
    finally:
        os.chdir(old)
    assert saved_config(proj / "runs" / "exp")["data"]["path"] == "data.npz"
    code, out = invoke("run", proj / "exp.yaml", cwd=proj)
    assert code == 0, out
    assert "resuming" in out and "from step 2" in out and "cannot resume" not in out


def test_drift_compares_paths_by_the_file_they_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    base = {"run": {"dir": "runs"}, "data": {"name": "mnist", "dir": "real"}, "model": {"name": "softmax"}}
    for spelling in ("real", "./real/", str(tmp_path / "real"), "link", str(tmp_path / "x" / ".." / "link")):
        new = merged(base, {"data": {"dir": spelling}})
        assert classify_drift(base, new) == ([], [], []), spelling
    refused, _, _ = classify_drift(base, merged(base, {"data": {"dir": "elsewhere"}}))
    assert [key for key, _, _ in refused] == ["data.dir"]
