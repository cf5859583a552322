"""The engine thread's own clocks: CPU time and time spent waiting for a core.

On a shared machine the wall time between two engine steps is the server's own work plus the
time its thread sat runnable on a run queue while other processes had the cores. Linux counts
both per thread in `/proc/thread-self/schedstat` (nanoseconds on a CPU, nanoseconds waiting on a
run queue), so the loop can report its overhead with the machine's contention apart. The file
is opened once, by the thread it describes, and re-read with `pread` (a few microseconds).
Elsewhere the CPU time comes from `time.thread_time()` and the run-queue wait is unknown (0).
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
        """The thread's CPU seconds and run-queue seconds so far."""
        if self._fd is None:
            return time.thread_time(), 0.0
        return self._parse()

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        self._fd = None
        if fd is not None:
            os.close(fd)

    def _parse(self) -> tuple[float, float]:
        assert self._fd is not None
        on_cpu_ns, wait_ns, _ = os.pread(self._fd, 128, 0).split()
        return int(on_cpu_ns) * 1e-9, int(wait_ns) * 1e-9
