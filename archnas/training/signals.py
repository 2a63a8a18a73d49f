"""SIGINT/SIGTERM during training: finish the step, write a checkpoint, stop with a clear message.

`StopSignals` turns the first signal into a request the training loop polls between steps, so a
step is never cut in half, and tells `on_signal` at once (the trainer logs that the signal
arrived, since a step can take seconds); the loop then checkpoints and raises `RunInterrupted`, which the
command line prints with the command that resumes. A second signal while stopping (an impatient
Ctrl-C) raises KeyboardInterrupt at once; checkpoints are written atomically, so even that
leaves the previous checkpoint intact.

This module imports nothing heavy: the command line imports it to catch `RunInterrupted`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

HANDLED = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """Training stopped on a signal after saving its state; rerunning the same command resumes."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell convention: 130 for SIGINT, 143 for SIGTERM


class StopSignals:
    """Context manager that records SIGINT/SIGTERM instead of dying on them.

    Handlers can only be installed from the main thread; elsewhere (a training thread) signals
    keep their previous behaviour and `requested` stays None.
    """

    def __init__(self, on_signal: Optional[Callable[[int], None]] = None) -> None:
        """`on_signal(signum)` runs in the handler, when the first signal arrives: Python runs
        handlers in the main thread between bytecodes, so it comes within milliseconds of the
        signal while a step computes (a call into C, one torch op, finishes first)."""
        self.requested: Optional[int] = None
        self.on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested is not None:
            self._restore()
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}) while stopping")
        self.requested = signum
        if self.on_signal is not None:
            self.on_signal(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()
