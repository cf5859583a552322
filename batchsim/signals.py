"""SIGTERM handled like Ctrl-C: both raise in the main thread, so every output in progress is
discarded by its `sim.atomic` context and the command exits with one message and 128 + signal
(130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by that signal.

A second signal during the cleanup is ignored (the cleanup is short and holds signals back
during its renames anyway); the previous handlers come back when the command returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received; a KeyboardInterrupt, so every Ctrl-C path handles it."""

    def __init__(self, signum: int) -> None:
        # args must rebuild the exception: SimPy re-raises a failed process's error as
        # type(e)(*e.args), and pickling (worker processes) does the same
        super().__init__(int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


_HANDLED = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, _frame: FrameType | None) -> None:
    for s in _HANDLED:
        signal.signal(s, signal.SIG_IGN)  # the first signal wins; cleanup runs undisturbed
    raise Terminated(signum)


def exit_status(error: KeyboardInterrupt) -> int:
    """128 + the signal number (130 for a plain Ctrl-C)."""
    return 128 + int(getattr(error, "signum", signal.SIGINT))


def message(error: KeyboardInterrupt) -> str:
    signum = int(getattr(error, "signum", signal.SIGINT))
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    return f"batchsim: {what}"


@contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the duration of one command (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _HANDLED}
    for s in _HANDLED:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
