"""TensorBoard scalars for `train.tensorboard: true`, through the optional tensorboardX.

`attach` wraps the run's Reporter: every call still reaches the wrapped reporter,
and each log record and evaluation also becomes scalars in <run dir>/tb (every number
of a training record: the loss, each penalty's term under its label, the learning
rate, what the step's other parts measured such as the EMA decay; evaluation loss,
accuracy, MSE), at the record's step. Events are written synchronously and flushed at
every record: tensorboardX's SummaryWriter hands them to a background thread, which can lose the
last ones when a run is interrupted. A run that starts from step 0 clears the old
event files, as the runner drops the old metrics.jsonl; a resumed run starts a new
file with a purge marker at the resume step, which tells TensorBoard to forget the
older file's events past the checkpoint, as the runner drops those records.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path

from ..config.paths import run_dir
from ..errors import MissingExtra, RunDirError
from .hooks import Reporter

INSTALL_HINT = ("train.tensorboard needs tensorboardX, an optional extra: "
                "pip install 'gdtrain[tensorboard]' (or pip install tensorboardX)")
EVENT_PREFIX = "events.out.tfevents."
TRAIN_TAGS = {"lr": "learning_rate"}  # train/<key> otherwise
NOT_SCALARS = ("step", "epoch", "elapsed")  # the record's position, not a measurement
EVAL_SCALARS = ("loss", "accuracy", "mse")


def _protos():
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
    except ImportError:
        raise MissingExtra(INSTALL_HINT) from None
    return EventsWriter, Event, SessionLog, Summary


def attach(reporter: Reporter, config: dict) -> Reporter:
    """The reporter to train with: `reporter` itself, or wrapped when train.tensorboard is on."""
    if not config["train"].get("tensorboard"):
        return reporter
    _protos()  # a missing extra fails now, before any training
    return TensorBoardReporter(reporter, Path(run_dir(config)) / "tb")


class TensorBoardReporter(Reporter):
    def __init__(self, inner: Reporter, logdir: Path):
        self.inner = inner
        self.logdir = logdir
        self._writer = None
        self._finalizer = None

    # ------------------------------------------------------------ event file

    def _open(self, start_step: int) -> None:
        EventsWriter, Event, SessionLog, _ = _protos()
        try:
            self.logdir.mkdir(parents=True, exist_ok=True)
            if start_step == 0:
                for old in self.logdir.glob(EVENT_PREFIX + "*"):
                    old.unlink()
            # pid and nanoseconds: a resume within the same second gets its own file
            self._writer = EventsWriter(str(self.logdir / "events"), f".{os.getpid()}.{time.time_ns()}")
            # the runner ends a run with end() only when it finishes: close on any other way out too
            self._finalizer = weakref.finalize(self, self._writer.close)
            if start_step > 0:
                purge = start_step + 1
                self._writer.write_event(Event(step=purge, wall_time=time.time(),
                                               session_log=SessionLog(status=SessionLog.START)))
            self._writer.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None or not values:
            return
        _, Event, _, Summary = _protos()
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        try:
            self._writer.write_event(Event(step=int(step), wall_time=time.time(), summary=summary))
            self._writer.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> RunDirError:
        return RunDirError(f"cannot write TensorBoard events in {self.logdir}: {exc.strerror or exc}")

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs the writer's close once, however often this is called
        self._writer = None

    # ------------------------------------------------------------ Reporter

    def start(self, info: dict) -> None:
        self._open(int(info.get("start_step", 0)))
        self.inner.start(info)

    def step(self, result) -> None:
        self.inner.step(result)

    def log(self, record: dict) -> None:
        self._scalars(record["step"], {f"train/{TRAIN_TAGS.get(k, k)}": v for k, v in record.items()
                                       if k not in NOT_SCALARS and isinstance(v, (int, float))
                                       and not isinstance(v, bool)})
        self.inner.log(record)

    def evaluation(self, record: dict) -> None:
        split = record.get("split", "eval")
        self._scalars(record["step"], {f"{split}/{k}": record[k] for k in EVAL_SCALARS
                                       if isinstance(record.get(k), (int, float))})
        self.inner.evaluation(record)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def warning(self, text: str) -> None:
        self.inner.warning(text)

    def end(self, summary: dict) -> None:
        self.close()
        self.inner.end(summary)
