"""`gdtrain plot`: learning curves, decision boundaries and confusion matrices as image files."""

from __future__ import annotations

import sys

import pytest
from tool_runs import classifier, config, run, run_dir

from gdtrain.commands import plots


def _pixels(size: tuple[float, float], panels: int = 1) -> tuple[int, int]:
    """(rows, columns) of a figure of `size` inches per panel at the module's DPI."""
    return round(size[1] * plots.DPI), round(size[0] * panels * plots.DPI)


@pytest.fixture
def two_runs(tmp_path):
    """A 3-class classifier and a circle run (0/1 targets, MSE), both with two features."""
    a = classifier(tmp_path, "blobs", schedule={"name": "exponential", "decay_rate": 0.5, "decay_steps": 10})
    b = config(tmp_path, "circle", data={"name": "circle", "samples": 80},
               model={"name": "mlp", "hidden": 6}, optimizer={"name": "adam", "learning_rate": 0.05},
               train={"steps": 40, "log_every": 4, "eval_every": 20, "eval_split": "train"})
    run(a)
    run(b)
    return run_dir(a), run_dir(b)


def test_missing_matplotlib_says_how_to_install(two_runs, cli, monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    code, out, err = cli("plot", two_runs[0], "--out", tmp_path / "c.png")
    assert code == 2
    assert "pip install 'gdtrain[plot]'" in err and "Traceback" not in err
    assert not (tmp_path / "c.png").exists()


def test_curves_overlaid_png_svg_pdf(two_runs, tmp_path, cli):
    image = pytest.importorskip("matplotlib.image")
    out = tmp_path / "curves.png"
    code, text, err = cli("plot", *two_runs, "--out", out)
    assert code == 0, err
    rows, cols = _pixels(plots.CURVES_SIZE)
    assert f"({cols}x{rows} pixels)" in text
    assert image.imread(out).shape == (rows, cols, 4)
    assert not list(tmp_path.glob(".tmp-*"))
    code, _, err = cli("plot", *two_runs, "--out", tmp_path / "curves.svg")
    assert code == 0, err
    svg = (tmp_path / "curves.svg").read_text()
    assert "<svg" in svg and "blobs" in svg and "circle" in svg  # legend labels are the run names
    code, _, err = cli("plot", two_runs[0], "--out", tmp_path / "curves.pdf")
    assert code == 0, err
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")


def test_curves_read_what_the_run_logged(two_runs):
    curves = plots.read_curves(two_runs[0], "blobs")
    assert curves.train_steps == [5, 10, 15, 20, 25, 30]
    assert curves.lr == [0.5 * 0.5 ** ((s - 1) / 10) for s in curves.train_steps]  # update s used lr(s-1)
    assert (curves.metric, curves.split, curves.eval_steps) == ("accuracy", "test", [10, 20, 30])
    assert plots.read_curves(two_runs[1], "circle").metric == "accuracy"  # 0/1 targets are classes


def test_boundary_of_two_feature_runs(two_runs, tmp_path, cli):
    image = pytest.importorskip("matplotlib.image")
    out = tmp_path / "boundary.png"
    code, _, err = cli("plot", *two_runs, "--boundary", "--out", out)
    assert code == 0, err
    assert image.imread(out).shape == (*_pixels(plots.PANEL_SIZE, panels=2), 4)
    code, _, err = cli("plot", two_runs[1], "--boundary", "--weights", "raw", "--out", out)
    assert code == 0, err
    assert image.imread(out).shape == (*_pixels(plots.PANEL_SIZE), 4)


def test_boundary_refuses_other_datasets(tmp_path, cli):
    pytest.importorskip("matplotlib")
    regression = config(tmp_path, "regression")  # two features, real-valued targets
    one_feature = config(tmp_path, "one", data={"name": "two_gaussians", "samples_per_class": 10},
                         loss={"name": "sigmoid_cross_entropy"})
    run(regression)
    run(one_feature)
    code, _, err = cli("plot", run_dir(regression), "--boundary", "--out", tmp_path / "b.png")
    assert code == 2 and "real-valued targets" in err
    code, _, err = cli("plot", run_dir(one_feature), "--boundary", "--out", tmp_path / "b.png")
    assert code == 2 and "1 feature;" in err and "two-feature datasets only" in err
    assert not (tmp_path / "b.png").exists()


def test_confusion_heat_map(two_runs, tmp_path, cli):
    image = pytest.importorskip("matplotlib.image")
    out = tmp_path / "confusion.png"
    code, _, err = cli("plot", two_runs[0], "--confusion", "--split", "train", "--out", out)
    assert code == 0, err
    assert image.imread(out).shape == (*_pixels(plots.PANEL_SIZE), 4)
    regression = config(tmp_path, "regression")
    run(regression)
    code, _, err = cli("plot", run_dir(regression), "--confusion", "--out", out)
    assert code == 2 and "no classes" in err


def test_bad_arguments(two_runs, tmp_path, cli):
    pytest.importorskip("matplotlib")
    code, _, err = cli("plot", two_runs[0], "--out", tmp_path / "c.jpg")
    assert code == 2 and ".png, .svg, .pdf" in err
    code, _, err = cli("plot", two_runs[0], "--boundary", "--confusion")
    assert code == 2 and "give one" in err
    code, _, err = cli("plot", tmp_path / "nothing", "--out", tmp_path / "c.png")
    assert code == 2 and "no such run directory" in err
