"""A dependency-free progress bar with ETA for long commands (stderr, only on a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Call update(done) as work advances; close() when finished.

    Draws at most every `interval_s` seconds, and only when the stream is a terminal (or
    force=True), so logs and CI output stay clean.
    """

    def __init__(
        self,
        total: float,
        label: str,
        unit: str = "",
        stream: TextIO | None = None,
        force: bool = False,
        interval_s: float = 0.2,
    ) -> None:
        self.total = max(float(total), 1e-12)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or self.stream.isatty()
        self.interval_s = interval_s
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self.done = 0.0

    def update(self, done: float) -> None:
        self.done = done
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= self.interval_s:
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        elapsed = now - self.start
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(frac * 30)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
            f"{self.done:,.0f}/{self.total:,.0f}{self.unit} "
            f"elapsed {_fmt(elapsed)} eta {_fmt(eta)}  "
        )
        self.stream.flush()


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN: not yet known
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class LazyProgress:
    """A progress callback for library code that reports (done, total, label): the bar is made
    on the first report, when the total is known. close() when the work is over."""

    def __init__(self, unit: str = "", stream: TextIO | None = None) -> None:
        self.unit = unit
        self.stream = stream
        self.bar: Progress | None = None

    def __call__(self, done: float, total: float, label: str) -> None:
        if self.bar is None:
            self.bar = Progress(total, label, self.unit, stream=self.stream)
        self.bar.update(done)

    def close(self) -> None:
        """Finish the bar's line (once; later calls do nothing)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
