"""Features kept as integer codes with a scale (MNIST's bytes): the same bits as float features."""

from __future__ import annotations

import numpy as np
import pytest

from gdtrain.core.batching import BatchStream
from gdtrain.core.dataset import Dataset, Split, decode, head
from gdtrain.data import hold_out

SCALE = 1.0 / 255.0


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def _codes(n=37, d=6):
    codes = np.random.default_rng(3).integers(0, 256, (n, d)).astype(np.uint8)
    codes[0] = np.arange(d) * 51  # 0 and 255 among them
    return codes


def _as_floats(codes, dtype):
    # the conversion MNIST used before the codes were kept: a float copy times 1/255
    x = codes.astype(dtype)
    np.multiply(x, SCALE, out=x)
    return x


def test_every_byte_decodes_to_the_float_conversion(dtype):
    codes = np.arange(256, dtype=np.uint8).reshape(1, -1)
    got = decode(codes, SCALE, np.empty(codes.shape, dtype))
    assert got.dtype == dtype
    assert np.array_equal(got, _as_floats(codes, dtype))
    assert got[0, 0] == 0 and got[0, -1] == 1


def test_coded_split_decodes_x_once_and_counts_stored_bytes(dtype):
    codes = _codes()
    split = Split.coded(codes, SCALE, dtype, np.arange(len(codes)))
    assert len(split) == 37 and split.num_features == 6 and split.dtype == dtype
    assert split.nbytes == codes.nbytes + split.y.nbytes  # the bytes, not a float copy
    assert np.array_equal(split.x, _as_floats(codes, dtype))
    assert split.x is split.x


def test_rows_keep_the_codes_and_plain_splits_unchanged(dtype):
    codes = _codes()
    coded = Split.coded(codes, SCALE, dtype, np.arange(len(codes)))
    part = coded.rows(5, 9)
    assert part.scale == SCALE and np.shares_memory(part.stored, codes)
    assert np.array_equal(part.x, _as_floats(codes[5:9], dtype))
    assert np.array_equal(part.y, np.arange(5, 9))
    plain = Split(_as_floats(codes, dtype), np.arange(len(codes)))
    assert plain.scale is None and plain.stored is plain.x
    assert np.array_equal(plain.rows(None, 3).x, plain.x[:3])


def test_hold_out_and_head_leave_training_codes_undecoded():
    codes = _codes()
    ds = Dataset("bytes", Split.coded(codes, SCALE, np.float32, np.arange(len(codes)) % 3), num_classes=3)
    ds = hold_out(ds, 7)
    assert len(ds.validation) == 7 and len(ds.train) == 30
    assert ds.input_dim == 6
    assert ds.train._x is None  # nothing decoded the 30 training rows
    small = head(ds, 4, 2)
    assert np.array_equal(small.train.x, _as_floats(codes[7:11], np.float32))


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_from_codes_equal_batches_from_floats(dtype, shuffle):
    codes = _codes()
    y = np.arange(len(codes))
    from_codes = BatchStream(Split.coded(codes, SCALE, dtype, y), 10, seed=4, shuffle=shuffle)
    from_floats = BatchStream(Split(_as_floats(codes, dtype), y), 10, seed=4, shuffle=shuffle)
    for step in range(9):  # crosses epoch boundaries (37 rows, batches of 10)
        xc, yc = from_codes.batch(step)
        xf, yf = from_floats.batch(step)
        assert xc.dtype == dtype
        assert np.array_equal(xc, xf) and np.array_equal(yc, yf)


def test_mnist_keeps_its_pixels_as_bytes(tmp_path):
    from test_data import make_mnist_dir

    from gdtrain.data import mnist

    arrays = make_mnist_dir(tmp_path)
    ds = mnist.mnist(dir=str(tmp_path), validation=2)
    for split in (ds.train, ds.validation, ds.test):
        assert split.stored.dtype == np.uint8 and split.scale == SCALE and split.dtype == np.float32
    images = arrays["train-images"].reshape(6, 6)
    assert np.array_equal(ds.train.x, _as_floats(images[2:], np.float32))
