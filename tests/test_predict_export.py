"""`gdtrain predict` and `gdtrain export`: new inputs in three formats, weights that round-trip."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
from tool_runs import classifier, config, run, run_dir, write_yaml

from gdtrain.config.validate import resolve
from gdtrain.core.train import Trainer
from gdtrain.data import load_dataset
from gdtrain.run.inspect_run import load_trainer
from gdtrain.run.npz import read_npz


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _csv(text: str) -> tuple[list[str], np.ndarray]:
    header, *rows = text.strip().splitlines()
    return header.split(","), np.loadtxt(io.StringIO("\n".join(rows)), delimiter=",", ndmin=2)


@pytest.fixture
def trained(tmp_path):
    raw = classifier(tmp_path)
    run(raw)
    return raw


def test_export_writes_the_ema_weights_by_name(trained, tmp_path, cli):
    out = tmp_path / "weights.npz"
    code, text, err = cli("export", run_dir(trained), "--out", out)
    assert code == 0, err
    assert "W 2x3, b 3" in text and "ema weights of step 30" in text
    arrays = read_npz(out)
    trainer, _, _ = load_trainer(run_dir(trained))
    assert sorted(arrays) == ["W", "b"]
    for name in ("W", "b"):
        assert arrays[name].dtype == np.float32
        assert np.array_equal(arrays[name], trainer.ema[name])
        assert not np.array_equal(arrays[name], trainer.params[name])  # EMA differs from raw here
    code, _, _ = cli("export", run_dir(trained), "--out", tmp_path / "raw.npz", "--weights", "raw")
    assert code == 0
    assert np.array_equal(read_npz(tmp_path / "raw.npz")["W"], trainer.params["W"])


def test_exported_weights_round_trip_through_init_from(trained, tmp_path, cli):
    weights = tmp_path / "weights.npz"
    assert cli("export", run_dir(trained), "--out", weights)[0] == 0
    raw = classifier(tmp_path, "again", model={"name": "softmax", "init": {"from": str(weights)}},
                     train={"steps": 2})
    trainer = Trainer(resolve(raw), load_dataset(resolve(raw)["data"], "float32"), read_arrays=read_npz)
    exported = read_npz(weights)
    assert all(np.array_equal(trainer.params[k], exported[k]) for k in ("W", "b"))
    # and a run starts from them: its predictions before any update are the first run's
    np.savez(tmp_path / "in.npz", x=np.array([[0.5, -1.0], [2.0, 3.0], [-4.0, 0.0]]))
    code, first, err = cli("predict", run_dir(trained), tmp_path / "in.npz")
    assert code == 0, err
    path = write_yaml(tmp_path / "again.yaml", {**raw, "train": {**raw["train"], "steps": 1},
                                                "optimizer": {"name": "sgd", "learning_rate": 1e-30}})
    code, _, err = cli("run", path, "--quiet")
    assert code == 0, err
    code, second, err = cli("predict", run_dir(raw), tmp_path / "in.npz", "--weights", "raw")
    assert code == 0, err
    assert np.allclose(_csv(first)[1], _csv(second)[1], rtol=1e-6, atol=1e-7)


def test_predict_classes_from_npz_csv_and_idx(trained, tmp_path, cli):
    trainer, _, _ = load_trainer(run_dir(trained))
    w = {k: v.astype(np.float64) for k, v in trainer.ema.items()}
    x = np.array([[0.0, 0.0], [3.0, -2.0], [-5.0, 1.0], [1.5, 4.0]])
    expected = _softmax(x @ w["W"] + w["b"])

    np.savez(tmp_path / "in.npz", x=x)
    (tmp_path / "in.csv").write_text("f0,f1\n" + "\n".join(f"{a},{b}" for a, b in x) + "\n")
    for source in ("in.npz", "in.csv"):
        code, out, err = cli("predict", run_dir(trained), tmp_path / source)
        assert code == 0, err
        header, table = _csv(out)
        assert header == ["class", "p_0", "p_1", "p_2"]
        assert np.allclose(table[:, 1:], expected, rtol=1e-5, atol=1e-7)
        assert np.array_equal(table[:, 0], expected.argmax(axis=1))

    # IDX of unsigned bytes: scaled by 1/255, as the mnist dataset reads them
    pixels = np.array([[0, 255], [128, 3], [17, 200]], np.uint8)
    idx = struct.pack(">BBBB", 0, 0, 0x08, 2) + struct.pack(">2I", *pixels.shape) + pixels.tobytes()
    (tmp_path / "in-idx2-ubyte.gz").write_bytes(gzip.compress(idx))
    code, out, err = cli("predict", run_dir(trained), tmp_path / "in-idx2-ubyte.gz")
    assert code == 0, err
    want = _softmax((pixels / 255.0) @ w["W"] + w["b"])
    assert np.allclose(_csv(out)[1][:, 1:], want, rtol=1e-5, atol=1e-7)

    code, _, err = cli("predict", run_dir(trained), tmp_path / "in.npz", "--out", tmp_path / "p.npz")
    assert code == 0 and "4 rows of classes" in err
    saved = read_npz(tmp_path / "p.npz")
    assert np.array_equal(saved["classes"], expected.argmax(axis=1))
    assert np.allclose(saved["probabilities"], expected, rtol=1e-5)


def _idx_ubyte(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_predict_on_idx_bytes_matches_evaluation_on_the_dataset_bit_for_bit(tmp_path):
    """IDX bytes given to predict become the very float32 features the mnist dataset gives
    the same images, so the outputs are those of evaluation, bit for bit."""
    from gdtrain.commands.predict import predict, read_inputs
    from gdtrain.core.evaluate import outputs

    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (8, 16, 16)).astype(np.uint8)
    test = np.stack([np.arange(256).reshape(16, 16), rng.integers(0, 256, (16, 16))]).astype(np.uint8)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem, arr in (("train-images-idx3-ubyte", train), ("train-labels-idx1-ubyte", np.arange(8) % 10),
                      ("t10k-images-idx3-ubyte", test), ("t10k-labels-idx1-ubyte", np.array([3, 7]))):
        _idx_ubyte(folder / stem, arr)
    raw = config(tmp_path, "pixels", data={"name": "mnist", "dir": str(folder)},
                 model={"name": "softmax"}, loss={"name": "cross_entropy"},
                 train={"batch_size": 4, "steps": 3})
    run(raw)
    images = tmp_path / "images-idx3-ubyte"
    _idx_ubyte(images, test)  # every byte value 0..255 among them

    trainer, _, _ = load_trainer(run_dir(raw))
    features = read_inputs(images, trainer.dataset.input_dim, trainer.dtype)
    want = trainer.dataset.test.x
    assert features.dtype == want.dtype == np.float32
    assert features.tobytes() == want.tobytes()

    result = predict(run_dir(raw), images)
    out = outputs(trainer.model, trainer.eval_params(result["weights"]), want)
    assert result["probabilities"].tobytes() == trainer.loss.predict(out).astype(np.float64).tobytes()
    assert np.array_equal(result["classes"], trainer.loss.classify(out))


def test_predict_values_of_a_regression(tmp_path, cli):
    raw = config(tmp_path)
    run(raw)
    trainer, _, _ = load_trainer(run_dir(raw))
    x = np.array([[0.1, 0.2], [0.9, 0.4]])
    np.savez(tmp_path / "in.npz", x=x)
    code, _, err = cli("predict", run_dir(raw), tmp_path / "in.npz", "--out", tmp_path / "p.csv")
    assert code == 0, err
    header, table = _csv((tmp_path / "p.csv").read_text())
    assert header == ["y_0"]
    p = {k: v.astype(np.float64) for k, v in trainer.params.items()}
    assert np.allclose(table[:, 0], (x @ p["W"] + p["b"])[:, 0], rtol=1e-6)


def test_inputs_that_do_not_fit_are_refused(trained, tmp_path, cli):
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 5)))
    code, _, err = cli("predict", run_dir(trained), tmp_path / "wide.npz")
    assert code == 2 and "5 features per row, but the model takes 2" in err
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    code, _, err = cli("predict", run_dir(trained), tmp_path / "ragged.csv")
    assert code == 2 and "ragged.csv:2: 1 columns, expected 2" in err
    (tmp_path / "nan.csv").write_text("1,2\nnan,3\n")
    code, _, err = cli("predict", run_dir(trained), tmp_path / "nan.csv")
    assert code == 2 and "row 2, feature 1" in err
    (tmp_path / "junk.idx").write_bytes(b"not idx at all")
    code, _, err = cli("predict", run_dir(trained), tmp_path / "junk.idx")
    assert code == 2 and "junk.idx" in err
    code, _, err = cli("predict", run_dir(trained), tmp_path / "missing.npz")
    assert code == 2 and "no such file" in err
    code, _, err = cli("export", run_dir(trained), "--out", tmp_path / "w.txt")
    assert code == 2 and ".npz" in err
    code, _, err = cli("predict", run_dir(trained), tmp_path / "wide.npz", "--weights", "best")
    assert code == 2 and "--weights" in err


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_a_one_output_sigmoid_names_its_column_p_1_in_csv_and_npz(tmp_path, cli):
    """two_gaussians: one 0/1 target through a sigmoid. The probability written is that of
    label 1, so its column is p_1 (a p_0 column would read as class 0's); the npz holds it
    as `p_1`, with no `probabilities` array whose column 0 would mislead the same way."""
    raw = config(tmp_path, "gauss", data={"name": "two_gaussians"}, loss={"name": "sigmoid_cross_entropy"},
                 optimizer={"learning_rate": 0.5}, train={"batch_size": 10, "steps": 40})
    run(raw)
    trainer, _, _ = load_trainer(run_dir(raw))
    p = {k: v.astype(np.float64) for k, v in trainer.params.items()}
    x = np.array([[-3.0], [-0.5], [1.0], [4.0]])
    want = _sigmoid(x @ p["W"] + p["b"])[:, 0]
    assert want.min() < 0.5 < want.max()  # both classes among the rows
    np.savez(tmp_path / "in.npz", x=x)

    code, out, err = cli("predict", run_dir(raw), tmp_path / "in.npz")
    assert code == 0, err
    header, table = _csv(out)
    assert header == ["class", "p_1"]
    assert np.allclose(table[:, 1], want, rtol=1e-6)
    assert np.array_equal(table[:, 0], want > 0.5)

    code, _, err = cli("predict", run_dir(raw), tmp_path / "in.npz", "--out", tmp_path / "p.npz")
    assert code == 0, err
    saved = read_npz(tmp_path / "p.npz")
    assert sorted(saved) == ["classes", "p_1"]
    assert saved["p_1"].shape == (4,)
    assert np.allclose(saved["p_1"], want, rtol=1e-6)
    assert np.array_equal(saved["classes"], want > 0.5)


def test_classes_through_sigmoids_keep_a_column_per_class(trained, tmp_path, cli):
    """Class labels through sigmoid cross-entropy (one-hot targets): p_0..p_2, one per class."""
    raw = classifier(tmp_path, "sig", loss={"name": "sigmoid_cross_entropy"})
    run(raw)
    trainer, _, _ = load_trainer(run_dir(raw))
    w = {k: v.astype(np.float64) for k, v in trainer.ema.items()}
    x = np.array([[0.0, 0.0], [3.0, -2.0]])
    np.savez(tmp_path / "in.npz", x=x)
    code, out, err = cli("predict", run_dir(raw), tmp_path / "in.npz")
    assert code == 0, err
    header, table = _csv(out)
    assert header == ["class", "p_0", "p_1", "p_2"]
    assert np.allclose(table[:, 1:], _sigmoid(x @ w["W"] + w["b"]), rtol=1e-5)
    code, _, err = cli("predict", run_dir(raw), tmp_path / "in.npz", "--out", tmp_path / "p.npz")
    assert code == 0, err
    assert sorted(read_npz(tmp_path / "p.npz")) == ["classes", "probabilities"]


@pytest.fixture
def pixel_run(tmp_path):
    """A softmax model trained on a small fake MNIST (pixel bytes, decoded ×1/255), and
    its test images as bytes."""
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (8, 4, 4)).astype(np.uint8)
    test = rng.integers(0, 256, (16, 4, 4)).astype(np.uint8)
    test[0] = (np.arange(16) * 17).reshape(4, 4)  # 0 and 255 among them
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem, arr in (("train-images-idx3-ubyte", train), ("train-labels-idx1-ubyte", np.arange(8) % 10),
                      ("t10k-images-idx3-ubyte", test), ("t10k-labels-idx1-ubyte", np.arange(16) % 10)):
        _idx_ubyte(folder / stem, arr)
    raw = config(tmp_path, "pixels", data={"name": "mnist", "dir": str(folder)},
                 model={"name": "softmax"}, loss={"name": "cross_entropy"},
                 train={"batch_size": 4, "steps": 3})
    run(raw)
    return run_dir(raw), test.reshape(16, -1)


def test_pixel_bytes_in_npz_or_csv_are_scaled_as_in_training(pixel_run, tmp_path, cli):
    """A model trained on MNIST pixels (bytes ×1/255, as its dataset records): bytes given in
    an npz (uint8 or any integer), as whole numbers in a CSV, or already scaled to [0, 1],
    all become the very features of training, bit for bit, as IDX bytes do."""
    from gdtrain.commands.predict import predict, read_inputs

    run_path, pixels = pixel_run
    trainer, _, _ = load_trainer(run_path)
    want = trainer.dataset.test.x  # float32 features of the same images, as evaluation uses
    np.savez(tmp_path / "u8.npz", x=pixels.reshape(16, 4, 4))
    np.savez(tmp_path / "i64.npz", x=pixels.astype(np.int64))
    np.savez(tmp_path / "f64.npz", x=pixels.astype(np.float64))
    np.savez(tmp_path / "scaled.npz", x=want.astype(np.float64))
    (tmp_path / "bytes.csv").write_text("\n".join(",".join(map(str, row)) for row in pixels) + "\n")
    for name in ("u8.npz", "i64.npz", "f64.npz", "scaled.npz", "bytes.csv"):
        features = read_inputs(tmp_path / name, 16, trainer.dtype, trainer.dataset.train)
        assert features.dtype == np.float32
        assert features.tobytes() == want.tobytes(), name
    idx = predict(run_path, _write_idx(tmp_path / "images-idx3-ubyte", pixels.reshape(16, 4, 4)))
    for name in ("u8.npz", "bytes.csv"):
        result = predict(run_path, tmp_path / name)
        assert result["probabilities"].tobytes() == idx["probabilities"].tobytes()
        assert not np.isin(result["probabilities"], (0.0, 1.0)).all()  # not unscaled bytes' 0/1

    code, out, err = cli("predict", run_path, tmp_path / "u8.npz")
    assert code == 0, err
    assert np.allclose(_csv(out)[1][:, 1:], idx["probabilities"], rtol=1e-6)


def _write_idx(path, arr):
    _idx_ubyte(path, arr)
    return path


@pytest.mark.parametrize("values, fragment", [
    (np.full((1, 16), 127.5), "row 1, feature 1 is 127.5;"),
    (np.concatenate([np.zeros(15), [-3.0]])[None], "row 1, feature 16 is -3;"),
    (np.array([[0.5] + [200.0] * 15]), "row 1, feature 1 is 0.5 among whole pixel values;"),
    (np.array([[0] * 15 + [300]], np.int64), "row 1, feature 16 is 300;"),
], ids=["fraction-above-1", "negative", "mixed-scales", "integer-above-255"])
def test_inputs_on_neither_scale_are_refused_saying_which_scale(pixel_run, tmp_path, cli, values, fragment):
    run_path, _ = pixel_run
    np.savez(tmp_path / "bad.npz", x=values)
    code, out, err = cli("predict", run_path, tmp_path / "bad.npz")
    assert code == 2 and out == ""
    assert fragment in err
    assert "trained on features in [0, 1] (pixel values 0 to 255 times 1/255)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_model_trained_on_plain_numbers_takes_npz_integers_as_they_are(trained, tmp_path):
    """Features that were never codes (the blobs' floats) get no scaling: 200 is 200."""
    from gdtrain.commands.predict import read_inputs

    trainer, _, _ = load_trainer(run_dir(trained))
    np.savez(tmp_path / "ints.npz", x=np.array([[200, 3], [-7, 0]], np.int64))
    x = read_inputs(tmp_path / "ints.npz", 2, trainer.dtype, trainer.dataset.train)
    assert np.array_equal(x, np.array([[200, 3], [-7, 0]], np.float32))
