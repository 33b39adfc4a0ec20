"""MNIST and Fashion-MNIST from the four IDX files, with a decoded-array cache.

Decoding the gzip files takes most of a load (about half a second for MNIST), so the
decoded uint8 arrays are cached in an uncompressed .npz next to the data. The cache
key is a sha256 over each source file's content plus `CACHE_VERSION`: ~8 ms for
MNIST's 11 MB of gzip (~30 ms raw), against ~0.5 s to decode. Size and modification
time would be cheaper but miss a same-sized file put in place with its old mtime
(`cp -p`, `tar x`, `rsync -a`): Fashion-MNIST's raw files have exactly MNIST's sizes.
The float conversion stays out of the cache because the dtype is a run option (and the
features stay bytes in memory: see `Split.coded`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from ..core.dataset import Dataset, Split
from ..core.registry import NonNegativeInt, PathText
from ..errors import DataError
from . import DATASETS, hold_out
from .idx import read_idx

CACHE_VERSION = 2  # 2: keyed by content instead of size and mtime
CACHE_PREFIX = ".gdtrain-cache-"
NUM_CLASSES = 10
# Features are pixel byte·PIXEL_SCALE, computed in the run's dtype (`data.decode`), as TF1's
# read_data_sets computed them, so they match it bit for bit; `predict` reads IDX bytes the same way.
PIXEL_SCALE = 1.0 / 255.0

# Part -> base names in both styles in circulation: the original distribution's
# "train-images-idx3-ubyte" and the "train-images.idx3-ubyte" of some mirrors.
# Each may carry ".gz"; the raw file is preferred when both exist (no gunzip needed).
PARTS: dict[str, tuple[str, str]] = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@DATASETS.register("mnist")
def mnist(
    dir: PathText = "data/mnist", validation: NonNegativeInt = 0, dtype: DTypeLike = np.float32
) -> Dataset:
    """MNIST handwritten digits: 60,000 training and 10,000 test 28x28 images, 10 classes.

    Pixels are scaled to [0, 1] and flattened to 784 features; labels are digits 0-9.
    The four IDX files may be .gz or raw, named train-images-idx3-ubyte or
    train-images.idx3-ubyte (and likewise for the labels and t10k files).

    dir: directory holding the four IDX files; a relative path is relative to the config file's
      directory (to the working directory when given with --set or left at the default)
    validation: move the first N training images into a validation split (TF1 used 5000)
    """
    how = ("get the MNIST files from http://yann.lecun.com/exdb/mnist/ (or TF1's mirror, "
           f"https://storage.googleapis.com/cvdf-datasets/mnist/) and copy them into {dir}, gzipped or not")
    arrays = load_idx_dir(dir, how)
    names = [str(d) for d in range(NUM_CLASSES)]
    return hold_out(_to_dataset("mnist", arrays, dtype, names), validation)


@DATASETS.register("fashion_mnist")
def fashion_mnist(
    dir: PathText = "data/fashion_mnist",
    validation: NonNegativeInt = 0,
    dtype: DTypeLike = np.float32,
) -> Dataset:
    """Fashion-MNIST (Zalando): 60,000 training and 10,000 test 28x28 clothing images, 10 classes.

    Same file format and names as MNIST; pixels scaled to [0, 1], flattened to 784.

    dir: directory holding the four IDX files, relative like mnist's
    validation: move the first N training images into a validation split
    """
    how = (
        "download them from https://github.com/zalandoresearch/fashion-mnist "
        f"(folder data/fashion) into {dir}/"
    )
    arrays = load_idx_dir(dir, how)
    return hold_out(_to_dataset("fashion_mnist", arrays, dtype, FASHION_CLASSES), validation)


def load_idx_dir(directory: str | os.PathLike, how_to_get: str) -> dict[str, np.ndarray]:
    """Decoded uint8 arrays x_train, y_train, x_test, y_test from an MNIST-style directory.

    Uses the cache when it matches the source files, otherwise decodes and refreshes it.
    `how_to_get` ends the message raised when files are missing.
    """
    sources = find_files(directory, how_to_get)
    cache = Path(directory) / f"{CACHE_PREFIX}{cache_key(sources)}.npz"
    arrays = _load_cache(cache)
    if arrays is None:
        arrays = {part: read_idx(path) for part, path in sources.items()}
        _check_arrays(arrays, {part: str(p) for part, p in sources.items()})
        _save_cache(cache, arrays)
    return arrays


def find_files(directory: str | os.PathLike, how_to_get: str) -> dict[str, Path]:
    """The path of each part; DataError listing every missing one and what was tried."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: is a file; expected a directory holding the four IDX files")
    found, missing = {}, []
    for part, stems in PARTS.items():
        candidates = [root / (stem + ext) for stem in stems for ext in ("", ".gz")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            missing.append(" or ".join(f"{stem}[.gz]" for stem in stems))
        else:
            found[part] = path
    if missing:
        where = str(root) if root.is_absolute() else f"{root} (under {Path.cwd()})"
        problem = "missing" if root.is_dir() else "no such directory; it should hold"
        raise DataError(f"{where}: {problem} {'; '.join(missing)}; {how_to_get}")
    return found


def cache_key(sources: dict[str, Path]) -> str:
    """Hex digest over the format version and each source's name and content."""
    h = hashlib.sha256(f"gdtrain idx cache v{CACHE_VERSION}\n".encode())
    for part in PARTS:
        path = sources[part]
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        h.update(f"{part}\t{path.name}\t{digest}\n".encode())
    return h.hexdigest()[:32]


def _check_arrays(arrays: dict[str, np.ndarray], names: dict[str, str]) -> None:
    """Shapes, dtypes, matching counts and label range; `names` label each array's origin."""
    for part, arr in arrays.items():
        want = 3 if part.startswith("x") else 1
        if arr.ndim != want:
            raise DataError(f"{names[part]}: array has shape {arr.shape}; expected {want}-D")
        if arr.dtype != np.uint8:
            raise DataError(f"{names[part]}: values are {arr.dtype}; expected unsigned bytes")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise DataError(
                f"{names[f'y_{split}']}: {len(y)} labels but {names[f'x_{split}']} has "
                f"{len(x)} images; expected one label per image"
            )
        bad = np.flatnonzero(y >= NUM_CLASSES)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{names[f'y_{split}']}: label {int(y[i])} at index {i} "
                f"({bad.size} bad in all); expected 0 to {NUM_CLASSES - 1}"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        tr, te = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
        raise DataError(
            f"{names['x_test']}: images are {te[0]}x{te[1]} but the training images are "
            f"{tr[0]}x{tr[1]}; expected the same size"
        )


def _to_dataset(
    name: str, arrays: dict[str, np.ndarray], dtype: DTypeLike, class_names: list[str]
) -> Dataset:
    def split(part: str) -> Split:
        images = arrays[f"x_{part}"]
        # Pixels stay bytes, decoded to byte·PIXEL_SCALE in dtype when used.
        codes = images.reshape(len(images), -1)
        return Split.coded(codes, PIXEL_SCALE, dtype, arrays[f"y_{part}"].astype(np.int64))

    return Dataset(
        name=name,
        train=split("train"),
        test=split("test"),
        num_classes=NUM_CLASSES,
        class_names=class_names,
    )


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent or unusable (then it gets rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {part: f[part] for part in PARTS}
        _check_arrays(arrays, {part: f"{path}[{part}]" for part in PARTS})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DataError):
        return None
    return arrays


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename); skip silently if the directory is read-only."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=CACHE_PREFIX, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        tmp = None
        _remove_stale_caches(path)
    except OSError:
        pass  # a cache is an optimisation: an unwritable or full disk must not fail a run
    finally:
        if tmp is not None:
            _unlink_quietly(Path(tmp))


def _remove_stale_caches(current: Path) -> None:
    """Drop caches for earlier versions of the files, and the temporaries of cache writes
    that were killed: each holds ~55 MB for MNIST.

    A temporary may also be another process's write in progress (two runs loading new
    files at once): that write then fails as quietly as any failed cache write, and at
    worst a later load decodes the files again.
    """
    folder = current.parent
    for old in [*folder.glob(f"{CACHE_PREFIX}*.npz"), *folder.glob(f"{CACHE_PREFIX}*.tmp")]:
        if old.name != current.name:
            _unlink_quietly(old)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
