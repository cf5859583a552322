"""Every kind of report opens offline in a real browser: each figure renders, no JS error.

Headless Debian `chromium` loads the file from disk (no network), runs its scripts for up to ten
seconds of virtual time and dumps the DOM. A figure rendered when plotly put its SVG (class
`main-svg`) into the figure's div; the page's error hook (reports/html.py) writes any uncaught
error, rejected promise or console.error into <pre id="js-errors">, read back from the dump.
Skipped, with the reason, where chromium is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from batchsim.reports.html import Section, write_report

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and os.path.exists(p)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does)")

FIG_DIV = re.compile(r'<div id="(fig\d+)" class="fig[^"]*"')


def load_in_browser(page: Path, tmp: Path) -> str:
    """The DOM of page after its scripts ran, as chromium dumps it."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", f"--user-data-dir={tmp / 'chromium'}",
           "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def page_problems(source: str, dom: str) -> list[str]:
    """What is wrong with a loaded page: figures without plot SVG, logged JS errors."""
    problems = []
    figures = FIG_DIV.findall(source)
    # split the DOM at each figure div: the SVG of figure k lies between its div and the next
    cuts = [dom.find(f'id="{fig}"') for fig in figures] + [len(dom)]
    for k, fig in enumerate(figures):
        if cuts[k] < 0:
            problems.append(f"{fig}: missing from the DOM")
        elif 'class="main-svg"' not in dom[cuts[k]:cuts[k + 1]]:
            problems.append(f"{fig}: no plot SVG (the figure did not render)")
    match = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    if match is None:
        problems.append("no js-errors element: the page's error hook is missing")
    elif match.group(1).strip():
        problems.append(f"JavaScript errors: {match.group(1).strip()[:1000]}")
    return problems


@needs_chromium
def test_every_report_renders_in_a_browser(any_report: Path, tmp_path: Path):
    """Each report kind: every figure drew its SVG and the page logged no JavaScript error."""
    source = any_report.read_text()
    assert FIG_DIV.search(source), "the report has no figure to check"
    assert page_problems(source, load_in_browser(any_report, tmp_path)) == []


@needs_chromium
def test_the_check_catches_a_script_error_and_an_unrendered_figure(tmp_path: Path):
    """The browser check itself can fail: a throwing script and a figure never plotted."""
    import plotly.graph_objects as go

    broken = Section("broken", [go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))],
                     html="<script>undefinedFunctionCall();</script>")
    page = write_report(tmp_path / "broken.html", "broken", [broken])
    source = page.read_text()
    # a second figure div that no script plots
    source = source.replace('<pre id="js-errors"', '<div id="fig9" class="fig"></div>'
                            '<pre id="js-errors"')
    page.write_text(source)
    problems = page_problems(source, load_in_browser(page, tmp_path))
    assert any("fig9: no plot SVG" in p for p in problems), problems
    assert any("undefinedFunctionCall" in p for p in problems), problems
    assert not any(p.startswith("fig0") for p in problems), problems
