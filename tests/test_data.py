"""Data loading: IDX decoding, MNIST directories and cache, npz/csv files, seed generators."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from gdtrain.data import DATASETS, mnist
from gdtrain.data.files import csv_dataset, npz
from gdtrain.data.idx import IDX_TYPES, read_idx
from gdtrain.data.synthetic import (
    circle,
    constant_target,
    linear_sum,
    sum_below_one,
    two_gaussians,
)
from gdtrain.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

# ---------------------------------------------------------------------------- helpers

CODE_OF = {np.dtype(big).newbyteorder("="): code for code, (big, _) in IDX_TYPES.items()}


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """An IDX file's bytes, written independently of the reader (struct + big-endian)."""
    code = CODE_OF[arr.dtype] if code is None else code
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist_dir(
    root: Path, style: str = "dash", gz: bool = True, n_train: int = 6, n_test: int = 4, seed=0
) -> dict[str, np.ndarray]:
    """Four small IDX files in `root` (3x2 images); returns the arrays written."""
    rng = np.random.RandomState(seed)
    arrays = {
        "train-images": rng.randint(0, 256, (n_train, 3, 2)).astype(np.uint8),
        "train-labels": rng.randint(0, 10, n_train).astype(np.uint8),
        "t10k-images": rng.randint(0, 256, (n_test, 3, 2)).astype(np.uint8),
        "t10k-labels": rng.randint(0, 10, n_test).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        kind = "idx3-ubyte" if arr.ndim == 3 else "idx1-ubyte"
        name = f"{stem}-{kind}" if style == "dash" else f"{stem}.{kind}"
        write(root / (name + (".gz" if gz else "")), idx_bytes(arr), gz)
    return arrays


def cache_files(root: Path) -> list[Path]:
    return sorted(root.glob(".gdtrain-cache-*.npz"))


# -------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("code", sorted(IDX_TYPES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, code, gz):
    dtype = np.dtype(IDX_TYPES[code][0]).newbyteorder("=")
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(arr), gz)
    out = read_idx(path, ndim=3)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    arr = np.arange(5, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "x", idx_bytes(arr), gz=True)), arr)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "x.gz", idx_bytes(arr))), arr)


def _gz_truncated(data: bytes) -> bytes:
    return gzip.compress(data)[:-12]


def _gz_corrupt(data: bytes) -> bytes:
    z = bytearray(gzip.compress(data))
    z[-8] ^= 0xFF  # the CRC32 of the payload
    return bytes(z)


HEADER_U8_3 = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 2, 2)
MALFORMED = {
    "bad magic": (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "first two bytes"),
    "unknown type": (b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\x00", "type code 0x0A"),
    "zero dims": (b"\x00\x00\x08\x00", "0 dimensions; expected 1 to 4"),
    "five dims": (b"\x00\x00\x08\x05" + struct.pack(">5I", 1, 1, 1, 1, 1) + b"\0", "expected 1"),
    "short header": (b"\x00\x00", "needs at least 4"),
    "short sizes": (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "only 8 bytes"),
    "truncated": (HEADER_U8_3 + b"\x00" * 5, "3 bytes missing"),
    "trailing": (HEADER_U8_3 + b"\x00" * 10, "2 unexpected trailing bytes"),
    "truncated gzip": (_gz_truncated(HEADER_U8_3 + b"\x07" * 8), "truncated or corrupt"),
    "corrupt gzip": (_gz_corrupt(HEADER_U8_3 + b"\x07" * 8), "truncated or corrupt"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_read_idx_rejects_malformed_files(tmp_path, case):
    data, fragment = MALFORMED[case]
    path = write(tmp_path / "bad-idx3-ubyte", data)
    with pytest.raises(DataError, match=fragment) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_checks_expected_dimensions(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"1 dimensions \(shape \(4,\)\); expected 3"):
        read_idx(path, ndim=3)


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path)


# ------------------------------------------------------------------------------ MNIST


@pytest.fixture(scope="module")
def real_mnist(tmp_path_factory):
    """The repo's data/mnist linked into a scratch directory, so the cache lands there."""
    source = REPO / "data" / "mnist"
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"MNIST files not in {source}")
    root = tmp_path_factory.mktemp("mnist")
    for name in MNIST_FILES:
        (root / name).symlink_to(source / name)
    return root


def test_real_mnist_shapes_range_and_label_counts(real_mnist):
    ds = mnist.mnist(dir=str(real_mnist))
    assert ds.train.x.shape == (60000, 784) and ds.test.x.shape == (10000, 784)
    for split in (ds.train, ds.test):
        assert split.x.dtype == np.float32 and split.x.flags.c_contiguous
        assert split.x.min() == 0.0 and split.x.max() == 1.0
        assert split.y.dtype == np.int64
    assert ds.num_classes == 10 and ds.input_dim == 784 and ds.validation is None
    assert np.bincount(ds.train.y).tolist() == TRAIN_COUNTS
    assert np.bincount(ds.test.y).tolist() == TEST_COUNTS


def test_real_mnist_cache_gives_identical_data(real_mnist, monkeypatch):
    mnist.load_idx_dir(real_mnist, "")  # builds the cache unless an earlier test did
    assert len(cache_files(real_mnist)) == 1
    sources = mnist.find_files(real_mnist, "")
    decoded = {part: read_idx(path) for part, path in sources.items()}
    monkeypatch.setattr(mnist, "read_idx", _no_decoding)
    cached = mnist.load_idx_dir(real_mnist, "")
    for part in decoded:
        assert cached[part].dtype == np.uint8
        np.testing.assert_array_equal(cached[part], decoded[part])
    ds = mnist.mnist(dir=str(real_mnist), validation=5000)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (55000, 5000, 10000)
    np.testing.assert_array_equal(ds.validation.y, decoded["y_train"][:5000])


def _no_decoding(path, ndim=None):
    raise AssertionError(f"decoded {path} although the cache is valid")


@pytest.mark.parametrize("style", ["dash", "dot"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_both_naming_styles_raw_or_gz(tmp_path, style, gz):
    arrays = make_mnist_dir(tmp_path, style=style, gz=gz)
    ds = mnist.mnist(dir=str(tmp_path))
    expected = arrays["train-images"].reshape(6, 6).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(ds.train.x, expected)
    np.testing.assert_array_equal(ds.train.y, arrays["train-labels"])
    np.testing.assert_array_equal(ds.test.y, arrays["t10k-labels"])
    assert ds.train.x.shape == (6, 6) and ds.test.x.shape == (4, 6)
    assert ds.num_classes == 10 and ds.class_names[3] == "3"


def test_mnist_dtype_relative_dir_and_validation(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    ds = DATASETS.build("mnist", {"dir": "digits", "validation": 2}, "data", dtype=np.float64)
    assert ds.train.x.dtype == np.float64
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (4, 2, 4)
    with pytest.raises(DataError, match="leaves no training examples"):
        mnist.mnist(dir="digits", validation=6)


def test_fashion_mnist_uses_the_same_format(tmp_path):
    make_mnist_dir(tmp_path, style="dot")
    ds = mnist.fashion_mnist(dir=str(tmp_path))
    assert ds.name == "fashion_mnist" and ds.class_names[9] == "Ankle boot"


def test_mnist_missing_files_lists_names_directory_and_remedy(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        mnist.mnist(dir=str(tmp_path))
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte[.gz] or t10k-labels.idx1-ubyte[.gz]" in message
    # where to get them, not a path of this repository's development machine
    assert str(tmp_path) in message and "http://yann.lecun.com/exdb/mnist/" in message
    assert f"copy them into {tmp_path}, gzipped or not" in message and "../shared" not in message
    assert "train-images" not in message
    with pytest.raises(
        DataError, match="absent: no such directory; it should hold.*zalandoresearch"
    ):
        mnist.fashion_mnist(dir=str(tmp_path / "absent"))


def _rewrite(root: Path, stem: str, arr: np.ndarray, code: int | None = None) -> None:
    write(root / f"{stem}.gz", idx_bytes(arr, code), gz=True)


def test_mnist_rejects_label_count_mismatch(tmp_path):
    make_mnist_dir(tmp_path)
    _rewrite(tmp_path, "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: 5 labels but .* 6 images"):
        mnist.mnist(dir=str(tmp_path))


def test_mnist_rejects_out_of_range_label_naming_first_index(tmp_path):
    make_mnist_dir(tmp_path)
    _rewrite(tmp_path, "t10k-labels-idx1-ubyte", np.array([1, 2, 12, 10], np.uint8))
    with pytest.raises(DataError, match="label 12 at index 2 .*expected 0 to 9"):
        mnist.mnist(dir=str(tmp_path))


def test_mnist_rejects_wrong_shapes_and_types(tmp_path):
    make_mnist_dir(tmp_path)
    _rewrite(tmp_path, "train-images-idx3-ubyte", np.zeros((6, 6), np.uint8))
    with pytest.raises(DataError, match=r"shape \(6, 6\); expected 3-D"):
        mnist.mnist(dir=str(tmp_path))
    _rewrite(tmp_path, "train-images-idx3-ubyte", np.zeros((6, 3, 2), np.int32))
    with pytest.raises(DataError, match="int32; expected unsigned bytes"):
        mnist.mnist(dir=str(tmp_path))
    _rewrite(tmp_path, "train-images-idx3-ubyte", np.zeros((6, 2, 3), np.uint8))
    with pytest.raises(DataError, match="images are 3x2 but the training images are 2x3"):
        mnist.mnist(dir=str(tmp_path))


def test_mnist_cache_is_used_then_rebuilt_when_a_source_changes(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path)
    first = mnist.mnist(dir=str(tmp_path))
    [cache] = cache_files(tmp_path)
    with np.load(cache, allow_pickle=False) as f:
        assert sorted(f.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert all(f[k].dtype == np.uint8 for k in f.files)
    with monkeypatch.context() as m:
        m.setattr(mnist, "read_idx", _no_decoding)
        np.testing.assert_array_equal(mnist.mnist(dir=str(tmp_path)).train.x, first.train.x)

    # A touch alone is no change: the key is the content
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(7, 7))
    with monkeypatch.context() as m:
        m.setattr(mnist, "read_idx", _no_decoding)
        mnist.mnist(dir=str(tmp_path))
    assert cache_files(tmp_path) == [cache]

    # New content of the same size put in place with the old mtime (cp -p, tar x): rebuilt
    before = labels.stat()
    new_labels = np.array([9, 8, 7, 6, 5, 4], np.uint8)
    _rewrite(tmp_path, "train-labels-idx1-ubyte", new_labels)
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert labels.stat().st_size == before.st_size
    np.testing.assert_array_equal(mnist.mnist(dir=str(tmp_path)).train.y, new_labels)
    [rebuilt] = cache_files(tmp_path)
    assert rebuilt != cache  # and the stale one was removed


def test_mnist_cache_write_removes_temporaries_of_killed_writes(tmp_path):
    make_mnist_dir(tmp_path)
    # what a cache write killed before its rename leaves (mkstemp's name), and an old cache
    killed = tmp_path / f"{mnist.CACHE_PREFIX}k1ll3d_x.tmp"
    killed.write_bytes(b"half a cache")
    stale = tmp_path / f"{mnist.CACHE_PREFIX}{'0' * 32}.npz"
    stale.write_bytes(b"an older cache")
    other = tmp_path / "notes.tmp"  # not ours: left alone
    other.write_bytes(b"")
    ds = mnist.mnist(dir=str(tmp_path))
    [cache] = cache_files(tmp_path)
    assert not killed.exists() and not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.glob(f"{mnist.CACHE_PREFIX}*")) == [cache.name]
    # the current cache survives the next write's clean-up, and is the one used
    mnist._remove_stale_caches(cache)
    assert cache_files(tmp_path) == [cache]
    np.testing.assert_array_equal(mnist.mnist(dir=str(tmp_path)).train.x, ds.train.x)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a zip file"),
        lambda p: p.write_bytes(p.read_bytes()[:1000]),
        lambda p: np.savez(p, x_train=np.zeros((2, 3, 2), np.uint8)),  # arrays missing
        lambda p: np.savez(  # labels out of range
            p,
            x_train=np.zeros((6, 3, 2), np.uint8),
            y_train=np.full(6, 10, np.uint8),
            x_test=np.zeros((4, 3, 2), np.uint8),
            y_test=np.zeros(4, np.uint8),
        ),
    ],
)
def test_mnist_ignores_and_rebuilds_a_damaged_cache(tmp_path, damage):
    arrays = make_mnist_dir(tmp_path)
    mnist.mnist(dir=str(tmp_path))
    [cache] = cache_files(tmp_path)
    damage(cache)  # np.savez keeps a name that already ends in .npz
    ds = mnist.mnist(dir=str(tmp_path))
    np.testing.assert_array_equal(ds.train.y, arrays["train-labels"])
    with np.load(cache, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["y_train"], arrays["train-labels"])


def test_mnist_skips_cache_when_directory_is_not_writable(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mnist.tempfile, "mkstemp", refuse)
    ds = mnist.mnist(dir=str(tmp_path))
    assert len(ds.train) == 6 and cache_files(tmp_path) == []
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_mnist_loads_from_a_read_only_directory(tmp_path):
    make_mnist_dir(tmp_path)
    tmp_path.chmod(0o555)
    try:
        assert len(mnist.mnist(dir=str(tmp_path)).train) == 6
        assert cache_files(tmp_path) == []
    finally:
        tmp_path.chmod(0o755)


# -------------------------------------------------------------------------------- npz


def test_npz_class_labels_with_test_split(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    np.savez(path, x=x, y=np.array([0, 2, 1, 0]), x_test=x[:2], y_test=np.array([4, 1]))
    ds = npz(path=str(path))
    assert ds.num_classes == 5  # the largest label in either split, plus one
    assert ds.train.x.dtype == np.float32 and ds.train.x.flags.c_contiguous
    np.testing.assert_array_equal(ds.train.x, x)
    assert ds.train.y.dtype == np.int64 and ds.test.y.tolist() == [4, 1]


def test_npz_real_targets_one_dimensional_x_and_validation(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.linspace(0, 1, 10), y=np.linspace(1, 2, 10))
    ds = npz(path=str(path), validation=3, dtype=np.float64)
    assert ds.num_classes is None and ds.test is None
    assert ds.train.x.shape == (7, 1) and ds.train.y.shape == (7, 1)
    assert ds.validation.x.shape == (3, 1) and ds.train.y.dtype == np.float64


def test_npz_num_classes_accepts_whole_float_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array([0.0, 1.0, 2.0]))
    ds = npz(path=str(path), num_classes=4)
    assert ds.num_classes == 4 and ds.train.y.tolist() == [0, 1, 2]


NPZ_ERRORS = {
    "missing x": ({"y": np.zeros(3)}, None, r"no array 'x'; arrays present: y"),
    "half a test split": (
        {"x": np.zeros((3, 1)), "y": np.zeros(3), "x_test": np.zeros((1, 1))},
        None,
        "has 'x_test' but no 'y_test'",
    ),
    "object array": (
        {"x": np.array([1, "a"], dtype=object), "y": np.zeros(2)},
        None,
        "array 'x' holds Python objects",
    ),
    "string x": ({"x": np.array([["a"]]), "y": np.zeros(1)}, None, "dtype <U1; expected numbers"),
    "3-D x": ({"x": np.zeros((2, 2, 2)), "y": np.zeros(2)}, None, "expected 2-D"),
    "empty x": ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, None, "no rows"),
    "NaN in x": (
        {"x": np.array([[0.0, 1.0], [2.0, np.nan]]), "y": np.zeros(2)},
        None,
        "array 'x' row 1, column 1: non-finite value nan",
    ),
    "overflow": (
        {"x": np.array([[1e40]]), "y": np.zeros(1)},
        None,
        "value 1e.?40 overflows float32",
    ),
    "inf in y": ({"x": np.zeros((2, 1)), "y": np.array([0.0, np.inf])}, None, "'y' row 1"),
    "row mismatch": ({"x": np.zeros((3, 1)), "y": np.zeros(2)}, None, "have 3 and 2 rows"),
    "negative label": (
        {"x": np.zeros((3, 1)), "y": np.array([0, -1, 1])},
        None,
        "'y' index 1: class label -1",
    ),
    "label too large": (
        {"x": np.zeros((3, 1)), "y": np.array([0, 1, 3])},
        3,
        r"index 2: class label 3 .*expected 0 to 2 \(num_classes 3\)",
    ),
    "fraction with num_classes": (
        {"x": np.zeros((2, 1)), "y": np.array([0.0, 0.5])},
        2,
        "index 1: label 0.5 is not a whole number",
    ),
    "2-D int labels": (
        {"x": np.zeros((2, 1)), "y": np.zeros((2, 2), int)},
        None,
        r"shape \(2, 2\); expected \(N,\) class labels",
    ),
    "test width": (
        {"x": np.zeros((2, 2)), "y": np.zeros(2), "x_test": np.zeros((1, 3)), "y_test": [0.0]},
        None,
        "'x' and 'x_test' have 2 and 3 columns",
    ),
    "float y_test for int y": (
        {"x": np.zeros((2, 1)), "y": [0, 1], "x_test": np.zeros((1, 1)), "y_test": [0.5]},
        None,
        "'y_test' index 0: label 0.5",
    ),
}


@pytest.mark.parametrize("case", sorted(NPZ_ERRORS))
def test_npz_rejects_bad_arrays(tmp_path, case):
    arrays, num_classes, fragment = NPZ_ERRORS[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(DataError, match=fragment) as info:
        npz(path=str(path), num_classes=num_classes)
    assert str(info.value).startswith(str(path))


def test_npz_rejects_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        npz(path=str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="not a readable .npz"):
        npz(path=str(write(tmp_path / "junk.npz", b"PK\x03\x04 garbage")))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        npz(path=str(tmp_path / "single.npy"))


# -------------------------------------------------------------------------------- csv


def write_text(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_header_auto_and_class_labels(tmp_path):
    path = write_text(tmp_path / "t.csv", "a,b,label\n0.5,1,2\n\n1.5,-2,0\n3,4,1\n")
    ds = csv_dataset(path=path)
    assert ds.num_classes == 3 and ds.train.y.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(ds.train.x, [[0.5, 1], [1.5, -2], [3, 4]])
    assert ds.train.x.dtype == np.float32 and ds.train.x.flags.c_contiguous


def test_csv_value_labels_when_cells_are_not_integers(tmp_path):
    path = write_text(tmp_path / "t.csv", "1,2,0.0\n3,4,1.0\n")
    ds = csv_dataset(path=path)
    assert ds.num_classes is None and ds.train.y.shape == (2, 1)
    assert ds.train.y.dtype == np.float32 and ds.train.x.flags.c_contiguous


def test_csv_options_delimiter_label_columns_header_and_test(tmp_path):
    path = write_text(tmp_path / "t.csv", "\ufeff1;2;3;4\n5;6;7;8\n9;10;11;12\n")
    test = write_text(tmp_path / "u.csv", "x;y;p;q\n0;0;1;1\n")
    ds = csv_dataset(
        path=path, test_path=test, label_columns=2, delimiter=";", validation=1, dtype=np.float64
    )
    assert ds.num_classes is None  # several label columns: real targets
    np.testing.assert_array_equal(ds.train.x, [[5, 6], [9, 10]])
    np.testing.assert_array_equal(ds.train.y, [[7, 8], [11, 12]])
    assert len(ds.validation) == 1 and ds.test.y.tolist() == [[1.0, 1.0]]
    ds = csv_dataset(path=path, label_columns=2, delimiter=";", header="yes")
    assert len(ds.train) == 2
    values = csv_dataset(path=write_text(tmp_path / "v.csv", "1,0\n2,1\n"), labels="value")
    assert values.num_classes is None and values.train.y.tolist() == [[0.0], [1.0]]


def test_csv_num_classes_and_class_labels_written_as_floats(tmp_path):
    path = write_text(tmp_path / "t.csv", "1,2,0.0\n3,4,1.0\n")
    ds = csv_dataset(path=path, num_classes=3)
    assert ds.num_classes == 3 and ds.train.y.tolist() == [0, 1]
    assert csv_dataset(path=path, labels="class").num_classes == 2


CSV_ERRORS = {
    "ragged": (
        "a,b,c\n1,2,3\n4,5\n",
        {},
        r":3: 2 columns; expected 3 \(as in the header on line 1",
    ),
    "non-numeric": ("1,2,3\n4,x5,6\n", {}, ":2: column 2: 'x5' is not a number"),
    "empty cell": ("1,2,3\n4,,6\n", {}, ":2: column 2: '' is not a number"),
    "header no": ("a,b\n1,2\n", {"header": "no"}, ":1: column 1: 'a' is not a number"),
    "empty file": ("", {}, "empty file"),
    "blank lines only": ("\n\n", {}, "empty file"),
    "header only": ("a,b\n", {}, "no data rows"),
    "NaN feature": ("1,2,0\n3,nan,1\n", {}, ":2: column 2: non-finite value nan"),
    "inf target": ("1,0.5\n3,-inf\n", {}, ":2: column 2 \\(a label\\): non-finite value -inf"),
    "empty first cell": ("1,,3\n4,5,6\n", {}, ":1: column 2: '' is not a number"),
    "one column": ("1\n2\n", {}, "1 columns but label_columns is 1"),
    "fractional class": ("1,0.5\n", {"labels": "class"}, ":1: label 0.5 is not a whole number"),
    "negative class": ("1,2\n3,-1\n", {}, r":2: class label -1"),
    "class too large": ("1,2\n3,0\n", {"num_classes": 2}, r":1: class label 2 .*expected 0 to 1"),
}


@pytest.mark.parametrize("case", sorted(CSV_ERRORS))
def test_csv_rejects_bad_files(tmp_path, case):
    text, options, fragment = CSV_ERRORS[case]
    path = write_text(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=fragment) as info:
        csv_dataset(path=path, **options)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


def test_csv_rejects_missing_files_and_test_column_mismatch(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        csv_dataset(path=str(tmp_path / "absent.csv"))
    train = write_text(tmp_path / "t.csv", "1,2,0\n")
    test = write_text(tmp_path / "u.csv", "1,0\n")
    with pytest.raises(DataError, match="u.csv: 2 columns but .*t.csv has 3"):
        csv_dataset(path=train, test_path=test)


def test_csv_contradictory_options_are_config_errors(tmp_path):
    path = write_text(tmp_path / "t.csv", "1,2,0\n")
    for options, fragment in [
        ({"labels": "class", "label_columns": 2}, "one label column"),
        ({"labels": "value", "num_classes": 2}, "num_classes applies to class labels"),
        ({"delimiter": ";;"}, "one character"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            DATASETS.build("csv", {"path": path, **options}, "data", dtype=np.float32)


def test_csv_large_file_is_parsed_in_blocks(tmp_path):
    rng = np.random.RandomState(0)
    table = np.column_stack([rng.rand(10000, 3), rng.randint(0, 4, 10000)])
    lines = [",".join(f"{v:.17g}" for v in row[:3]) + f",{int(row[3])}" for row in table]
    lines[9000] = "1,2,oops,3"
    path = write_text(tmp_path / "big.csv", "\n".join(lines[:9000]) + "\n")
    ds = csv_dataset(path=path, dtype=np.float64)
    np.testing.assert_array_equal(ds.train.x, table[:9000, :3])
    path = write_text(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=":9001: column 3: 'oops'"):
        csv_dataset(path=path)


# ------------------------------------------------------------------------- synthetic

GENERATORS = ["linear_sum", "sum_below_one", "two_gaussians", "constant_target", "circle"]


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_generators_are_deterministic_real_targets(name, dtype):
    a = DATASETS.build(name, {}, "data", dtype=dtype)
    b = DATASETS.build(name, {}, "data", dtype=dtype)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert a.num_classes is None and a.test is None
    for arr in (a.train.x, a.train.y):
        assert arr.dtype == dtype and arr.ndim == 2 and arr.flags.c_contiguous
    assert a.train.y.shape == (len(a.train), 1)


def test_linear_sum_matches_the_seed_recipe():
    rdm = np.random.RandomState(23455)
    X = rdm.rand(32, 2)
    Y = [[x1 + x2 + (rdm.rand() / 10.0 - 0.05)] for (x1, x2) in X]
    ds = linear_sum(dtype=np.float64)
    np.testing.assert_array_equal(ds.train.x, X)
    np.testing.assert_array_equal(ds.train.y, Y)  # bit for bit, not approximately
    first = np.random.RandomState(23455).rand(65)  # X's 64 values, then the first noise draw
    assert ds.train.y[0, 0] == first[0] + first[1] + (first[64] / 10.0 - 0.05)
    # noise scales the seed's U(-0.05, 0.05) draw to U(-noise, noise).
    wide = linear_sum(noise=0.5, dtype=np.float64)
    u = np.random.RandomState(23455).rand(96)[64:]
    np.testing.assert_allclose(wide.train.y[:, 0] - X.sum(1), u - 0.5, rtol=0, atol=1e-12)


def test_sum_below_one_matches_the_seed_recipe():
    rng = np.random.RandomState(23455)
    X = rng.rand(32, 2)
    Y = [[int(x0 + x1 < 1)] for (x0, x1) in X]
    ds = sum_below_one()
    np.testing.assert_array_equal(ds.train.x, X.astype(np.float32))
    np.testing.assert_array_equal(ds.train.y, Y)


def test_two_gaussians_matches_the_seed_recipe():
    rng = np.random.RandomState(0)
    x = np.concatenate((rng.normal(-1, 1, 50), rng.normal(3, 1, 50)))
    y = np.concatenate((np.repeat(0.0, 50), np.repeat(1.0, 50)))
    ds = two_gaussians(dtype=np.float64)
    np.testing.assert_array_equal(ds.train.x[:, 0], x)
    np.testing.assert_array_equal(ds.train.y[:, 0], y)


def test_constant_target_matches_the_seed_recipe():
    x = np.random.RandomState(0).normal(1, 0.1, 100)
    ds = constant_target(dtype=np.float64)
    np.testing.assert_array_equal(ds.train.x[:, 0], x)
    assert (ds.train.y == 10.0).all()


def test_circle_matches_the_seed_recipe():
    state = np.random.get_state()
    try:
        np.random.seed(2)
        X = np.random.randn(300, 2)
    finally:
        np.random.set_state(state)
    Y = [[int(x0 * x0 + x1 * x1 < 2)] for (x0, x1) in X]
    ds = circle(dtype=np.float64)
    np.testing.assert_array_equal(ds.train.x, X)
    np.testing.assert_array_equal(ds.train.y, Y)


def test_test_fraction_takes_the_last_rows():
    full = circle(dtype=np.float64)
    ds = circle(test_fraction=0.2, dtype=np.float64)
    assert (len(ds.train), len(ds.test)) == (240, 60)
    np.testing.assert_array_equal(ds.test.x, full.train.x[240:])
    assert ds.test.x.flags.c_contiguous


def test_two_gaussians_test_split_holds_both_classes():
    ds = two_gaussians(test_fraction=0.1)
    assert (len(ds.train), len(ds.test)) == (90, 10)
    assert ds.test.y[:, 0].tolist() == [0.0] * 5 + [1.0] * 5


def test_generator_options_are_validated():
    with pytest.raises(ConfigError, match="test_fraction: must be < 1"):
        DATASETS.build("circle", {"test_fraction": 1.0}, "data", dtype=np.float32)
    with pytest.raises(ConfigError, match="gives 0 test rows"):
        DATASETS.build("linear_sum", {"test_fraction": 0.01}, "data", dtype=np.float32)
    with pytest.raises(ConfigError, match="seed: must be >= 0"):
        DATASETS.build("linear_sum", {"seed": -1}, "data", dtype=np.float32)
