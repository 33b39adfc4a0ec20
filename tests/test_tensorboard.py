"""`train.tensorboard: true`: the event files are read back and hold the logged scalars."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from tool_runs import SignalAt, classifier, run, run_dir, write_yaml

from gdtrain.errors import Interrupted
from gdtrain.run.rundir import RunDir


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _masked_crc(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
    """Events of one file, parsed from the TFRecord framing written out here from its spec:
    u64 length, u32 masked CRC-32C of the length, the bytes, u32 masked CRC-32C of the bytes."""
    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    events, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        (length_crc,) = struct.unpack_from("<I", data, pos + 8)
        assert length_crc == _masked_crc(data[pos : pos + 8])
        body = data[pos + 12 : pos + 12 + length]
        (body_crc,) = struct.unpack_from("<I", data, pos + 12 + length)
        assert body_crc == _masked_crc(body)
        events.append(Event.FromString(body))
        pos += 12 + length + 4
    return events


def scalars(tb_dir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} over all event files in write order, with TensorBoard's purge rule:
    a SessionLog START at step s drops the earlier values at steps >= s."""
    from tensorboardX.proto.event_pb2 import SessionLog

    out: dict[str, dict[int, float]] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        for event in read_events(path):
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for series in out.values():
                    for step in [s for s in series if s >= event.step]:
                        del series[step]
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def _expected(records: list[dict]) -> dict[str, dict[int, float]]:
    """What the metrics log says, as float32 (TensorBoard's simple_value)."""
    names = {"loss": "train/loss", "l2": "train/l2", "lr": "train/learning_rate",
             "ema_decay": "train/ema_decay"}
    out: dict[str, dict[int, float]] = {}
    for r in records:
        if r["event"] == "train":
            pairs = [(tag, r[k]) for k, tag in names.items() if k in r]
        else:
            pairs = [(f"{r['split']}/{k}", r[k]) for k in ("loss", "accuracy", "mse") if k in r]
        for tag, value in pairs:
            out.setdefault(tag, {})[r["step"]] = float(np.float32(value))
    return out


def _config(tmp_path, **train):
    return classifier(tmp_path, "tb", l2={"scale": 0.01},
                      train={"tensorboard": True, "checkpoint_every": 0, **train})


def test_scalars_match_the_metrics_log(tmp_path):
    pytest.importorskip("tensorboardX")
    raw = _config(tmp_path)
    run(raw)
    tb = run_dir(raw) / "tb"
    files = list(tb.glob("events.out.tfevents.*"))
    assert len(files) == 1
    got = scalars(tb)
    records = RunDir(run_dir(raw)).read_metrics()
    assert got == _expected(records)
    assert sorted(got) == ["test/accuracy", "test/loss", "train/ema_decay", "train/l2",
                           "train/learning_rate", "train/loss"]
    assert sorted(got["test/accuracy"]) == [10, 20, 30]
    # the EMA decay logged is TF1's min(decay, (1+n)/(10+n)) after n updates
    assert got["train/ema_decay"][5] == pytest.approx(6 / 15, rel=1e-7)
    assert got["train/ema_decay"][30] == pytest.approx(31 / 40, rel=1e-7)


def test_a_resumed_run_purges_the_steps_it_redoes(tmp_path):
    pytest.importorskip("tensorboardX")
    raw = _config(tmp_path)
    with pytest.raises(Interrupted):
        run(raw, SignalAt(12))  # logs steps 5, 10, evaluates 10, saves at 12
    first = scalars(run_dir(raw) / "tb")
    assert sorted(first["train/loss"]) == [5, 10]
    run(raw)  # resumes from 12
    tb = run_dir(raw) / "tb"
    assert len(list(tb.glob("events.out.tfevents.*"))) == 2
    events = read_events(max(tb.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns))
    starts = [e.step for e in events if e.HasField("session_log")]
    assert starts == [13]  # records up to the checkpoint (12) stay; later ones are redone
    assert scalars(tb) == _expected(RunDir(run_dir(raw)).read_metrics())
    # --restart begins again at 0: the old event files go, as the old metrics log does
    from gdtrain.config.validate import resolve
    from gdtrain.run.loop import RunOptions, train

    train(resolve(raw), None, RunOptions(restart=True))
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1


def test_missing_tensorboardx_fails_before_training(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    for name in [m for m in sys.modules if m.startswith("tensorboardX.")]:
        monkeypatch.setitem(sys.modules, name, None)
    raw = _config(tmp_path)
    code, _, err = cli("run", write_yaml(tmp_path / "tb.yaml", raw))
    assert code == 2
    assert "pip install 'gdtrain[tensorboard]'" in err
    rd = RunDir(run_dir(raw))
    assert not rd.metrics.exists() and rd.read_status().get("status") != "running"
