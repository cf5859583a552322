"""The engine thread's own clocks: CPU time and time spent waiting for a core.

On a shared machine the wall time between two engine steps is the server's own work plus the
time its thread sat runnable on a run queue while other processes had the cores. Linux counts
the wait per thread in `/proc/thread-self/schedstat` (its second field, nanoseconds runnable on
a run queue; complete whenever the thread itself reads it, since it is running), so the loop can
report its overhead with the machine's contention apart. The file is opened once, by the thread
it describes, and re-read with `pread` (a few microseconds); elsewhere the wait is unknown (0).
The CPU time is `time.thread_time()`: schedstat's first field is only brought up to date at
scheduler ticks while the thread runs, so its deltas over short intervals are biased.
"""

from __future__ import annotations

import os
import time

SCHEDSTAT = "/proc/thread-self/schedstat"


class HostClock:
    """(cpu_s, runqueue_s) of the thread that built it; close() when the thread is done."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(SCHEDSTAT, os.O_RDONLY)
            self._parse()
        except (OSError, ValueError):
            self.close()

    @property
    def has_runqueue(self) -> bool:
        return self._fd is not None

    def read(self) -> tuple[float, float]:
        """The thread's CPU seconds and run-queue seconds so far (CPU time read first)."""
        return self.cpu_s(), self.runqueue_s()

    def cpu_s(self) -> float:
        return time.thread_time()

    def runqueue_s(self) -> float:
        return 0.0 if self._fd is None else self._parse()

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        self._fd = None
        if fd is not None:
            os.close(fd)

    def _parse(self) -> float:
        assert self._fd is not None
        _, wait_ns, _ = os.pread(self._fd, 128, 0).split()
        return int(wait_ns) * 1e-9
