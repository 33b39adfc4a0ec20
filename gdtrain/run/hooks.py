"""The hooks of a run: what the loop tells the outside world, as one type.

The loop (loop.py) calls a `Reporter`; the loggers subclass it: the terminal's
(commands/report.py), TensorBoard's (tensorboard.py), the Python API's callback (api.py),
a sweep trial's (sweep/worker.py). It lives in a module of its own, as Lightning keeps
its `Callback`, so that the loop and the loggers import it and neither imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.train import StepResult


class Reporter:
    """What the loop tells the outside world; the CLI subclasses it to print."""

    def start(self, info: dict) -> None: ...
    def step(self, result: StepResult) -> None: ...
    def log(self, record: dict) -> None: ...
    def evaluation(self, record: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def end(self, summary: dict) -> None: ...
