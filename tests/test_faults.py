"""Crashes at every file operation of a save, damaged checkpoints, stale temporary files,
a full or read-only disk, an unwritable run directory, and the one-writer lock."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from file_faults import inject
from resume_helpers import (
    Recorder,
    assert_same_state,
    checkpoint_arrays,
    cut_back,
    make_config,
    run,
    write_yaml,
)

from gdtrain.errors import CheckpointError
from gdtrain.run import atomic, checkpoint
from gdtrain.run.rundir import RunDir

# 30 steps, a checkpoint every 5, the newest 2 kept: the third save (step 15) is the
# first that also prunes, so it performs every kind of file operation a save has.
FAULTS = {"train": {"checkpoint_every": 5, "keep_checkpoints": 2, "log_every": 5}}
CRASH_SAVE = 3  # the save of step 15


class Crash(BaseException):
    """What kill -9 does to the code after it: nothing runs, no handler catches it."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-reference")
    run(make_config(root, "ref", FAULTS))
    return checkpoint_arrays(root / "ref", 30)


@pytest.fixture(scope="module")
def save_operations(tmp_path_factory):
    """The names of the file operations one save performs, in order, seen via file_faults.inject."""
    root = tmp_path_factory.mktemp("faults-ops")
    seen: list[list[str]] = []

    def record(op: str) -> None:
        if op == "mkdir":
            seen.append([])
        seen[-1].append(op)

    stop = inject(record)
    try:
        run(make_config(root, "ref", FAULTS))
    finally:
        stop()
    return seen[CRASH_SAVE - 1]


def temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for d in (run_dir, run_dir / "checkpoints") if d.is_dir()
                  for p in d.iterdir() if p.name.startswith(atomic.TMP_PREFIX))


# What the issue describes, in order; the test below checks the hook sees exactly these,
# so that the crash test (parametrized over what the hook saw) misses none.
SAVE_OPERATIONS = [
    "mkdir",
    "open checkpoint", "write checkpoint", "flush checkpoint", "fsync checkpoint",
    "rename checkpoint", "fsync dir after checkpoint",
    "open pointer", "write pointer", "flush pointer", "fsync pointer",
    "rename pointer", "fsync dir after pointer",
    "delete old checkpoint",
]


def test_a_save_performs_the_operations_the_design_describes(save_operations):
    assert save_operations == SAVE_OPERATIONS


def _crash_at(operation: str, live: Path, disk_copy: Path):
    """A fault hook that, at `operation` of the CRASH_SAVE-th save, copies run directory
    `live` as it is on disk at that instant (what kill -9 would leave) and then 'dies'."""
    saves = 0

    def hook(op: str) -> None:
        nonlocal saves
        saves += op == "mkdir"
        if saves == CRASH_SAVE and op == operation:
            shutil.copytree(live, disk_copy)
            raise Crash(operation)

    return hook


@pytest.mark.parametrize("index", range(len(SAVE_OPERATIONS)), ids=SAVE_OPERATIONS)
def test_a_crash_at_any_file_operation_of_a_save_resumes_bit_identical(
        tmp_path, monkeypatch, reference, save_operations, index):
    operation = save_operations[index]
    disk = tmp_path / "disk" / "ref"
    stop = inject(_crash_at(operation, tmp_path / "live" / "ref", disk), monkeypatch)
    with pytest.raises(Crash):
        run(make_config(tmp_path / "live", "ref", FAULTS))
    stop()

    left = temporaries(disk)
    ckpts = disk / "checkpoints"
    renamed = save_operations.index(operation) > save_operations.index("rename checkpoint")
    # before its rename the new checkpoint exists only under a temporary name
    assert (ckpts / "ckpt-00000015.npz").exists() == renamed
    assert checkpoint.read_pointer(ckpts) in ("ckpt-00000010.npz", "ckpt-00000015.npz")
    if operation in ("write checkpoint", "flush checkpoint", "fsync checkpoint", "rename checkpoint"):
        assert any(name.startswith(".tmp-ckpt-00000015.npz") for name in left)

    rec = Recorder()
    summary = run(make_config(tmp_path / "disk", "ref", FAULTS), rec)
    assert summary["resumed_from"] == (15 if renamed else 10), operation
    assert_same_state(summary["trainer"].state_arrays(), reference, f"crash at {operation}")
    assert temporaries(disk) == []
    for name in left:
        assert any(name in w and "interrupted save" in w for w in rec.warnings)
    assert not [w for w in rec.warnings if "damaged" in w]


# ------------------------------------------------------------------ damaged checkpoints


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_array_byte(path: Path) -> None:
    """Flip one bit inside an array's data, keeping the zip's own checks intact: only the
    per-array sha256 can notice. The zip is rewritten so that its CRCs match again."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    raw = bytearray(members["param/W1.npy"])
    raw[-3] ^= 0x10
    members["param/W1.npy"] = bytes(raw)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _flip_byte_anywhere(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))


def _drop_array(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    del members["ema/W2.npy"]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _tamper_config(path: Path) -> None:
    """Arrays intact, but the config stored beside them no longer matches its hash."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes())
    meta["config"]["optimizer"]["learning_rate"] = 0.3
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8))
    members["__meta__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _wrong_step(path: Path) -> None:
    """A whole, valid checkpoint under another step's name."""
    shutil.copyfile(path.with_name(checkpoint.checkpoint_name(15)), path)


DAMAGE = {"truncated": _truncate, "empty": _empty, "array bit flipped": _flip_array_byte,
          "byte flipped": _flip_byte_anywhere, "array missing": _drop_array, "renamed": _wrong_step,
          "config tampered": _tamper_config}


KEEP_ALL = {"train": {"checkpoint_every": 5, "keep_checkpoints": 10}}
ONE_SAVE = {"train": {"checkpoint_every": 0}}  # for tests about something else than saving


@pytest.fixture(scope="module")
def every_five(tmp_path_factory):
    """A finished run with checkpoints 5, 10, …, 30 all kept."""
    root = tmp_path_factory.mktemp("every-five")
    run(make_config(root, "ref", KEEP_ALL))
    return root / "ref"


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_good_one_used(
        tmp_path, every_five, reference, kind):
    run_dir = cut_back(every_five, tmp_path / "ref", 20)
    damaged = run_dir / "checkpoints" / "ckpt-00000020.npz"
    DAMAGE[kind](damaged)
    if kind not in ("renamed", "config tampered"):  # arrays whole: only a resume's checks see it
        with pytest.raises(CheckpointError):
            checkpoint.load(damaged)
    rec = Recorder()
    summary = run(make_config(tmp_path, "ref", KEEP_ALL), rec)
    assert summary["resumed_from"] == 15
    assert len(rec.warnings) == 1 and "ckpt-00000020.npz" in rec.warnings[0], rec.warnings
    assert_same_state(summary["trainer"].state_arrays(), reference, kind)


def test_a_flipped_byte_in_any_local_zip_header_is_damage(every_five, tmp_path):
    """zipfile reads the zip directory and skips most of each member's local header (its
    CRC, date, sizes): a byte flipped there must still fail the load. Found when the
    checkpoints grew and the "byte flipped" case above landed on a local CRC."""
    import zipfile

    good = every_five / "checkpoints" / "ckpt-00000020.npz"
    data = good.read_bytes()
    with zipfile.ZipFile(good) as zf:
        headers = [(info.header_offset, 30 + len(info.filename) + 20) for info in zf.infolist()]
    bad = tmp_path / "ckpt-00000020.npz"
    for start, length in headers:
        for offset in range(start, start + length):
            damaged = bytearray(data)
            damaged[offset] ^= 0x01
            bad.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointError):
                checkpoint.load(bad)


def test_when_no_checkpoint_is_good_the_run_stops_and_touches_nothing(tmp_path, every_five, cli):
    run_dir = cut_back(every_five, tmp_path / "runs" / "ref", 20)
    for i, path in enumerate(checkpoint.list_checkpoints(run_dir / "checkpoints")):
        list(DAMAGE.values())[i % len(DAMAGE)](path)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock")
    before = {p: p.read_bytes() for p in files}
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", KEEP_ALL)
    code, out, err = cli("run", config, "-q")
    assert code == 2
    assert "no usable checkpoint" in err and "Traceback" not in err
    for step in (5, 10, 15, 20):
        assert f"ckpt-{step:08d}.npz" in err  # each damaged file is named in a warning
    assert sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock") == files
    assert {p: p.read_bytes() for p in files} == before
    code, out, err = cli("verify", run_dir)
    assert code == 1 and "4 damaged" in out


def test_stale_temporary_files_are_ignored_then_removed(tmp_path, every_five, reference):
    """Temporaries of killed saves, even one holding a complete newer checkpoint, are
    never read; the next run removes them (and the metrics rewrite's too)."""
    run_dir = cut_back(every_five, tmp_path / "ref", 20)
    ckpts = run_dir / "checkpoints"
    shutil.copyfile(every_five / "checkpoints" / "ckpt-00000030.npz", ckpts / ".tmp-ckpt-00000030.npz.4242")
    (ckpts / ".tmp-ckpt-00000025.npz.4243").write_bytes(b"PK\x03\x04 torn")
    (ckpts / ".tmp-latest.4243").write_bytes(b"ckpt-00000025.npz\n")
    (run_dir / ".tmp-metrics.jsonl.4244").write_text('{"step": 1')
    rec = Recorder()
    summary = run(make_config(tmp_path, "ref", KEEP_ALL), rec)
    assert summary["resumed_from"] == 20
    assert temporaries(run_dir) == []
    assert len([w for w in rec.warnings if "interrupted save" in w]) == 4
    assert_same_state(summary["trainer"].state_arrays(), reference)


# ------------------------------------------------------------------ full or read-only disk


def _fail_with(code: int, operation: str):
    saves = 0

    def hook(op: str) -> None:
        nonlocal saves
        saves += op == "mkdir"
        if saves == CRASH_SAVE and op == operation:
            raise OSError(code, os.strerror(code))

    return hook


@pytest.mark.parametrize("code, operation", [
    (errno.ENOSPC, "open checkpoint"),
    (errno.ENOSPC, "write checkpoint"),
    (errno.ENOSPC, "fsync checkpoint"),
    (errno.ENOSPC, "rename checkpoint"),
    (errno.ENOSPC, "write pointer"),
    (errno.ENOSPC, "rename pointer"),
    (errno.EACCES, "open checkpoint"),
    (errno.EROFS, "open checkpoint"),
    (errno.EROFS, "open pointer"),
], ids=lambda v: errno.errorcode[v] if isinstance(v, int) else v)
def test_a_failed_save_keeps_the_previous_checkpoint_and_pointer(
        tmp_path, cli, monkeypatch, reference, code, operation):
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", FAULTS)
    ckpts = tmp_path / "runs" / "ref" / "checkpoints"
    stop = inject(_fail_with(code, operation), monkeypatch)
    exit_code, _, err = cli("run", config, "-q")
    assert exit_code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(ckpts / "ckpt-00000015.npz") in err
    reason = "no space left on device" if code == errno.ENOSPC else os.strerror(code)
    assert reason in err and errno.errorcode[code] in err
    # the directory is exactly as the previous save left it
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt-00000005.npz", "ckpt-00000010.npz", "latest"]
    assert checkpoint.read_pointer(ckpts) == "ckpt-00000010.npz"
    checkpoint.load(ckpts / "ckpt-00000010.npz")
    assert temporaries(tmp_path / "runs" / "ref") == []
    status = json.loads((tmp_path / "runs" / "ref" / "status.json").read_text())
    assert status["status"] == "failed" and "ckpt-00000015.npz" in status["error"]
    # space back: the same command resumes from step 10 and ends where it should
    stop()
    exit_code, out, err = cli("run", config, "-q")
    assert exit_code == 0, err
    assert_same_state(checkpoint_arrays(tmp_path / "runs" / "ref"), reference)


def test_pruning_that_fails_does_not_fail_the_save(tmp_path, monkeypatch, reference):
    def hook(op: str) -> None:
        if op == "delete old checkpoint":
            raise PermissionError(errno.EACCES, "Permission denied")

    inject(hook, monkeypatch)
    run(make_config(tmp_path, "ref", FAULTS))
    # hook raises before unlink, so nothing was pruned, and nothing failed
    assert len(checkpoint.list_checkpoints(tmp_path / "ref" / "checkpoints")) == 6
    assert_same_state(checkpoint_arrays(tmp_path / "ref"), reference)


def test_an_unwritable_run_directory_is_refused_before_the_first_step(tmp_path, cli):
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", ONE_SAVE)
    run_dir = tmp_path / "runs" / "ref"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoints").write_text("a file where the checkpoints directory should be")
    code, _, err = cli("run", config, "-q")
    assert code == 2 and "not writable" in err and str(run_dir / "checkpoints") in err
    assert not (run_dir / "metrics.jsonl").exists()  # no step was taken
    (tmp_path / "blocked").write_text("a file, not a directory")
    config = write_yaml(tmp_path / "c2.yaml", tmp_path / "blocked", "ref")
    code, _, err = cli("run", config, "-q")
    assert code == 2 and "not writable" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_run_directory_is_refused_before_the_first_step(tmp_path, cli):
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", ONE_SAVE)
    (tmp_path / "runs" / "ref" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "ref" / "checkpoints").chmod(0o555)
    try:
        code, _, err = cli("run", config, "-q")
    finally:
        (tmp_path / "runs" / "ref" / "checkpoints").chmod(0o755)
    assert code == 2 and "not writable" in err and "Permission denied" in err


# ------------------------------------------------------------------ one writer per run


def test_a_second_run_on_a_locked_directory_exits_naming_the_holder(tmp_path, cli):
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", ONE_SAVE)
    holder = RunDir(tmp_path / "runs" / "ref")
    holder.ensure_writable()
    holder.lock()
    try:
        code, _, err = cli("run", config, "-q")
    finally:
        holder.unlock()
    assert code == 2 and f"pid {os.getpid()}" in err and "in use" in err
    assert not (tmp_path / "runs" / "ref" / "metrics.jsonl").exists()
    code, _, err = cli("run", config, "-q")
    assert code == 0, err


@pytest.mark.parametrize("removed", ["lock file", "run directory"])
def test_a_lock_taken_on_a_file_removed_meanwhile_is_taken_again(tmp_path, monkeypatch, removed):
    """A refused new run removes its .lock (and directory) while still holding the lock. A
    process that opened the file just before and locks it after must not trust that lock,
    which guards a file no longer in the directory: it locks the run's new .lock."""
    import fcntl

    from gdtrain.run import rundir

    rd = RunDir(tmp_path / "runs" / "ref")
    rd.ensure_writable()
    real_flock, calls = fcntl.flock, []

    def flock(fd, operation):
        if not calls:  # between this process's open and its flock, the refused run cleans up
            (rd.path / ".lock").unlink()
            if removed == "run directory":
                rd.checkpoints.rmdir()
                rd.path.rmdir()
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(rundir.fcntl, "flock", flock)
    rd.lock()
    monkeypatch.undo()
    try:
        assert len(calls) == 2 and rd.checkpoints.is_dir()
        other = os.open(rd.path / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the run's lock file is the one held
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        rd.unlock()


def test_a_run_refused_because_another_holds_the_lock_removes_nothing(tmp_path, cli):
    """Only the lock holder takes back a new directory: the holder's files stay."""
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", ONE_SAVE)
    holder = RunDir(tmp_path / "runs" / "ref")
    holder.ensure_writable()
    holder.lock()
    try:
        held = os.stat(holder.path / ".lock").st_ino
        code, _, err = cli("run", config, "-q", "--set", "train.batch_size=1000")
        assert code == 2 and "in use" in err
        assert os.stat(holder.path / ".lock").st_ino == held and holder.checkpoints.is_dir()
    finally:
        holder.unlock()


HOLD_LOCK = """
import sys, time
from gdtrain.run.rundir import RunDir
rd = RunDir(sys.argv[1]); rd.ensure_writable(); rd.lock()
print("locked", flush=True)
time.sleep(120)
"""


def test_the_lock_names_another_process_and_dies_with_it(tmp_path, cli):
    """Held by a live process: refused, naming its pid. That process killed with -9:
    the kernel drops its lock, and the next run proceeds."""
    config = write_yaml(tmp_path / "c.yaml", tmp_path / "runs", "ref", ONE_SAVE)
    other = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "runs" / "ref")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"
        code, _, err = cli("run", config, "-q")
        assert code == 2 and f"pid {other.pid}" in err
    finally:
        other.kill()
        other.wait()
    assert (tmp_path / "runs" / "ref" / ".lock").read_text().strip() == str(other.pid)  # left behind
    code, _, err = cli("run", config, "-q")
    assert code == 0, err


def test_describe_os_error_names_the_errno():
    assert atomic.describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == \
        "no space left on device (ENOSPC)"
    assert atomic.describe_os_error(OSError(errno.EROFS, os.strerror(errno.EROFS))) == \
        f"{os.strerror(errno.EROFS)} (EROFS)"


def _directory_fields_of_no_consequence(raw: bytes) -> set[int]:
    """Byte offsets of the central directory's made-by version and file attributes: fields
    that say nothing about where the data is or what it holds, so flipping them harms nothing."""
    import io
    import struct
    import zipfile

    out: set[int] = set()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        offset = zf.start_dir
        for _ in zf.infolist():
            assert raw[offset:offset + 4] == b"PK\x01\x02"
            name, extra, comment = struct.unpack("<3H", raw[offset + 28:offset + 34])
            out |= {offset + 4, offset + 5} | set(range(offset + 36, offset + 42))
            offset += 46 + name + extra + comment
    return out


def _member_data(raw: bytes) -> set[int]:
    """Byte offsets of the members' contents (the .npy files), as their local headers say."""
    import io
    import struct
    import zipfile

    out: set[int] = set()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for info in zf.infolist():
            name, extra = struct.unpack("<2H", raw[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name + extra
            out |= set(range(start, start + info.compress_size))
    return out


def test_every_byte_of_a_checkpoint_is_covered(every_five, tmp_path):
    """Flip a byte of a checkpoint: load() refuses the copy with a CheckpointError (never
    another exception), except where the byte is a directory field of no consequence. Every
    byte of the zip structure is tried, and every 31st of the members' contents (those are
    covered by CRCs and sha256 digests already). Before the zip structure was checked, 770
    of a 5708-byte checkpoint's positions passed (local headers, zip64 records, the end
    record) and 13 raised NotImplementedError."""
    source = every_five / "checkpoints" / "ckpt-00000020.npz"
    raw = source.read_bytes()
    harmless = _directory_fields_of_no_consequence(raw)
    data = _member_data(raw)
    damaged = tmp_path / "ckpt-00000020.npz"
    passed = []
    for i in [i for i in range(len(raw)) if i not in data or i % 31 == 0]:
        copy = bytearray(raw)
        copy[i] ^= 0xFF
        damaged.write_bytes(copy)
        try:
            checkpoint.load(damaged)
        except CheckpointError:
            continue
        passed.append(i)
    assert set(passed) <= harmless, sorted(set(passed) - harmless)
