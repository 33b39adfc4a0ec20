"""Checkpoints: atomic, verified, pickle-free `.npz` files, a `latest` and a `best` pointer.

A checkpoint is an uncompressed npz holding named arrays (`param/W`, `slot/accum/W`,
`ema/W`, …) and `__meta__`, a UTF-8 JSON document (format version, step, resolved
config and its hash, sha256 of every array). Saving writes a temporary file in the
same directory, fsyncs it, renames it into place, fsyncs the directory, then replaces
the `latest` pointer the same way (and, for a new best with train.keep_best, the `best`
pointer after it), and only then deletes checkpoints beyond `keep`, never one a pointer
names: a crash at any point leaves the previous checkpoint and pointers intact.

Reading treats the file as untrusted: it never unpickles, refuses object dtypes,
unexpected members and headers whose declared size does not match the bytes present,
so a forged header cannot make it allocate memory it does not have.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import CheckpointError, RunDirError

FORMAT_VERSION = 1
META_KEY = "__meta__"
POINTER = "latest"
BEST = "best"  # names the best-scoring checkpoint (train.keep_best), kept outside the rotation
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^ckpt-(\d{8})\.npz$")
_MEMBER = re.compile(r"^[A-Za-z0-9_./-]+\.npy$")

# Fault injection for tests: called with the name of each file operation of a save
# just before it happens; a test makes it raise to simulate a crash or a full disk.
fault_hook: Callable[[str], None] | None = None


def _op(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.npz"


def step_of(path: str | Path) -> int | None:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def array_digest(a: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def write_output(path: Path, write: Callable) -> None:
    """`write_atomic` for a file named on the command line (--out): a failure is bad input
    naming it, and the folder is created."""
    from .errors import ConfigError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, write)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write: {exc.strerror or exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable, what: str | None = None) -> None:
    """Write `path` via a fsynced temporary file and a rename; clean up on failure.

    `what` names the file to the fault-injection hook (a part of a checkpoint save);
    files outside a save (status, config, outputs) pass None and skip the hook.
    """
    op = _op if what is not None else (lambda name: None)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        op(f"open {what}")
        with open(tmp, "wb") as f:
            op(f"write {what}")
            write(f)
            op(f"flush {what}")
            f.flush()
            op(f"fsync {what}")
            os.fsync(f.fileno())
        op(f"rename {what}")
        os.replace(tmp, path)
        op(f"fsync dir after {what}")
        _fsync_dir(path.parent)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def save(directory: str | Path, step: int, arrays: dict[str, np.ndarray], meta: dict,
         keep: int, best: bool = False) -> Path:
    """Atomically write checkpoint `step`, point `latest` (and, when `best`, `best`) at it,
    prune beyond `keep`."""
    directory = Path(directory)
    path = directory / checkpoint_name(step)
    meta = dict(meta, format=FORMAT_VERSION, step=step,
                arrays={k: array_digest(v) for k, v in arrays.items()})
    blob = np.frombuffer(json.dumps(meta, sort_keys=True, allow_nan=False).encode(), np.uint8)
    existed = path.exists()
    try:
        _op("mkdir")
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, **arrays, **{META_KEY: blob}), "checkpoint")
        write_atomic(directory / POINTER, lambda f: f.write(path.name.encode() + b"\n"), "pointer")
        if best:
            # after `latest`: a crash between the two leaves `best` on the previous best, which
            # the resume puts right from this checkpoint's metadata (best_step)
            write_pointer(directory, BEST, path.name, "best pointer")
    except OSError as exc:
        # All or nothing: a checkpoint renamed into place whose pointer could not follow
        # is taken back, so the directory is exactly as before the save (and, on a full
        # disk, its space is returned). A file of that name that predates us stays, and
        # so does one the pointer already names (only the final directory fsync failed).
        pointed = read_pointer(directory) == path.name
        if not existed and not pointed:
            try:
                path.unlink()
            except OSError:
                pass
        state = ("the checkpoint is written but may not be durable" if pointed else
                 "the previous checkpoint and the latest pointer are untouched")
        if pointed and best and read_pointer(directory, BEST) != path.name:
            state = "the checkpoint is written and `latest` names it; `best` still names the previous best"
        raise RunDirError(f"could not save checkpoint {path}: {describe_os_error(exc)}; {state}") from None
    prune(directory, keep)
    return path


def describe_os_error(exc: OSError) -> str:
    """'no space left on device (ENOSPC)': the reason a person can act on, and its errno name."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    name = errno.errorcode.get(exc.errno or 0)
    return f"{reason} ({name})" if name else reason


def write_pointer(directory: Path, pointer: str, name: str, what: str | None = None) -> None:
    """Point `pointer` (latest or best) at checkpoint file `name`, atomically."""
    write_atomic(Path(directory) / pointer, lambda f: f.write(name.encode() + b"\n"), what)


def prune(directory: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (never one `latest` or `best` names).

    Pruning only frees space: a deletion that fails is left for the next save to retry
    and never fails the save that has just succeeded.
    """
    named = {read_pointer(directory), read_pointer(directory, BEST)}
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        if old.name in named:
            continue
        try:
            _op("delete old checkpoint")
            old.unlink()
        except OSError:
            pass


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(step_of(p), p) for p in directory.iterdir() if step_of(p) is not None]
    return [p for _, p in sorted(found)]


def read_pointer(directory: str | Path, pointer: str = POINTER) -> str | None:
    try:
        name = (Path(directory) / pointer).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _NAME.match(name) else None


def clean_temporaries(directory: str | Path) -> list[Path]:
    """Remove temporary files left by a save that was killed; return what was removed."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(TMP_PREFIX):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


# ---------------------------------------------------------------- reading untrusted npz


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


_LOCAL_FIELDS = struct.Struct("<4sHHHHHIIIHH")  # a local header, field by field
_ZIP64_MARK = 0xFFFFFFFF


def _check_local_header(path: Path, fh, info: zipfile.ZipInfo) -> None:
    """Every field of a member's local header must repeat the zip directory's.

    zipfile reads the directory's copy and skips most of the local one, so a byte
    flipped there (the local CRC, the date) would otherwise go unnoticed.
    """
    fh.seek(info.header_offset)
    raw = fh.read(_LOCAL_FIELDS.size)
    fields = _LOCAL_FIELDS.unpack(raw) if len(raw) == _LOCAL_FIELDS.size else None
    if fields is not None:
        magic, version, flags, method, time, date, crc, csize, usize, name_len, extra_len = fields
        year, month, day, hour, minute, second = info.date_time
        sizes = (usize, csize)
        if sizes == (_ZIP64_MARK, _ZIP64_MARK):  # the real sizes are in the zip64 extra field
            fh.seek(name_len, os.SEEK_CUR)  # the name: zipfile compares it with the directory's
            extra = fh.read(extra_len)
            sizes = None
            while len(extra) >= 4:  # (id, length, data) records that fill the field exactly
                kind, length = struct.unpack("<HH", extra[:4])
                if len(extra) < 4 + length:
                    sizes = None
                    break
                if kind == 1:  # zip64: in a local header, both sizes and nothing else
                    sizes = struct.unpack("<QQ", extra[4:20]) if length == 16 else None
                extra = extra[4 + length:]
            if extra:
                sizes = None
        described = flags & 0x08  # sizes and CRC in a data descriptor after the data instead
        if (magic == b"PK\x03\x04" and version == info.extract_version and flags == info.flag_bits
                and method == info.compress_type
                and time == (hour << 11 | minute << 5 | second // 2)
                and date == ((year - 1980) << 9 | month << 5 | day)
                and (described or (crc == info.CRC and sizes == (info.file_size, info.compress_size)))):
            return
    raise CheckpointError(f"{path}: member {info.filename!r} is damaged (its local header disagrees "
                          "with the zip directory)")


class NewerFormatError(CheckpointError):
    """A checkpoint written by a newer gdtrain: intact, just not readable here."""


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
    entry's lengths add up to the directory; each member's local header agrees with its
    directory entry (a writer writes both from the same values). zipfile itself reads a
    member through its directory entry alone and skips most of the rest, so a damaged
    byte there went unnoticed (770 of the 5708 of a small checkpoint). Left unchecked:
    the directory's made-by version and file attributes, which say nothing about the data."""
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
    for info in members:
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


def _reject_constant(token: str):
    raise ValueError(f"non-finite number {token}")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # '1e999' parses to inf without ever saying 'Infinity'
        raise ValueError(f"number {token} is out of range")
    return value


def load(path: str | Path) -> tuple[dict, dict]:
    """(arrays, meta) of a checkpoint after verifying format, hashes and completeness, and
    that a file named for a step (ckpt-NNNNNNNN.npz) holds that step."""
    arrays = read_npz(path, whole_zip=True)
    blob = arrays.pop(META_KEY, None)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise CheckpointError(f"{path}: no metadata; not a gdtrain checkpoint")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: metadata is nested too deeply to be gdtrain's") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), dict):
        raise CheckpointError(f"{path}: metadata lacks the array list")
    version = meta.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: metadata has no valid format version")
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"{path}: checkpoint format {version} is newer than this gdtrain reads "
            f"({FORMAT_VERSION}); upgrade gdtrain"
        )
    if not isinstance(meta.get("step"), int) or meta["step"] < 0:
        raise CheckpointError(f"{path}: metadata has no valid step")
    if step_of(path) not in (None, meta["step"]):
        raise CheckpointError(f"{path}: holds step {meta['step']}, not the step its name says")
    listed = meta["arrays"]
    missing = sorted(set(listed) - set(arrays))
    if missing:
        raise CheckpointError(f"{path}: missing arrays {', '.join(missing)}")
    extra = sorted(set(arrays) - set(listed))
    if extra:
        raise CheckpointError(f"{path}: arrays not in its metadata: {', '.join(extra)}")
    for name, digest in listed.items():
        if array_digest(arrays[name]) != digest:
            raise CheckpointError(f"{path}: array {name!r} fails its sha256 check (damaged)")
    return arrays, meta


def saved_config(path: str | Path, meta: dict) -> dict:
    """The resolved config a checkpoint was trained with; CheckpointError when its metadata
    holds none or it does not match the hash saved beside it."""
    from .config.identity import config_hash  # config pulls in yaml: only when a checkpoint is used

    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: metadata holds no config")
    if meta.get("config_hash") != config_hash(saved):
        raise CheckpointError(f"{path}: the config in its metadata does not match its hash (damaged)")
    return saved


def resolve_path(target: str | Path) -> Path:
    """A checkpoint file from a run directory, its checkpoints/ folder or a file path."""
    target = Path(target)
    if target.is_file():
        return target
    for directory in (target / "checkpoints", target):
        if directory.is_dir():
            name = read_pointer(directory)
            if name and (directory / name).is_file():
                return directory / name
            found = list_checkpoints(directory)
            if found:
                return found[-1]
    if not target.exists():
        raise CheckpointError(f"{target}: no such run directory or checkpoint")
    raise CheckpointError(f"{target}: no checkpoints found")


def select(target: str | Path, which: str | int | None = None) -> Path:
    """The checkpoint `--checkpoint` names: None or "latest" as `resolve_path`, "best" (the
    `best` pointer) or a step number, in run directory `target`; CheckpointError listing
    what exists when there is no such checkpoint."""
    if which is None:
        return resolve_path(target)
    target = Path(target)
    if target.is_file():
        from .errors import ConfigError

        raise ConfigError(f"--checkpoint {which}: {target} is a checkpoint file; give its run directory")
    directory = target / "checkpoints" if (target / "checkpoints").is_dir() else target
    found = list_checkpoints(directory)
    if not found:
        return resolve_path(target)  # says whether the run or its checkpoints are missing
    if which == "latest":
        return resolve_path(target)
    if which == BEST:
        name = read_pointer(directory, BEST)
        if name is None:
            raise CheckpointError(f"{target}: no best checkpoint (the run was not trained with "
                                  f"train.keep_best: true); {_inventory(directory, found)}")
        if not (directory / name).is_file():
            raise CheckpointError(f"{target}: `best` names {name}, which is missing; "
                                  f"{_inventory(directory, found)}")
        return directory / name
    path = directory / checkpoint_name(int(which))
    if not path.is_file():
        raise CheckpointError(f"{target}: no checkpoint of step {which}; {_inventory(directory, found)}")
    return path


def _inventory(directory: Path, found: list[Path]) -> str:
    """'it has checkpoints of steps 10, 20, 30 (latest 30, best 20)', long lists shortened."""
    steps = [str(step_of(p)) for p in found]
    shown = ", ".join(steps) if len(steps) <= 9 else ", ".join(steps[:4] + ["…"] + steps[-4:])
    pointers = [f"{pointer} {step_of(name)}" for pointer in (POINTER, BEST)
                if (name := read_pointer(directory, pointer))]
    return f"it has checkpoints of steps {shown}" + (f" ({', '.join(pointers)})" if pointers else "")


def newest_good(directory: str | Path, warn: Callable[[str], None],
                accept: Callable[[Path, dict, dict], None] | None = None,
                ) -> tuple[Path, dict, dict] | None:
    """The newest checkpoint that verifies, warning about each damaged one skipped.

    Newest by step, not by the `latest` pointer: a save killed between renaming its
    checkpoint into place and replacing the pointer leaves a newer checkpoint that is
    complete (it was fsynced before the rename) and verifies, so no saved progress is
    thrown away. `accept(path, arrays, meta)` may reject a verified checkpoint by
    raising CheckpointError (it is then skipped like a damaged one); any other
    exception it raises stops the search.
    """
    for path in list_checkpoints(directory)[::-1]:
        try:
            arrays, meta = load(path)
            if accept is not None:
                accept(path, arrays, meta)
        except NewerFormatError:
            raise  # not damaged: resuming from an older checkpoint would overwrite it
        except CheckpointError as exc:
            warn(f"skipping damaged checkpoint: {exc}")
            continue
        return path, arrays, meta
    return None
