"""Ctrl-C as a request: the driver stops between steps, saves the tables and says how to resume.

A KeyboardInterrupt raised at an arbitrary point can be swallowed (Python ignores exceptions
in weakref callbacks, which Ray's start-up runs) or tear a write in half; a flag checked by
the loop cannot. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
from types import FrameType


class StopRequest:
    """Context manager that turns the first SIGINT into ``requested = True``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)
