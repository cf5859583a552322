"""Progress bars for long commands, drawn by tqdm (`tqdm.auto`: a widget in a notebook, a bar on
a terminal). Anywhere else (a pipe, a CI log) nothing is drawn while the work runs and one
final line says what was done and how long it took, so logs stay one line per phase. tqdm is
imported only when a bar is drawn (its import is ~70 ms of a command that draws none)."""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any, TextIO

# No ETA until a few units are done (tqdm's `?` on the first draw, not a clock time).
_COUNTS = " {n_fmt}/{total_fmt}{unit}"
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}|COUNTS [{elapsed}<{remaining}{postfix}]"


def _in_notebook() -> bool:
    """tqdm.auto picks its notebook widget (an IPython kernel with ipywidgets)."""
    if "ipykernel" not in sys.modules:  # no kernel: tqdm.auto is the terminal bar
        return False
    from tqdm.auto import tqdm

    return any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)


class _NoBar:
    """What Progress calls of a tqdm bar, for a bar that is not drawn."""

    def update(self, n: float) -> None:
        pass

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Call update(done) as work advances (done is absolute, not a delta); phase(label) to say
    the counted work is over and something else runs (writing the outputs); close() at the end.

    Drawn live only on a terminal or in a notebook (or force=True); elsewhere one line per
    phase, e.g. `simulating: 200/200 req in 0.4 s` (final_line=False: nothing, for --quiet).
    """

    def __init__(
        self,
        total: float,
        label: str,
        unit: str = "",
        stream: TextIO | None = None,
        force: bool = False,
        interval_s: float = 0.2,
        show_counts: bool = True,
        final_line: bool = True,
    ) -> None:
        self.total = max(float(total), 0.0)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = force or _isatty(self.stream) or _in_notebook()
        self.start = time.perf_counter()
        self.done: float = 0
        self._closed = False
        self._phased = False  # phase() was called: the counted work is over
        self._note = ""
        self.show_counts = show_counts
        self.final_line = final_line
        self._bar: Any = _NoBar()
        if self.live:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, desc=label, unit=unit, file=self.stream, mininterval=interval_s,
                dynamic_ncols=True, leave=True,
                bar_format=_BAR_FORMAT.replace("COUNTS", _COUNTS if show_counts else ""),
            )

    def update(self, done: float) -> None:
        """Advance the bar to `done` units (monotonic; a smaller value is ignored)."""
        if done > self.done:
            self._bar.update(done - self.done)
            self.done = done

    def phase(self, label: str) -> None:
        """Relabel the bar (and redraw it now): the counted work is over, `label` runs. Not
        live, the counted phase's line is written now (`sweeping: 15/15 points in 21.0 s`)
        and close() writes the new phase's own time (`writing sweep folder: 0.9 s`)."""
        if not self.live and not self._phased:
            self._final_line()
            self.start = time.perf_counter()
            self._phased = True
        self.label = label
        self._bar.set_description_str(label, refresh=True)

    def note(self, text: str) -> None:
        """A short text after the times (shown at the next draw)."""
        self._note = text
        self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """Finish the bar (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        self._bar.close()
        if not self.live:
            self._final_line()

    def _final_line(self) -> None:
        if not self.final_line:
            return
        elapsed = _fmt_s(time.perf_counter() - self.start)
        if self._phased:  # the phase after the counted work: its time only
            self.stream.write(f"{self.label}: {elapsed}\n")
        else:
            counts = f" {self.done:,.0f}/{self.total:,.0f}{self.unit}" if self.show_counts else ""
            note = f" {self._note}" if self._note else ""
            self.stream.write(f"{self.label}:{counts}{note} in {elapsed}\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Status:
    """A phase with no count (writing the outputs), as a context: on a terminal the line
    `label…` while it runs, replaced by `label: 5.1 s` when it ends; elsewhere only that final
    line (final_line=False: nothing, for --quiet)."""

    def __init__(self, label: str, stream: TextIO | None = None, force: bool = False,
                 final_line: bool = True) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.live = force or _isatty(self.stream)
        self.final_line = final_line
        self.start = 0.0

    def __enter__(self) -> Status:
        self.start = time.perf_counter()
        if self.live:
            self.stream.write(f"{self.label}…")
            self.stream.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = _fmt_s(time.perf_counter() - self.start)
        if self.live:
            self.stream.write(f"\r{self.label}: {elapsed}\n")
        elif self.final_line:
            self.stream.write(f"{self.label}: {elapsed}\n")
        self.stream.flush()


class LazyProgress:
    """A progress callback for library code that reports (done, total, label): the bar is made
    on the first report, when the total is known. Each report is one finished item (a grid
    point): the bar counts them in `unit` while its fill follows done/total (work-weighted, so
    the ETA is fair when items differ in cost). close() when the work is over."""

    def __init__(self, unit: str = "points", stream: TextIO | None = None,
                 final_line: bool = True) -> None:
        self.unit = unit
        self.final_line = final_line
        self.stream = stream
        self.bar: Progress | None = None
        self.points = 0

    def __call__(self, done: float, total: float, label: str) -> None:
        if self.bar is None:
            self.bar = Progress(total, label, self.unit, stream=self.stream, show_counts=False,
                                final_line=self.final_line)
        self.points += 1
        self.bar.note(f"{self.points} {self.unit} done")
        self.bar.update(done)

    def close(self) -> None:
        """Finish the bar's line (once; later calls do nothing)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class quiet_library_warnings(warnings.catch_warnings):
    """A context that hides FutureWarning (transformers' and torch's deprecation notices, which
    the user cannot act on) while a bar is drawn: a warning printed mid-line breaks the bar."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("ignore", FutureWarning)
