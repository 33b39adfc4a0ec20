"""Bad input ends in one clear line and exit code 2 (3 for divergence), never a traceback,
and never costs anything already on disk.

One table of cases, each a builder that writes the bad input into tmp_path and returns
the command line; every case asserts the exit code, fragments of the message and that no
'Traceback' appears. The CLI runs in-process (typer's CliRunner) for speed; a few cases
run the installed `gdtrain` in a subprocess for the real exit codes and memory use.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from tool_runs import SMALL, merged
from typer.testing import CliRunner

from gdtrain.commands.cli import app
from gdtrain.run import checkpoint, npz

REPO = Path(__file__).resolve().parents[1]
GDTRAIN = REPO / ".venv" / "bin" / "gdtrain"

BASE = merged(SMALL, {"train": {"steps": 6, "checkpoint_every": 3}})

# The same config written by hand, so that the line numbers in messages are known.
BASE_TEXT = """\
run:       {name: small, seed: 0, dir: RUNS}
data:      {name: linear_sum, samples: 32}
model:     {name: linear}
loss:      {name: mse, reduction: mean}
optimizer: {name: sgd, learning_rate: 0.1}
train:     {batch_size: 8, steps: 6, log_every: 0, checkpoint_every: 3}
"""


def invoke(*args, cwd: Path | None = None) -> tuple[int, str]:
    """Run `gdtrain ARGS` in-process; (exit code, stdout + stderr). A Python exception
    escaping the CLI fails the test (it would have been a traceback)."""
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {args}") from result.exception
    return result.exit_code, result.stdout + result.stderr


def snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every file under a run directory, except the lock (it holds a pid)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------ file builders


def idx_bytes(arr: np.ndarray, code: int = 0x08, dims: int | None = None) -> bytes:
    dims = arr.ndim if dims is None else dims
    head = bytes([0, 0, code, dims]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(">u1").tobytes()


def write_mnist(directory: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """A valid MNIST-style directory of 4x4 images: small enough to build per test."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (directory / f"{part}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (directory / f"{part}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return directory


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (118 - len(text)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def zip_with_declared_sizes(path: Path, members: list[tuple[str, bytes, int]]) -> None:
    """A stored zip whose directory declares `size` bytes for each member, whatever it holds:
    a forgery that np.savez could never write and zipfile would happily try to read."""
    local, central = b"", b""
    for name, data, size in members:
        crc = zlib.crc32(data)
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, size, size,
                             len(name), 0) + name.encode() + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, size,
                               size, len(name), 0, 0, 0, 0, 0, offset) + name.encode()
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(local), 0)
    path.write_bytes(local + central + end)


def forge_checkpoint(good: Path, out: Path, arrays: Callable[[dict], None] | None = None,
                     meta: Callable[[dict], None] | None = None, redigest: bool = True,
                     text: Callable[[str], str] = lambda t: t, save: Callable = np.savez) -> Path:
    """A copy of a good checkpoint with its arrays, metadata or metadata text changed;
    digests are recomputed (unless redigest is False) so that only the intended fault remains."""
    data = npz.read_npz(good)
    info = json.loads(data.pop(checkpoint.META_KEY).tobytes())
    if arrays:
        arrays(data)
    if redigest:
        info["arrays"] = {k: checkpoint.array_digest(v) for k, v in data.items()}
    if meta:
        meta(info)
    blob = np.frombuffer(text(json.dumps(info)).encode(), np.uint8)  # json.dumps writes NaN as NaN
    save(out, **data, **{checkpoint.META_KEY: blob})
    return out


# ------------------------------------------------------------------ the context cases build in


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One finished small run (checkpoints at steps 3 and 6), copied by cases that need it."""
    root = tmp_path_factory.mktemp("good")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(merged(BASE, {"run": {"dir": str(root / "runs")}})))
    code, out = invoke("run", config, "--quiet")
    assert code == 0, out
    return root / "runs" / "small"


@dataclass
class Ctx:
    tmp: Path
    good_run: Path

    @property
    def runs(self) -> Path:
        return self.tmp / "runs"

    def config(self, changes: dict | None = None, name: str = "config.yaml") -> Path:
        raw = merged(BASE, {"run": {"dir": str(self.runs)}, **(changes or {})})
        path = self.tmp / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def text(self, text: str, name: str = "config.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text.replace("RUNS", str(self.runs)))
        return path

    def base_text(self, *edits: tuple[str, str]) -> Path:
        text = BASE_TEXT
        for old, new in edits:
            assert old in text
            text = text.replace(old, new)
        return self.text(text)

    def mnist(self, **changes) -> Path:
        """A config on a small fake MNIST directory (which the case may then damage)."""
        write_mnist(self.tmp / "mnist")
        return self.config(merged({"data": {"name": "mnist", "dir": str(self.tmp / "mnist")},
                                   "model": {"name": "softmax"}, "loss": {"name": "cross_entropy"}},
                                  changes))

    def npz_data(self, **arrays) -> Path:
        np.savez(self.tmp / "data.npz", **arrays)
        return self.config({"data": {"name": "npz", "path": str(self.tmp / "data.npz")}})

    def csv_data(self, text: str, **options) -> Path:
        (self.tmp / "data.csv").write_text(text)
        return self.config({"data": {"name": "csv", "path": str(self.tmp / "data.csv"), **options}})

    def good_checkpoint(self) -> Path:
        return self.good_run / "checkpoints" / checkpoint.checkpoint_name(6)

    def forged(self, **kwargs) -> Path:
        return forge_checkpoint(self.good_checkpoint(), self.tmp / "forged.npz", **kwargs)

    def run_dir_with(self, ckpt: Path) -> Path:
        """A copy of the good run whose only checkpoint is `ckpt` (named as step 6)."""
        run = self.runs / "small"
        shutil.copytree(self.good_run, run)
        for p in checkpoint.list_checkpoints(run / "checkpoints"):
            p.unlink()
        shutil.copy(ckpt, run / "checkpoints" / checkpoint.checkpoint_name(6))
        return run


IMAGES = "train-images-idx3-ubyte"


def damaged(file: str, content: Callable[[bytes], bytes]) -> Callable[[Ctx], list]:
    """A builder: a fake MNIST directory whose `file` is passed through `content`."""

    def build(ctx: Ctx) -> list:
        config = ctx.mnist()
        path = ctx.tmp / "mnist" / file
        path.write_bytes(content(path.read_bytes()))
        return ["check", config]

    return build


def billion_laughs(ctx: Ctx) -> list:
    """Nine levels of nine aliases each: 387 million items if expanded."""
    levels = "x: &a [1, 2]\n" + "".join(
        f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi", strict=True))
    data = "data:      {name: linear_sum, samples: 32}"
    text = BASE_TEXT.replace(data, levels + "data: {name: npz, path: *i}")
    return ["check", ctx.text(text)]


def labels_out_of_range(ctx: Ctx) -> list:
    config = ctx.mnist()
    path = ctx.tmp / "mnist" / "train-labels-idx1-ubyte"
    labels = np.arange(40, dtype=np.uint8) % 10
    labels[7] = 12
    path.write_bytes(idx_bytes(labels))
    return ["check", config]


def truncated_gz(ctx: Ctx) -> list:
    config = ctx.mnist()
    raw = ctx.tmp / "mnist" / "train-images-idx3-ubyte"
    whole = gzip.compress(raw.read_bytes())
    raw.unlink()
    (ctx.tmp / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    return ["check", config]


def count_mismatch(ctx: Ctx) -> list:
    config = ctx.mnist()
    (ctx.tmp / "mnist" / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.arange(39, dtype=np.uint8) % 10))
    return ["check", config]


def missing_idx(ctx: Ctx) -> list:
    config = ctx.mnist()
    (ctx.tmp / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    return ["check", config]


def latin1_config(ctx: Ctx) -> Path:
    path = ctx.tmp / "latin1.yaml"
    path.write_bytes(b"run: {name: caf\xe9}\n")
    return path


def soft_targets(ctx: Ctx, rows: list) -> list:
    """`check` of cross_entropy on float targets: `rows`, then one-hot rows up to 8 examples."""
    y = np.array(rows + [[1.0, 0.0]] * (8 - len(rows)))
    np.savez(ctx.tmp / "data.npz", x=np.zeros((8, 1)), y=y)
    return ["check", ctx.config({"data": {"name": "npz", "path": str(ctx.tmp / "data.npz")},
                                 "loss": {"name": "cross_entropy"}})]


def init_from(ctx: Ctx, **arrays) -> list:
    np.savez(ctx.tmp / "init.npz", **arrays)
    return ["check", ctx.config({"model": {"init": {"from": str(ctx.tmp / "init.npz")}}})]


def eval_forged(ctx: Ctx, **kwargs) -> list:
    return ["eval", ctx.forged(**kwargs)]


def eval_file(ctx: Ctx, name: str, write: Callable[[Path], None]) -> list:
    path = ctx.tmp / name
    write(path)
    return ["eval", path]


def pickle_renamed(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"param/W": [1.0, 2.0]}))


def object_array(path: Path) -> None:
    np.savez(path, **{"param/W": np.array([{"x": 1}], dtype=object)})


def with_extra_member(ctx: Ctx) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        shutil.copy(ctx.good_checkpoint(), path)
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("run_me.py", "print('no code runs from a checkpoint')")

    return write


def with_duplicate_member(ctx: Ctx) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        shutil.copy(ctx.good_checkpoint(), path)
        with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
            zf.writestr("param/W.npy", npy_header((2, 1)) + np.zeros(2, "<f4").tobytes())

    return write


def huge_header(path: Path) -> None:
    """A member whose header declares 2.8 GB, followed by 16 bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("param/W.npy", npy_header((700_000_000,)) + bytes(16))


def huge_header_and_sizes(path: Path) -> None:
    """The header and the zip directory both declare 2.8 GB: a consistent forgery."""
    head = npy_header((700_000_000,))
    zip_with_declared_sizes(path, [("param/W.npy", head + bytes(16), len(head) + 2_800_000_000)])


def truncated_file(ctx: Ctx) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = ctx.good_checkpoint().read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return write


def flipped_local_crc(ctx: Ctx) -> Callable[[Path], None]:
    """One bit of param/W's CRC in its local zip header (zipfile reads the directory's copy)."""
    def write(path: Path) -> None:
        blob = bytearray(ctx.good_checkpoint().read_bytes())
        with zipfile.ZipFile(ctx.good_checkpoint()) as zf:
            blob[zf.getinfo("param/W.npy").header_offset + 14] ^= 0x01
        path.write_bytes(bytes(blob))

    return write


def flipped_byte(ctx: Ctx) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        shutil.copy(ctx.good_checkpoint(), path)
        arrays = npz.read_npz(path)
        w = arrays["param/W"]
        with zipfile.ZipFile(path) as zf:
            raw = zf.read("param/W.npy")
        blob = bytearray(path.read_bytes())
        at = bytes(blob).find(raw) + len(raw) - w.nbytes  # first byte of W's data
        blob[at] ^= 0x40
        path.write_bytes(bytes(blob))

    return write


def resume_from(ctx: Ctx, ckpt_writer: Callable[[Path], None]) -> list:
    ckpt = ctx.tmp / "ckpt.npz"
    ckpt_writer(ckpt)
    ctx.run_dir_with(ckpt)
    return ["run", ctx.config({"train": {"steps": 9}}), "--quiet"]


def resume_after_feature_change(ctx: Ctx) -> list:
    rng = np.random.default_rng(0)
    path = ctx.tmp / "data.npz"
    np.savez(path, x=rng.random((32, 3)), y=rng.random((32, 1)))
    config = ctx.config({"data": {"name": "npz", "path": str(path)}})
    code, out = invoke("run", config, "--quiet")
    assert code == 0, out
    np.savez(path, x=rng.random((32, 4)), y=rng.random((32, 1)))  # one more feature
    return ["run", ctx.config({"data": {"name": "npz", "path": str(path)}, "train": {"steps": 9}}),
            "--quiet"]


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list]
    fragments: tuple[str, ...]
    code: int = 2


def C(id: str, build: Callable[[Ctx], list], *fragments: str, code: int = 2) -> Case:
    return Case(id, build, fragments, code)


def check(changes: dict) -> Callable[[Ctx], list]:
    return lambda ctx: ["check", ctx.config(changes)]


def before_train(text: str) -> Callable[[Ctx], list]:
    """BASE_TEXT with `text` inserted as line 6, before the train section."""
    return lambda ctx: ["check", ctx.base_text(("train:", f"{text}\ntrain:"))]


def check_set(*overrides: str) -> Callable[[Ctx], list]:
    return lambda ctx: ["check", ctx.base_text(), *[a for o in overrides for a in ("--set", o)]]


CASES = [
    # --- configs: unknown keys at any depth, with a suggestion and the file and line
    C("unknown-section", lambda ctx: ["check", ctx.base_text(("optimizer:", "optimzer: "))],
      "line 5: optimzer: unknown section; did you mean 'optimizer'?", "config.yaml"),
    C("unknown-option", lambda ctx: ["check", ctx.base_text(("learning_rate", "learnig_rate"))],
      "line 5: optimizer.learnig_rate: unknown option for optimizer 'sgd'; did you mean 'learning_rate'?"),
    C("unknown-option-deep", lambda ctx: ["check", ctx.base_text(
        ("model:     {name: linear}", "model:\n  name: linear\n  init:\n    W: {name: normal, stdev: 1}"))],
      "line 6: model.init.W.stdev: unknown option for initializer 'normal'; did you mean 'stddev'?"),
    C("unknown-data-option", check({"data": {"sampels": 10}}),
      "data.sampels: unknown option for dataset 'linear_sum'; did you mean 'samples'?"),
    C("option-of-another-component", check({"optimizer": {"momentum": 0.9}}),
      "optimizer.momentum: unknown option for optimizer 'sgd'", "takes: learning_rate"),
    C("init-for-missing-parameter", check({"model": {"init": {"V": "zeros"}}}),
      "model.init.V: no such parameter; the model has W, b"),
    # --- wrong types and out-of-range values
    C("type-batch-size-string", check({"train": {"batch_size": "ten"}}),
      "train.batch_size: expected an integer, got 'ten'"),
    C("type-batch-size-fraction", check({"train": {"batch_size": 2.5}}),
      "train.batch_size: expected an integer, got 2.5"),
    C("type-shuffle-yes", lambda ctx: ["check", ctx.base_text(("steps: 6", "steps: 6, shuffle: yes"))],
      "line 6: train.shuffle: expected true or false, got 'yes'"),
    C("type-base-60-steps", lambda ctx: ["check", ctx.base_text(("steps: 6", "steps: 1:30"))],
      "line 6: train.steps: expected int (>= 1) | null, got '1:30'"),
    C("type-stray-digit-group", lambda ctx: ["check", ctx.base_text(("steps: 6", "steps: 6_"))],
      "line 6: train.steps: expected int (>= 1) | null, got '6_'"),
    C("eval-split-absent", check({"train": {"eval_split": "validation"}}),
      "train.eval_split: linear_sum has no validation split (set data.validation: N"),
    C("type-section-not-mapping", check({"train": [1, 2]}), "train: expected a mapping, got a list [1, 2]"),
    # --- early stopping and keep_best
    C("early-stopping-unknown-metric",
      check({"train": {"eval_every": 2, "early_stopping": {"metric": "acuracy"}}}),
      "train.early_stopping.metric: must be one of 'loss', 'accuracy', 'mse', got 'acuracy'; "
      "did you mean 'accuracy'?"),
    C("early-stopping-unknown-mode", check({"train": {"eval_every": 2, "early_stopping": {"mode": "down"}}}),
      "train.early_stopping.mode: must be one of 'min', 'max', got 'down'"),
    C("early-stopping-negative-patience",
      check({"train": {"eval_every": 2, "early_stopping": {"patience": -1}}}),
      "train.early_stopping.patience: must be >= 0, got -1"),
    C("early-stopping-unknown-option", check({"train": {"eval_every": 2, "early_stopping": {"patients": 3}}}),
      "train.early_stopping.patients: unknown option", "did you mean 'patience'?"),
    C("early-stopping-not-a-mapping", check({"train": {"eval_every": 2, "early_stopping": True}}),
      "train.early_stopping: expected mapping | null, got true"),
    C("early-stopping-without-eval-every", lambda ctx: ["check", ctx.base_text(
        ("checkpoint_every: 3}", "checkpoint_every: 3,\n            early_stopping: {patience: 3}}"))],
      "line 7: train.early_stopping: needs train.eval_every"),
    C("early-stopping-metric-not-reported", check({"train": {"eval_every": 2,
                                                             "early_stopping": {"metric": "accuracy"}}}),
      "train.early_stopping.metric: accuracy is not reported on dataset 'linear_sum' (real-valued targets, "
      "loss mse); its evaluations report loss, mse"),
    C("keep-best-without-eval-every", check({"train": {"keep_best": True}}),
      "train.keep_best: needs train.eval_every"),
    C("best-metric-without-keep-best", check({"train": {"eval_every": 2, "best_metric": "mse"}}),
      "train.best_metric: goes with train.keep_best: true"),
    C("checkpoint-best-without-keep-best", lambda ctx: ["eval", ctx.good_run, "--checkpoint", "best"],
      "no best checkpoint (the run was not trained with train.keep_best: true); "
      "it has checkpoints of steps 3, 6 (latest 6)"),
    C("checkpoint-step-missing", lambda ctx: ["export", ctx.good_run, "--out", ctx.tmp / "w.npz",
                                              "--checkpoint", "4"],
      "no checkpoint of step 4; it has checkpoints of steps 3, 6"),
    C("batch-size-zero", check({"train": {"batch_size": 0}}), "train.batch_size: must be >= 1, got 0"),
    C("batch-size-negative", check({"train": {"batch_size": -8}}), "train.batch_size: must be >= 1, got -8"),
    C("batch-size-beyond-data", check({"train": {"batch_size": 33}}),
      "config.yaml: line 17: train.batch_size: 33 is more than the 32 training examples"),
    C("batch-size-beyond-64-bits", check({"train": {"batch_size": 10**30}}),
      "train.batch_size: must fit in 64 bits"),
    C("learning-rate-zero", check({"optimizer": {"learning_rate": 0}}),
      "optimizer.learning_rate: must be > 0, got 0"),
    C("learning-rate-negative", check({"optimizer": {"learning_rate": -0.1}}),
      "optimizer.learning_rate: must be > 0, got -0.1"),
    C("learning-rate-nan", check({"optimizer": {"learning_rate": float("nan")}}),
      "optimizer.learning_rate: must be a finite number, got nan"),
    C("learning-rate-inf", check({"optimizer": {"learning_rate": float("inf")}}),
      "optimizer.learning_rate: must be a finite number, got inf"),
    C("decay-rate-above-one", check({"schedule": {"name": "exponential", "decay_rate": 1.5}}),
      "schedule.decay_rate: must be <= 1, got 1.5"),
    C("decay-rate-zero", check({"schedule": {"name": "exponential", "decay_rate": 0}}),
      "schedule.decay_rate: must be > 0, got 0"),
    C("ema-decay-one", check({"ema": {"decay": 1.0}}), "ema.decay: must be < 1, got 1.0"),
    C("hidden-zero", check({"model": {"name": "mlp", "hidden": 0}}), "model.hidden: must be >= 1, got 0"),
    C("hidden-empty-list", check({"model": {"name": "mlp", "hidden": []}}),
      "model.hidden: must not be empty, got a list []"),
    C("hidden-list-zero-width", lambda ctx: ["check", ctx.base_text(
        ("model:     {name: linear}", "model:\n  name: mlp\n  hidden: [200, 0, 30]"))],
      "line 5: model.hidden: item 1: must be >= 1, got 0"),
    C("hidden-list-fraction", check({"model": {"name": "mlp", "hidden": [200, 2.5]}}),
      "model.hidden: item 1: expected an integer, got 2.5"),
    C("dropout-one", check({"model": {"name": "mlp", "dropout": 1}}), "model.dropout: must be < 1, got 1.0"),
    C("dropout-rates-per-layer", check({"model": {"name": "mlp", "hidden": [5, 4], "dropout": [0.2]}}),
      "model: dropout: 1 rates for 2 hidden layers; give one rate for all, or one per hidden layer"),
    C("min-learning-rate-above-lr", check({"schedule": {"name": "exponential", "min_learning_rate": 0.5}}),
      "schedule: min_learning_rate: 0.5 is above the optimizer's learning_rate 0.1"),
    C("steps-zero", check({"train": {"steps": 0}}), "train.steps: must be >= 1, got 0"),
    C("steps-and-epochs", check({"train": {"epochs": 2}}), "train: give steps or epochs, not both"),
    C("threads-zero", check({"run": {"threads": 0}}), "run.threads: must be >= 1, got 0"),
    C("threads-word", check({"run": {"threads": "all"}}),
      "run.threads: expected int (>= 1) | null, got 'all'"),
    C("dtype-float16", check({"run": {"dtype": "float16"}}),
      "run.dtype: must be one of 'float32', 'float64', got 'float16'; did you mean 'float64'?"),
    # --- names of components, with the valid ones
    C("unknown-model", check({"model": {"name": "cnn"}}),
      "model.name: unknown model 'cnn'; valid: linear, mlp, softmax"),
    C("unknown-loss", check({"loss": {"name": "hinge"}}),
      "loss.name: unknown loss 'hinge'; valid: cross_entropy, mse, sigmoid_cross_entropy"),
    C("unknown-optimizer", check({"optimizer": {"name": "adamax"}}),
      "unknown optimizer 'adamax'; valid: adagrad, adam, adamw, momentum, rmsprop, sgd; "
      "did you mean 'adam'?"),
    C("unknown-schedule", check({"schedule": {"name": "step"}}),
      "schedule.name: unknown schedule 'step'; valid:"),
    C("unknown-dataset", check({"data": {"name": "cifar"}}), "data.name: unknown dataset 'cifar'; valid:"),
    C("unknown-initializer", check({"model": {"init": "zeroes"}}),
      "unknown initializer 'zeroes'", "did you mean 'zeros'?"),
    C("component-name-not-a-string", check({"optimizer": {"name": ["sgd"]}}),
      "optimizer.name: expected a name, got a list"),
    C("missing-section", check({"loss": None}), "loss: missing section"),
    # --- cross-section checks
    C("trainable-matches-nothing", check({"train": {"trainable": ["W1"]}}),
      "train.trainable: 'W1' matches no parameter; the model has W, b"),
    C("l2-names-missing-parameter", check({"l2": {"scale": 0.01, "params": ["W", "W2"]}}),
      "l2.params: 'W2' matches no parameter; the model has W, b"),
    # --- the step's parts: penalties and clip, with the file and line
    C("unknown-penalty", before_train("penalties: [{name: l3, scale: 0.1}]"),
      "line 6: penalties.0.name: unknown penalty 'l3'; valid: l1, l2"),
    C("unknown-penalty-option", before_train("penalties: [{name: l1, scale: 0.1, scael: 1}]"),
      "line 6: penalties.0.scael: unknown option for penalty 'l1'; did you mean 'scale'?"),
    C("penalty-matches-nothing", before_train("penalties: [{name: l1, scale: 0.1, params: [V*]}]"),
      "line 6: penalties.0.params: 'V*' matches no parameter; the model has W, b"),
    C("penalty-negative-scale", before_train("penalties:\n  - {name: l2, scale: 1.0e-4}\n"
                                             "  - {name: l1, scale: -0.1}"),
      "line 8: penalties.1.scale: must be >= 0, got -0.1"),
    C("penalties-not-a-list", before_train("penalties: {name: l1, scale: 0.1}"),
      "line 6: penalties: expected a list such as [{name: l1, scale: 1.0e-4}], got a dict"),
    C("l2-twice", before_train("l2: {scale: 0.1}\npenalties: [{name: l2, scale: 0.2}]"),
      "line 7: penalties.0.name: l2 is given twice, here and as the l2 section; keep one of them"),
    C("unknown-clip", before_train("clip: {name: norms, clip_norm: 1}"),
      "line 6: clip.name: unknown clip 'norms'; valid: global_norm, norm, value; did you mean 'norm'?"),
    C("clip-norm-zero", before_train("clip: {name: global_norm, clip_norm: 0}"),
      "line 6: clip.clip_norm: must be > 0, got 0"),
    C("clip-min-above-max", before_train("clip: {name: value, min: 1, max: -1}"),
      "line 6: clip: min (1) must be <= max (-1)"),
    C("mse-on-class-labels", lambda ctx: ["check", ctx.mnist(loss={"name": "mse"})],
      "config.yaml: line 11: loss.name: mse needs real-valued targets", "class labels"),
    C("cross-entropy-on-one-column", check({"loss": {"name": "cross_entropy"}}),
      "cross_entropy needs two or more outputs"),
    C("all-problems-at-once", check({"train": {"batch_size": 0, "stpes": 3},
                                     "optimizer": {"learning_rate": -1}, "model": {"name": "cnn"}}),
      "4 problems", "train.batch_size: must be >= 1", "did you mean 'steps'?",
      "optimizer.learning_rate: must be > 0", "unknown model 'cnn'"),
    # --- YAML
    C("yaml-python-tag", lambda ctx: ["check", ctx.text("run: !!python/object/apply:os.system [echo hi]\n")],
      "could not determine a constructor for the tag", "python/object/apply"),
    C("yaml-duplicate-key", lambda ctx: ["check", ctx.base_text(("reduction: mean", "name: cross_entropy"))],
      "line 4: duplicate key 'loss.name' (first at line 4)"),
    C("yaml-duplicate-section", lambda ctx: ["check", ctx.text(BASE_TEXT + "model: {name: mlp}\n")],
      "line 7: duplicate key 'model' (first at line 3)"),
    C("yaml-empty", lambda ctx: ["check", ctx.text("")], "empty config"),
    C("yaml-comments-only", lambda ctx: ["check", ctx.text("# nothing yet\n")], "empty config"),
    C("yaml-top-level-list", lambda ctx: ["check", ctx.text("- run\n- data\n")],
      "top level must be a mapping of sections, got a list"),
    C("yaml-syntax", lambda ctx: ["check", ctx.text("run: {name: x\n")], "invalid YAML"),
    C("yaml-alias-contains-itself", lambda ctx: ["check", ctx.text("run: &r {name: x, dir: *r}\n")],
      "line 1: run.dir: an alias that contains itself"),
    C("yaml-billion-laughs", billion_laughs, "data.path: expected a string, got a list"),
    C("yaml-key-not-plain", lambda ctx: ["check", ctx.text("? [a, b]\n: 1\n")], "a key must be a plain name"),
    C("yaml-integer-too-long", lambda ctx: ["check", ctx.text("run: {seed: 1" + "0" * 5000 + "}\n")],
      "invalid YAML value: Exceeds the limit (4300 digits)"),
    C("yaml-nested-too-deeply", lambda ctx: ["check", ctx.text("run: " + "[" * 3000 + "]" * 3000 + "\n")],
      "nested too deeply"),
    C("yaml-binary-tag", lambda ctx: ["check", ctx.text("run: {name: !!binary aGk=}\n")],
      "could not determine a constructor for the tag 'tag:yaml.org,2002:binary'"),
    C("yaml-not-utf8", lambda ctx: ["check", latin1_config(ctx)], "not UTF-8 text"),
    C("config-missing", lambda ctx: ["check", ctx.tmp / "nope.yaml"], "nope.yaml: config file not found"),
    C("config-is-directory", lambda ctx: ["check", ctx.tmp], "is a directory, expected a YAML config file"),
    # --- --set overrides
    C("set-no-equals", check_set("optimizer.learning_rate"), "expected KEY.PATH=VALUE"),
    C("set-empty-key-part", check_set("optimizer..learning_rate=1"), "expected KEY.PATH=VALUE"),
    C("set-unknown-key", check_set("optimizer.learnig_rate=0.1"),
      "--set optimizer.learnig_rate: unknown option for optimizer 'sgd'; did you mean 'learning_rate'?"),
    C("set-unknown-section", check_set("optimiser.learning_rate=0.1"),
      "--set optimiser: unknown section; did you mean 'optimizer'?"),
    C("set-invalid-value", check_set("train.batch_size=-1"), "--set train.batch_size: must be >= 1, got -1"),
    C("set-bad-yaml", check_set("train.trainable=[W"), "--set train.trainable", "invalid YAML"),
    C("set-through-a-scalar", check_set("data.name.x=1"), "data.name is 'linear_sum', not a mapping"),
    C("set-python-tag", check_set("run.name=!!python/name:os.system"), "could not determine a constructor"),
    # --- run names that would escape runs/
    C("run-name-parent", check_set("run.name=../x"), "run.name: '../x' is not a plain directory name"),
    C("run-name-absolute", check_set("run.name=/tmp/x"), "run.name: '/tmp/x' is not a plain directory name"),
    C("run-name-separator", check_set("run.name=a/b"), "'a/b' is not a plain directory name"),
    C("run-name-dot-dot", check_set("run.name=.."), "'..' is not a plain directory name"),
    C("run-name-backslash", check_set("run.name=a\\b"), "is not a plain directory name"),
    # --- IDX files
    C("idx-wrong-magic", damaged(IMAGES, lambda b: b"\x01" + b[1:]),
      "not an IDX file: first two bytes are 0x01 0x00"),
    C("idx-wrong-type-code", damaged(IMAGES, lambda b: b[:2] + b"\x07" + b[3:]),
      "unknown IDX type code 0x07"),
    C("idx-wrong-dimensions", damaged("train-labels-idx1-ubyte", lambda b: idx_bytes(np.zeros((40, 1)))),
      "train-labels-idx1-ubyte", "expected 1-D"),
    C("idx-dimension-count-zero", damaged(IMAGES, lambda b: b[:3] + b"\x00" + b[4:]),
      "IDX header gives 0 dimensions; expected 1 to 4"),
    C("idx-truncated-one-byte", damaged(IMAGES, lambda b: b[:-1]),
      "truncated", "1 bytes missing"),
    C("idx-one-byte-too-many", damaged("t10k-images-idx3-ubyte", lambda b: b + b"\x00"),
      "1 unexpected trailing bytes"),
    C("idx-truncated-gz", truncated_gz, "train-images-idx3-ubyte.gz", "gzip stream is truncated or corrupt"),
    C("idx-count-mismatch", count_mismatch, "39 labels but", "has 40 images"),
    C("idx-label-out-of-range", labels_out_of_range, "label 12 at index 7", "expected 0 to 9"),
    C("idx-missing-file", missing_idx, "mnist: missing t10k-labels-idx1-ubyte[.gz]", "copy them"),
    C("idx-missing-directory", lambda ctx: ["check", ctx.config(
        {"data": {"name": "mnist", "dir": str(ctx.tmp / "absent")}, "model": {"name": "softmax"},
         "loss": {"name": "cross_entropy"}})], "no such directory", f"{IMAGES}[.gz]", "copy them"),
    # --- npz and csv data
    C("npz-missing-array", lambda ctx: ["check", ctx.npz_data(x=np.zeros((8, 2)), labels=np.zeros(8))],
      "no array 'y'; arrays present: labels, x"),
    C("npz-object-array", lambda ctx: ["check", ctx.npz_data(x=np.zeros((8, 2)), y=np.array([None] * 8))],
      "array 'y' holds Python objects"),
    C("npz-nan-feature", lambda ctx: ["check", ctx.npz_data(
        x=np.where(np.arange(16).reshape(8, 2) == 5, np.nan, 1.0), y=np.zeros((8, 1)))],
      "array 'x' row 2, column 1: non-finite value nan"),
    C("npz-rows-mismatch", lambda ctx: ["check", ctx.npz_data(x=np.zeros((8, 2)), y=np.zeros((7, 1)))],
      "have 8 and 7 rows"),
    C("csv-ragged-row", lambda ctx: ["check", ctx.csv_data("a,b,y\n1,2,3\n4,5\n")],
      "data.csv:3: 2 columns; expected 3"),
    C("csv-non-numeric", lambda ctx: ["check", ctx.csv_data("1,2,3\n4,five,6\n")],
      "data.csv:2: column 2: 'five' is not a number"),
    C("csv-nan-feature", lambda ctx: ["check", ctx.csv_data("1,2,3\nnan,5,6\n")],
      "data.csv:2: column 1: non-finite value nan"),
    C("csv-missing-columns", lambda ctx: ["check", ctx.csv_data("1,2\n3,4\n", label_columns=2)],
      "2 columns but label_columns is 2"),
    C("csv-missing-file", lambda ctx: ["check", ctx.config(
        {"data": {"name": "csv", "path": str(ctx.tmp / "absent.csv")}})], "absent.csv: no such file"),
    C("cross-entropy-targets-not-distributions", lambda ctx: soft_targets(ctx, [[0.5, 0.5], [2, 2], [0, 0]]),
      "data.npz: array 'y' row 1: targets sum to 4;", "needs each target row to be a distribution"),
    C("cross-entropy-negative-target", lambda ctx: soft_targets(ctx, [[1.5, -0.5]]),
      "data.npz: array 'y' row 0: targets sum to 1, entry -0.5 is below 0"),
    C("cross-entropy-csv-targets-not-distributions", lambda ctx: ["check", ctx.csv_data(
        "a,p,q\n" + "1,0.25,0.75\n" * 8 + "2,0.2,0.2\n", label_columns=2, validation=3),
        "--set", "loss.name=cross_entropy"], "data.csv:10: targets sum to 0.4;"),
    # --- model.init.from: arrays that do not fit the model
    C("init-from-wrong-shape", lambda ctx: init_from(ctx, W=np.zeros((3, 1)), b=np.zeros(1)),
      "model.init.from", "array 'W' has shape (3, 1), expected (2, 1)"),
    C("init-from-missing-array", lambda ctx: init_from(ctx, W=np.zeros((2, 1), np.float32)),
      "model.init.from", "lacks b"),
    C("init-from-object-array", lambda ctx: init_from(ctx, W=np.array([[None], [None]]), b=np.zeros(1)),
      "array 'W' has dtype object"),
    C("init-from-missing-file", lambda ctx: ["check", ctx.config({"model": {"init": {"from": "no.npz"}}})],
      "no.npz ('no.npz' in", "config.yaml, relative to the config file's directory): no such file"),
    C("init-from-beyond-float32", lambda ctx: init_from(ctx, W=np.full((2, 1), 1e300), b=np.zeros(1)),
      "model.init.from", "array 'W' holds 1e+300, beyond the range of float32"),
    C("init-from-nan", lambda ctx: init_from(ctx, W=np.array([[0.5], [np.nan]]), b=np.zeros(1)),
      "model.init.from", "array 'W' holds nan, not finite"),
    # --- checkpoints as untrusted input, through eval
    C("ckpt-object-array", lambda ctx: eval_file(ctx, "obj.npz", object_array), "has dtype object"),
    C("ckpt-pickle-renamed", lambda ctx: eval_file(ctx, "pickle.npz", pickle_renamed),
      "not an npz (zip) file"),
    C("ckpt-unexpected-member", lambda ctx: eval_file(ctx, "extra.npz", with_extra_member(ctx)),
      "unexpected member 'run_me.py'"),
    C("ckpt-duplicate-member", lambda ctx: eval_file(ctx, "dup.npz", with_duplicate_member(ctx)),
      "member 'param/W.npy' appears twice"),
    C("ckpt-huge-header", lambda ctx: eval_file(ctx, "huge.npz", huge_header),
      "array 'param/W' declares 2800000000 bytes of data but holds 16"),
    C("ckpt-huge-header-and-sizes", lambda ctx: eval_file(ctx, "huge2.npz", huge_header_and_sizes),
      "members declare", "forged or truncated"),
    C("ckpt-meta-nan", lambda ctx: eval_forged(ctx, meta=lambda m: m.update(elapsed=float("nan"))),
      "metadata is not valid JSON", "non-finite number NaN"),
    C("ckpt-meta-out-of-range", lambda ctx: eval_forged(
        # only that value: a bare "1.5" also stands in timestamps now and then
        ctx, meta=lambda m: m.update(elapsed=1.5),
        text=lambda t: t.replace('"elapsed": 1.5', '"elapsed": 1e999')),
      "metadata is not valid JSON", "number 1e999 is out of range"),
    C("ckpt-compressed", lambda ctx: eval_forged(ctx, save=np.savez_compressed),
      "is compressed; gdtrain checkpoints never are"),
    C("ckpt-newer-format", lambda ctx: eval_forged(ctx, meta=lambda m: m.update(format=2)),
      "checkpoint format 2 is newer than this gdtrain reads (1)"),
    C("ckpt-shape-mismatch", lambda ctx: eval_forged(
        ctx, arrays=lambda a: a.update({"param/W": np.zeros((3, 1), np.float32)})),
      "'param/W'", "[3, 1]", "expected float32[2, 1]"),
    C("ckpt-dtype-mismatch", lambda ctx: eval_forged(
        ctx, arrays=lambda a: a.update({"param/b": a["param/b"].astype(np.float64)})),
      "'param/b'", "float64", "expected float32"),
    C("ckpt-missing-array", lambda ctx: eval_forged(ctx, arrays=lambda a: a.pop("param/b")), "param/b"),
    C("ckpt-crc-mismatch", lambda ctx: eval_file(ctx, "flipped.npz", flipped_byte(ctx)),
      "array 'param/W' is damaged", "CRC"),
    C("ckpt-local-header-damaged", lambda ctx: eval_file(ctx, "local.npz", flipped_local_crc(ctx)),
      "member 'param/W.npy': its local header disagrees with the zip directory"),
    C("ckpt-sha-mismatch", lambda ctx: eval_forged(
        ctx, arrays=lambda a: a["param/W"].__setitem__((0, 0), 5.0), redigest=False),
      "array 'param/W' fails its sha256 check"),
    C("ckpt-truncated", lambda ctx: eval_file(ctx, "half.npz", truncated_file(ctx)), "not an npz (zip) file"),
    C("ckpt-no-metadata", lambda ctx: eval_file(ctx, "nometa.npz", lambda p: np.savez(p, x=np.zeros(2))),
      "no metadata; not a gdtrain checkpoint"),
    C("eval-missing-target", lambda ctx: ["eval", ctx.tmp / "absent"], "no such run directory or checkpoint"),
    # --- checkpoints as untrusted input, through resume
    C("resume-forged-header", lambda ctx: resume_from(ctx, huge_header), "no usable checkpoint", "param/W"),
    C("resume-pickle-renamed", lambda ctx: resume_from(ctx, pickle_renamed), "no usable checkpoint",
      "not an npz (zip) file"),
    C("resume-newer-format", lambda ctx: resume_from(
        ctx, lambda p: shutil.copy(ctx.forged(meta=lambda m: m.update(format=7)), p)),
      "checkpoint format 7 is newer than this gdtrain reads (1)"),
    C("resume-feature-count-changed", resume_after_feature_change, "'param/W'", "[3, 1]", "[4, 1]"),
]


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly(case: Case, tmp_path, good_run):
    ctx = Ctx(tmp_path, good_run)
    args = case.build(ctx)
    before = snapshot(ctx.runs) if ctx.runs.exists() else None
    code, out = invoke(*args, cwd=tmp_path)
    assert "Traceback" not in out
    assert code == case.code, out
    lines = [line for line in out.splitlines() if line.startswith("gdtrain: error:")]
    assert len(lines) == 1, out  # one line, whatever the number of problems
    for fragment in case.fragments:  # in the error, or in the warning naming a skipped checkpoint
        assert fragment in out, f"{fragment!r} not in {out!r}"
    if before is not None:  # nothing on disk was lost or changed by the refusal
        assert snapshot(ctx.runs) == before


# ------------------------------------------------------------------ what is allowed


def test_sigmoid_cross_entropy_on_ten_classes_is_allowed(tmp_path):
    write_mnist(tmp_path / "mnist")
    config = Ctx(tmp_path, tmp_path).config({"data": {"name": "mnist", "dir": str(tmp_path / "mnist")},
                                             "model": {"name": "softmax"},
                                             "loss": {"name": "sigmoid_cross_entropy"}})
    code, out = invoke("run", config, "--quiet")
    assert code == 0, out
    assert "test accuracy" in out


def test_cross_entropy_on_target_rows_that_are_distributions_is_allowed(tmp_path):
    """Soft labels (rows >= 0 summing to 1, up to float32 rounding and the 1e-3 tolerance)
    train as before: only rows that are no distribution are refused."""
    rng = np.random.default_rng(3)
    y = rng.dirichlet(np.ones(3), 40).astype(np.float32)
    y[0] = [0.5, 0.5, 0.0009]  # sums to 1.0009: within the tolerance
    np.savez(tmp_path / "soft.npz", x=rng.normal(size=(40, 2)), y=y)
    config = Ctx(tmp_path, tmp_path).config({"data": {"name": "npz", "path": str(tmp_path / "soft.npz")},
                                             "loss": {"name": "cross_entropy"}})
    code, out = invoke("run", config, "--quiet")
    assert code == 0, out


def test_check_without_data_skips_what_only_the_data_can_tell(tmp_path):
    ctx = Ctx(tmp_path, tmp_path)
    config = ctx.config({"data": {"name": "mnist", "dir": str(tmp_path / "absent")},
                         "model": {"name": "softmax"}, "loss": {"name": "mse"}})
    code, out = invoke("check", config, "--no-data")
    assert code == 0 and "ok (config only)" in out
    code, out = invoke("check", config)
    assert code == 2 and "no such directory" in out


# ------------------------------------------------------------------ nothing on disk is lost


@pytest.mark.parametrize("args", [
    ["--set", "optimizer.learning_rate=-1"],
    ["--set", "model.name=mlp", "--set", "model.hidden=0"],
    ["--set", "data.name=mnist", "--set", "data.dir=/nonexistent"],
    ["--set", "train.trainable=[V]"],
    ["--set", "run.seed=3"],  # a different run: refused on resume, not silently restarted
    ["--set", "optimizer.learning_rate=0.5"],  # guarded: needs --allow-config-change
    ["--restart", "--set", "optimizer.learning_rate=-1"],
    ["--restart", "--set", "data.name=mnist", "--set", "data.dir=/nonexistent"],
    ["--restart", "--set", "train.batch_size=33"],  # refused once the data is loaded
], ids=["bad-value", "bad-hidden", "missing-data", "trainable", "frozen-change", "guarded-change",
        "restart-bad-value", "restart-missing-data", "restart-batch-beyond-data"])
def test_refused_run_leaves_existing_run_byte_identical(args, tmp_path, good_run):
    ctx = Ctx(tmp_path, good_run)
    run = ctx.runs / "small"
    shutil.copytree(good_run, run)
    before = snapshot(run)
    code, out = invoke("run", ctx.config(), "--quiet", *args)
    assert code == 2, out
    assert "Traceback" not in out and "gdtrain: error:" in out
    assert snapshot(run) == before


def _refused_new_run(ctx: Ctx, case: str, name: str = "small") -> list:
    """The command line of a `run` that passes the config check but is refused once gdtrain
    holds the run directory: the data, the initial weights or the batch do not fit."""
    run = {"name": name, "dir": str(ctx.runs)}
    config, args = ctx.config({"run": run}), []
    if case == "missing-data":
        config = ctx.mnist(run=run)
        args = ["--set", "data.dir=/nonexistent"]
    elif case == "init-from-missing-file":
        args = ["--set", f"model.init={{from: {ctx.tmp / 'absent.npz'}}}"]
    elif case == "init-from-wrong-shape":
        np.savez(ctx.tmp / "init.npz", W=np.zeros((3, 1)), b=np.zeros(1))
        args = ["--set", f"model.init={{from: {ctx.tmp / 'init.npz'}}}"]
    elif case == "batch-beyond-data":
        args = ["--set", "train.batch_size=33"]
    else:
        assert case == "loss-for-other-labels"  # class labels, and BASE's loss is mse
        np.savez(ctx.tmp / "classes.npz", x=np.zeros((10, 2)), y=np.arange(10) % 2)
        config = ctx.config({"run": run,
                             "data": {"name": "npz", "path": str(ctx.tmp / "classes.npz")}})
    return ["run", config, "--quiet", *args]


REFUSED_NEW = ["missing-data", "init-from-missing-file", "init-from-wrong-shape", "batch-beyond-data",
               "loss-for-other-labels"]


@pytest.mark.parametrize("case", REFUSED_NEW)
def test_refused_new_run_leaves_no_trace(case, tmp_path):
    """runs/ did not exist: gdtrain made it for this run, so none of it may remain (an empty
    run directory would be listed by `gdtrain runs` as a run of unknown status)."""
    ctx = Ctx(tmp_path, tmp_path)
    code, out = invoke(*_refused_new_run(ctx, case))
    assert code == 2, out
    assert "Traceback" not in out and "gdtrain: error:" in out
    assert not ctx.runs.exists(), sorted(ctx.runs.rglob("*"))


@pytest.mark.parametrize("case", REFUSED_NEW)
def test_refused_new_run_beside_others_removes_only_its_own_directory(case, tmp_path, good_run):
    ctx = Ctx(tmp_path, good_run)
    shutil.copytree(good_run, ctx.runs / "small")
    before = snapshot(ctx.runs)
    code, out = invoke(*_refused_new_run(ctx, case, name="new"))
    assert code == 2, out
    assert sorted(p.name for p in ctx.runs.iterdir()) == ["small"]
    assert snapshot(ctx.runs) == before


@pytest.mark.skipif(not GDTRAIN.exists() or sys.platform != "linux",
                    reason="needs the installed gdtrain on Linux")
@pytest.mark.parametrize("case", ["missing-data", "init-from-missing-file"])
def test_refused_new_run_leaves_no_trace_with_the_real_executable(case, tmp_path):
    ctx = Ctx(tmp_path, tmp_path)
    code, out, _ = run_gdtrain(_refused_new_run(ctx, case), tmp_path)
    assert code == 2 and "gdtrain: error:" in out and "Traceback" not in out, out
    assert not ctx.runs.exists(), sorted(ctx.runs.rglob("*"))
    code, out, _ = run_gdtrain(["runs", ctx.runs.parent / "runs"], tmp_path)
    assert code == 2 and "no such directory" in out  # named explicitly: an error, not "unknown"


# ------------------------------------------------------------------ divergence


def test_divergence_stops_with_exit_3_and_keeps_the_last_good_checkpoint(tmp_path, good_run):
    """Resume a good run with a learning rate that overflows float32 within a few steps."""
    ctx = Ctx(tmp_path, good_run)
    run = ctx.runs / "small"
    shutil.copytree(good_run, run)
    last_good = run / "checkpoints" / checkpoint.checkpoint_name(6)
    kept = last_good.read_bytes()
    code, out = invoke("run", ctx.config({"train": {"steps": 40}}), "--quiet", "--allow-config-change",
                       "--set", "optimizer.learning_rate=1e6", "--set", "train.checkpoint_every=1")
    assert code == 3, out
    assert "Traceback" not in out
    message = next(line for line in out.splitlines() if line.startswith("gdtrain: error:"))
    assert "training diverged at step" in message and "loss is inf" in message
    step = int(message.split("at step ")[1].split(":")[0])
    assert step > 6
    assert "parameters are finite but" in message and "reaches" in message  # names the array
    assert last_good.read_bytes() == kept
    # every checkpoint left verifies and holds only finite numbers
    for path in checkpoint.list_checkpoints(run / "checkpoints"):
        arrays, meta = checkpoint.load(path)
        assert meta["step"] < step
        assert all(np.isfinite(a).all() for a in arrays.values()), path
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "diverged"


def test_divergence_names_the_non_finite_parameter():
    """When an update itself produced inf/NaN, the message names that parameter."""
    from gdtrain.config.validate import resolve
    from gdtrain.core.train import Trainer
    from gdtrain.data import load_dataset
    from gdtrain.errors import DivergedError

    config = resolve(merged(BASE, {"model": {"name": "mlp", "hidden": 3}}))
    trainer = Trainer(config, load_dataset(config["data"], "float32"))
    trainer.step()
    trainer.params["W2"][0, 0] = np.inf
    with np.errstate(all="ignore"), pytest.raises(DivergedError) as raised:
        trainer.step()
    assert "at step 2: loss is nan" in str(raised.value) and "non-finite parameter W2" in str(raised.value)


def test_divergence_reaches_the_user_without_numpy_warnings_and_with_one_step(tmp_path):
    """The MLP's outputs overflow float32 before its loss turns NaN: NumPy's RuntimeWarnings
    (overflow in matmul, invalid value in subtract) must not reach the user, and the message,
    status.json and `gdtrain runs` name the same step: the update whose loss was not finite."""
    import warnings

    from tool_runs import config as small_config
    from tool_runs import run as run_small
    from tool_runs import run_dir as small_run_dir

    from gdtrain.errors import DivergedError
    from gdtrain.run.runs_table import describe

    raw = small_config(tmp_path, "mlp", model={"name": "mlp", "hidden": 8},
                       optimizer={"name": "sgd", "learning_rate": 1e4}, train={"steps": 50, "log_every": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DivergedError) as raised:
            run_small(raw)
    assert [str(w.message) for w in caught] == []
    step = int(str(raised.value).split("at step ")[1].split(":")[0])
    status = json.loads((small_run_dir(raw) / "status.json").read_text())
    assert (status["status"], status["step"], status["error"]) == ("diverged", step, str(raised.value))
    assert describe(small_run_dir(raw))["step"] == step
    records = [json.loads(line) for line in (small_run_dir(raw) / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == step - 1  # the last update done; its successor's loss was not finite


def test_evaluating_weights_whose_outputs_overflow_warns_nothing():
    import warnings

    from gdtrain.core.dataset import Split
    from gdtrain.core.evaluate import evaluate
    from gdtrain.core.losses import LOSSES
    from gdtrain.core.models import MODELS

    model = MODELS.build("mlp", {"hidden": 4}, "model", input_dim=3, output_dim=2)
    params = {k: np.full(shape, 1e30, np.float32) for k, shape in model.shapes.items()}
    split = Split(np.ones((5, 3), np.float32), np.array([0, 1, 0, 1, 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(model, LOSSES.build("cross_entropy", {}, "loss"), params, split, 2)
    assert [str(w.message) for w in caught] == []
    assert result["examples"] == 5


@pytest.mark.skipif(not GDTRAIN.exists() or sys.platform != "linux",
                    reason="needs the installed gdtrain on Linux")
def test_mnist_mlp_divergence_with_the_real_executable(tmp_path):
    """The issue's own command: the MNIST MLP at learning rate 1e4."""
    (tmp_path / "data").symlink_to(REPO / "data")
    code, out, _ = run_gdtrain(["run", REPO / "configs" / "mnist_mlp.yaml", "-q", "--set",
                                "optimizer.learning_rate=1e4", "--set", "run.name=x"], tmp_path)
    assert code == 3, out
    assert "Warning" not in out and "numpy" not in out.lower(), out
    assert out.strip().splitlines()[-1].startswith("gdtrain: error: training diverged at step ")
    step = int(out.split("at step ")[1].split(":")[0])
    code, table, _ = run_gdtrain(["runs", "--json"], tmp_path)
    assert code == 0 and [(r["status"], r["step"]) for r in json.loads(table)] == [("diverged", step)]


# ------------------------------------------------------------------ the real executable


def run_gdtrain(args: list, cwd: Path) -> tuple[int, str, int]:
    """(exit code, stdout + stderr, peak resident kilobytes) of `gdtrain ARGS` in a subprocess."""
    out_path = cwd / "gdtrain.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([str(GDTRAIN), *map(str, args)], cwd=cwd, stdout=out, stderr=out,
                                env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out_path.read_text(), usage.ru_maxrss


@pytest.mark.skipif(not GDTRAIN.exists() or sys.platform != "linux",
                    reason="needs the installed gdtrain on Linux")
def test_subprocess_exit_codes_and_forged_checkpoint_memory(tmp_path):
    ctx = Ctx(tmp_path, tmp_path)
    code, out, _ = run_gdtrain(["check", ctx.config({"train": {"batch_size": 0}})], tmp_path)
    assert code == 2 and "train.batch_size: must be >= 1" in out and "Traceback" not in out

    code, out, _ = run_gdtrain(["run", ctx.config({"optimizer": {"learning_rate": 1e30}}), "-q"], tmp_path)
    assert code == 3 and "training diverged at step" in out and "Traceback" not in out

    # 2.8 GB declared, in the .npy header and in the zip directory: refused before any is read
    for name, write in (("huge.npz", huge_header), ("huge2.npz", huge_header_and_sizes)):
        write(tmp_path / name)
        code, out, peak_kb = run_gdtrain(["eval", tmp_path / name], tmp_path)
        assert code == 2 and "Traceback" not in out and "gdtrain: error:" in out, out
        assert peak_kb < 400_000, f"{name}: peak RSS {peak_kb} kB"
