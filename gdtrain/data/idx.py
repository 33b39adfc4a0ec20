"""Reader for IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), then one big-endian uint32 size per dimension, then the values in
row-major order, big-endian. Files may be gzip-compressed; we detect that by the
gzip magic bytes rather than the file name, because renamed copies are common.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import DataError
from . import file_errors

# Type code -> (big-endian numpy dtype, name used in messages).
IDX_TYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}
MAX_DIMS = 4
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Decode the IDX file at `path` (gzip-compressed or raw) into a numpy array.

    The result is read-only, in native byte order, with the shape the header gives.
    `ndim`, when given, is the number of dimensions the caller expects. Every
    malformed case raises DataError naming the file.
    """
    data = _read_bytes(path)
    return parse_idx(data, str(path), ndim)


def parse_idx(data: bytes, source: str, ndim: int | None = None) -> np.ndarray:
    """Decode IDX bytes; `source` names the origin in error messages."""
    dtype, shape, offset = _parse_header(data, source, ndim)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - offset
    described = f"{'x'.join(map(str, shape))} {IDX_TYPES[data[2]][1]}"
    if got < expected:
        raise DataError(
            f"{source}: truncated: the header promises {described} values ({expected} bytes) "
            f"but only {got} bytes follow; {expected - got} bytes missing"
        )
    if got > expected:
        raise DataError(
            f"{source}: {got - expected} unexpected trailing bytes after the {expected}-byte "
            f"payload of {described} values; expected the file to end there"
        )
    values = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=offset)
    if dtype.itemsize > 1:
        values = values.astype(dtype.newbyteorder("="))
    # Bytes are a view on the decoded buffer (MNIST's 47 MB are not copied): read-only.
    values.flags.writeable = False
    return values.reshape(shape)


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic."""
    with file_errors(path, "an IDX file (.gz or raw)"), open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: gzip stream is truncated or corrupt ({exc}); expected a complete "
            f".gz file: copy or download it again"
        ) from None


def _parse_header(
    data: bytes, source: str, ndim: int | None
) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check the magic number and sizes; return (dtype, shape, payload offset)."""
    if len(data) < 4:
        raise DataError(
            f"{source}: truncated: {len(data)} bytes, but an IDX header needs at least 4"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source}: not an IDX file: first two bytes are 0x{data[0]:02X} 0x{data[1]:02X}, "
            f"expected 0x00 0x00"
        )
    code, dims = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X} ({name})" for c, (_, name) in IDX_TYPES.items())
        raise DataError(f"{source}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if not 1 <= dims <= MAX_DIMS:
        raise DataError(f"{source}: IDX header gives {dims} dimensions; expected 1 to {MAX_DIMS}")
    offset = 4 + 4 * dims
    if len(data) < offset:
        raise DataError(
            f"{source}: truncated: the header declares {dims} dimensions ({offset} header "
            f"bytes) but the file has only {len(data)} bytes"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    if ndim is not None and dims != ndim:
        raise DataError(
            f"{source}: IDX array has {dims} dimensions (shape {shape}); expected {ndim}"
        )
    return np.dtype(IDX_TYPES[code][0]), shape, offset
