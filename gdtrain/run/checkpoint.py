"""Checkpoints: atomic, verified, pickle-free `.npz` files, a `latest` and a `best` pointer.

A checkpoint is an uncompressed npz holding named arrays (`param/W`, `slot/accum/W`,
`ema/W`, …) and `__meta__`, a UTF-8 JSON document (format version, step, resolved
config and its hash, sha256 of every array). Saving writes a temporary file in the
same directory, fsyncs it, renames it into place, fsyncs the directory, then replaces
the `latest` pointer the same way (and, for a new best with train.keep_best, the `best`
pointer after it), and only then deletes checkpoints beyond `keep`, never one a pointer
names: a crash at any point leaves the previous checkpoint and pointers intact.

Reading treats the file as untrusted (npz.py: no pickle, every size checked before it
is allocated, the zip's records byte for byte); `load` then checks the format version,
the step, and every array against its sha256. The atomic writes are atomic.py's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config.identity import config_hash
from ..errors import CheckpointError, ConfigError, RunDirError
from .atomic import describe_os_error, write_atomic
from .npz import META_KEY, read_npz

FORMAT_VERSION = 1
POINTER = "latest"
BEST = "best"  # names the best-scoring checkpoint (train.keep_best), kept outside the rotation
_NAME = re.compile(r"^ckpt-(\d{8})\.npz$")

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
        os.makedirs(directory, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, **arrays, **{META_KEY: blob}))
        write_pointer(directory, POINTER, path.name)
        if best:
            # after `latest`: a crash between the two leaves `best` on the previous best, which
            # the resume puts right from this checkpoint's metadata (best_step)
            write_pointer(directory, BEST, path.name)
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


def write_pointer(directory: Path, pointer: str, name: str) -> None:
    """Point `pointer` (latest or best) at checkpoint file `name`, atomically."""
    write_atomic(Path(directory) / pointer, lambda f: f.write(name.encode() + b"\n"))


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
            os.unlink(old)
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


class NewerFormatError(CheckpointError):
    """A checkpoint written by a newer gdtrain: intact, just not readable here."""


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
