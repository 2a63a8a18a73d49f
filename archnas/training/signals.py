"""SIGINT/SIGTERM from start-up to exit: stop at a safe point with a clear message and exit code.

The command line holds one `StopSignals(at_once=True)` around the whole run: a signal there
raises `RunInterrupted` at once, wherever the run is (start-up, a search between its checkpoints,
cost tables, a final test). That is a safe point everywhere outside a training loop, because
every file a resumed run reads is written atomically and every phase checkpoints what it needs
to resume: the run loses at most the work since its last checkpoint, exactly as a kill would,
and the command line prints the command that resumes.

Inside `Trainer.fit` a nested `StopSignals()` defers instead: the first signal becomes a request
the training loop polls between steps, so a step is never cut in half, and `on_signal` hears of it
at once (the trainer logs that the signal arrived, since a step can take seconds); the loop then
checkpoints and raises `RunInterrupted`. A second signal while stopping (an impatient Ctrl-C,
a second `kill`) raises `RunInterrupted` for that signal at once; checkpoints are written
atomically, so even that leaves the previous checkpoint intact. A signal that arrives after the
loop's last poll is raised when the block ends.

`RunInterrupted` is a BaseException, as KeyboardInterrupt is: raised from a handler at an
arbitrary point, it must not be taken for an error by an `except Exception` on its way out (a
damaged-file check around `torch.load`, say).

This module imports nothing heavy: the command line imports it to catch `RunInterrupted`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

HANDLED = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """The run stopped on a signal at a safe point; rerunning the same command resumes."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell convention: 130 for SIGINT, 143 for SIGTERM


class StopSignals:
    """Context manager that turns SIGINT/SIGTERM into `RunInterrupted` instead of dying on them.

    `at_once`: raise on the first signal (the run's outer scope); otherwise record it for the
    code to poll (`requested`) and raise on a second one. Blocks nest: an inner block's
    handlers replace the outer's until it ends. Handlers can only be installed from the main
    thread; elsewhere (a training thread) signals keep their previous behaviour and `requested`
    stays None.
    """

    def __init__(self, on_signal: Optional[Callable[[int], None]] = None, at_once: bool = False) -> None:
        """`on_signal(signum)` runs in the handler, when the first signal arrives: Python runs
        handlers in the main thread between bytecodes, so it comes within milliseconds of the
        signal while a step computes (a call into C, one torch op, finishes first)."""
        self.requested: Optional[int] = None
        self.on_signal = on_signal
        self.at_once = at_once
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.at_once:
            raise RunInterrupted(signum, f"stopped by {name}; what the run had saved is kept (finished phases, "
                                         "the last checkpoint of the phase in progress)")
        if self.requested is not None:
            raise RunInterrupted(signum, f"stopped at once by a second signal ({name}) while stopping; the "
                                         "last checkpoint written before it is intact")
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

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], tb: Any) -> None:
        self._restore()
        if exc is None and self.requested is not None:
            raise RunInterrupted(self.requested, f"stopped by {signal.Signals(self.requested).name} at the end of "
                                                 "training; rerun the same command to go on from there")
