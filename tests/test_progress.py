"""The CLI's progress bars: live on a terminal, one final line elsewhere."""

from __future__ import annotations

import io
import warnings

from batchsim.progress import LazyProgress, Progress, quiet_library_warnings


def test_not_a_terminal_writes_one_line_per_phase() -> None:
    """In a pipe or CI log nothing is drawn while work runs; the counted work gets one line
    with its counts and time when it ends, the write phase one line with its own time."""
    out = io.StringIO()
    bar = Progress(200, "simulating", " req", stream=out)
    for done in range(0, 201, 50):
        bar.update(done)
    assert out.getvalue() == ""
    bar.phase("writing run folder")
    assert out.getvalue().startswith("simulating: 200/200 req in ")
    bar.close()
    bar.close()  # once only
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[1].startswith("writing run folder: ") and "req" not in lines[1], lines


def test_live_bar_has_no_clock_eta_on_first_draw() -> None:
    """The first draw shows `?` for the remaining time, not a wall-clock time."""
    out = io.StringIO()
    bar = Progress(10, "simulating", " req", stream=out, force=True)
    first = out.getvalue().split("\r")[-1]
    assert "0/10 req" in first and "<?" in first, first
    bar.update(10)
    bar.phase("writing run folder")
    bar.close()
    assert "writing run folder: 100%" in out.getvalue()


def test_lazy_bar_counts_points() -> None:
    """The profile bar counts grid points (one per report), as the profile's record does."""
    out = io.StringIO()
    lazy = LazyProgress(stream=out)
    for n in range(1, 4):
        lazy(n * 2.5, 7.5, "profile tiny (quick, 3 points)")
    lazy.close()
    assert out.getvalue() == "profile tiny (quick, 3 points): 3 points done in " + \
        out.getvalue().split(" in ")[-1]


def test_library_future_warnings_are_silenced() -> None:
    """FutureWarning (transformers' deprecations) is hidden inside the context, and only there."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_library_warnings():
            warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
        warnings.warn("after", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["after"]


def test_quiet_commands_write_no_final_line() -> None:
    """final_line=False (the commands' --quiet): nothing at all off a terminal."""
    out = io.StringIO()
    bar = Progress(5, "simulating", " req", stream=out, final_line=False)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""


def test_a_bar_that_is_not_drawn_does_not_import_tqdm():
    """tqdm's import (~70 ms) is paid only by a command that draws a bar."""
    import subprocess
    import sys

    code = ("import io, sys\n"
            "from batchsim.progress import Progress\n"
            "p = Progress(10, 'simulating', ' req', stream=io.StringIO())\n"
            "p.update(4); p.phase('writing'); p.note('x'); p.close()\n"
            "assert 'tqdm' not in sys.modules, 'tqdm imported'\n"
            "Progress(10, 'drawn', stream=io.StringIO(), force=True).close()\n"
            "assert 'tqdm' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
