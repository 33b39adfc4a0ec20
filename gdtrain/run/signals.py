"""SIGINT and SIGTERM during a run: they raise a flag; the loop finishes its step, saves, stops."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field


@dataclass
class Signals:
    """SIGINT/SIGTERM only raise a flag: the step in progress finishes, then we save."""

    received: int | None = None
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        # a second signal while saving changes nothing: the flag is already up
        if self.received is None:
            self.received = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
