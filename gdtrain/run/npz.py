"""Reading an .npz file as untrusted input: without pickle, every size checked first.

Checkpoints, model.init.from files and the inputs of `gdtrain predict` are all read here.
Reading never unpickles, refuses object dtypes, unexpected members and headers whose
declared size does not match the bytes present, so a forged header cannot make it
allocate memory it does not have; `whole_zip` also checks the zip's own records byte
for byte (gdtrain's checkpoints).
"""

from __future__ import annotations

import math
import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

META_KEY = "__meta__"  # a checkpoint's metadata member: allowed beside the expected arrays
_MEMBER = re.compile(r"^[A-Za-z0-9_./-]+\.npy$")


def read_npz(path: str | Path, expected: dict[str, tuple] | None = None,
             max_bytes: int = 1 << 32, whole_zip: bool = False) -> dict[str, np.ndarray]:
    """Arrays of an npz file, read without pickle and with every size checked first.

    `expected`, when given, maps array names to required shapes; other names are
    refused. `whole_zip` also checks the zip's headers and end record byte for byte
    (gdtrain's checkpoints; see _check_zip_structure). Raises CheckpointError naming the
    file and the array.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        # one open file for the size check and the reads: a checkpoint pruned while we
        # read it (eval --watch) stays readable instead of vanishing between two calls
        fh = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        zf = zipfile.ZipFile(fh)
    # NotImplementedError: a directory entry claiming a zip version zipfile cannot read
    except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
        fh.close()
        raise CheckpointError(f"{path}: not an npz (zip) file ({exc})") from None
    out: dict[str, np.ndarray] = {}
    total = 0
    with fh, zf:
        _check_members(path, zf.infolist(), expected is not None, os.fstat(fh.fileno()).st_size)
        if whole_zip:
            _check_zip_structure(path, fh, zf.infolist())
        for info in zf.infolist():
            name = info.filename[:-4]
            if expected is not None and name not in expected and name != META_KEY:
                raise CheckpointError(f"{path}: unexpected array {name!r}")
            _check_local_header(path, fh, info)
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                    header_len = f.tell()
                    if dtype.hasobject or dtype.kind not in "biuf":
                        raise CheckpointError(
                            f"{path}: array {name!r} has dtype {dtype}; only plain numbers are allowed"
                        )
                    if any(d < 0 for d in shape):
                        raise CheckpointError(f"{path}: array {name!r} declares shape {tuple(shape)}")
                    if expected is not None and name in expected and tuple(shape) != tuple(expected[name]):
                        raise CheckpointError(f"{path}: array {name!r} has shape {tuple(shape)}, "
                                              f"expected {tuple(expected[name])}")
                    nbytes = math.prod(shape) * dtype.itemsize
                    if info.file_size != header_len + nbytes:
                        raise CheckpointError(
                            f"{path}: array {name!r} declares {nbytes} bytes of data but holds "
                            f"{info.file_size - header_len}"
                        )
                    total += nbytes
                    if total > max_bytes:
                        raise CheckpointError(f"{path}: arrays larger than {max_bytes} bytes in all")
                    data = f.read(nbytes)
            except CheckpointError:
                raise
            # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, RuntimeError,
                    NotImplementedError) as exc:
                raise CheckpointError(f"{path}: array {name!r} is damaged ({exc})") from None
            if len(data) != nbytes:
                raise CheckpointError(f"{path}: array {name!r} is truncated")
            arr = np.frombuffer(data, dtype=dtype)
            arr = arr.reshape(shape, order="F" if fortran else "C")
            out[name] = np.array(arr, order="C")  # writable, owned, C-ordered
    return out


def _check_members(path: Path, members: list[zipfile.ZipInfo], shapes_known: bool, size: int) -> None:
    """Refuse, before reading any data, members that are not plain .npy arrays, names
    given twice (which one would win?), and sizes the file cannot hold.

    An uncompressed member yields no more bytes than it occupies on disk, so when the
    stored sizes add up to at most the file's size, reading it cannot allocate more
    than the file is. A compressed member (np.savez_compressed) may expand, so it is
    accepted only when the caller knows every array's shape, which bounds the bytes;
    gdtrain's own checkpoints are never compressed.
    """
    seen: set[str] = set()
    stored = 0
    for info in members:
        if not _MEMBER.match(info.filename) or ".." in info.filename:
            raise CheckpointError(f"{path}: unexpected member {info.filename!r}; expected only .npy arrays")
        if info.filename in seen:
            raise CheckpointError(f"{path}: member {info.filename!r} appears twice")
        seen.add(info.filename)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise CheckpointError(
                    f"{path}: member {info.filename!r} declares {info.file_size} bytes but occupies "
                    f"{info.compress_size} (forged or damaged)")
            stored += info.compress_size
        elif not shapes_known:
            raise CheckpointError(
                f"{path}: member {info.filename!r} is compressed; gdtrain checkpoints never are")
    if stored > size:
        raise CheckpointError(
            f"{path}: members declare {stored} bytes but the file has {size} (forged or truncated)")


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's structFileHeader
_ZIP64_EXTRA = 0x0001


_END_RECORD = struct.Struct("<4s4H2LH")  # zipfile's structEndArchive


def _check_zip_structure(path: Path, fh, members: list[zipfile.ZipInfo]) -> None:
    """The zip around the arrays, as its writer left it: the end record describes one disk
    holding exactly these members and no comment (gdtrain writes none); each directory
    entry's lengths add up to the directory. With `_check_local_header` (every member,
    every file), this covers every byte zipfile skips: it reads a member through its
    directory entry alone, so a damaged byte elsewhere went unnoticed (770 of the 5708 of
    a small checkpoint). Left unchecked: the directory's made-by version and file
    attributes, which say nothing about the data."""
    fh.seek(-_END_RECORD.size, os.SEEK_END)
    _, disk, cd_disk, here, total, cd_size, _, comment = _END_RECORD.unpack(fh.read(_END_RECORD.size))
    count = len(members) if len(members) < 0xFFFF else 0xFFFF  # zip64 keeps the real count elsewhere
    if (disk, cd_disk, here, total, comment) != (0, 0, count, count, 0):
        raise CheckpointError(f"{path}: the zip end record does not match its {len(members)} "
                              "members (damaged)")
    # zipfile reads the directory leniently (a name length too long for what follows is cut
    # short): the lengths each entry declares must add up to the directory exactly
    end = fh.seek(-_END_RECORD.size, os.SEEK_END)
    if cd_size != 0xFFFFFFFF:  # else zip64: the directory's size is in the zip64 end record
        fh.seek(max(end - cd_size, 0))
        directory = fh.read(cd_size)
        position = 0
        for info in members:
            name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
            lengths = (len(name), len(info.extra), len(info.comment))
            if end < cd_size or len(directory) < position + 34 or \
                    struct.unpack_from("<3H", directory, position + 28) != lengths:
                raise CheckpointError(f"{path}: member {info.filename!r}: its directory entry is damaged")
            position += 46 + sum(lengths)
        if position != cd_size:
            raise CheckpointError(f"{path}: the zip directory holds more than its members (damaged)")


def _zip64_sizes(extra: bytes) -> tuple[int | None, int | None]:
    """(uncompressed, compressed) sizes from a local header's zip64 record; (None, None)
    unless the extra field is whole records, one of them a local zip64 record (16 bytes)."""
    sizes = (None, None)
    while extra:
        if len(extra) < 4:
            return None, None
        kind, size = struct.unpack("<HH", extra[:4])
        if len(extra) < 4 + size:
            return None, None
        if kind == _ZIP64_EXTRA:
            if size != 16:
                return None, None
            sizes = struct.unpack("<QQ", extra[4:20])
        extra = extra[4 + size:]
    return sizes


def _check_local_header(path: Path, fh, info: zipfile.ZipInfo) -> None:
    """Every field of a member's local header must repeat its zip directory entry (a writer
    writes both from the same values).

    zipfile reads the directory's copy and skips most of the local one, so a byte flipped
    there (the local CRC, the date, the sizes) would otherwise go unnoticed.
    """
    if info.volume != 0:
        raise CheckpointError(f"{path}: member {info.filename!r} claims another disk (damaged)")
    try:
        fh.seek(info.header_offset)
    except (OSError, ValueError, OverflowError):  # a damaged offset: before the file's start
        raise CheckpointError(f"{path}: member {info.filename!r} has no header at its offset "
                              "(damaged)") from None
    head = fh.read(_LOCAL_HEADER.size)
    if len(head) != _LOCAL_HEADER.size:
        raise CheckpointError(f"{path}: member {info.filename!r} has a truncated header (damaged)")
    (magic, version, system, flags, method, time, date, crc, csize, usize,
     name_len, extra_len) = _LOCAL_HEADER.unpack(head)
    fh.seek(name_len, os.SEEK_CUR)
    extra = fh.read(extra_len)
    if (usize, csize) == (0xFFFFFFFF, 0xFFFFFFFF):  # the sizes are in the zip64 record
        usize, csize = _zip64_sizes(extra)
    y, mo, d, h, mi, sec = info.date_time
    expected = (zipfile.stringFileHeader, info.extract_version, info.reserved, info.flag_bits,
                info.compress_type, (h << 11) | (mi << 5) | (sec // 2), ((y - 1980) << 9) | (mo << 5) | d)
    got = (magic, version, system, flags, method, time, date)
    if flags & 0x08 == 0:  # without a data descriptor the header holds the CRC and sizes
        expected += (info.CRC, info.compress_size, info.file_size)
        got += (crc, csize, usize)
    if got != expected or len(extra) != extra_len:
        raise CheckpointError(f"{path}: member {info.filename!r}: its local header disagrees with "
                              "the zip directory (damaged)")
