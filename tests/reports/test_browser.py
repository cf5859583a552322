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
           "--virtual-time-budget=10000", "--window-size=1280,2000", "--dump-dom",
           page.resolve().as_uri()]
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


# Runs in the loaded page once plotly has drawn: for every figure, the bounding boxes (as laid
# out on screen) of plotly's toolbar, our buttons/menus, the figure title and the subplot titles;
# writes each pair that overlaps into <pre id="overlaps">.
_OVERLAP_PROBE = """<pre id="overlaps"></pre><script>
setTimeout(function(){var out=[];
function box(e){var r=e.getBoundingClientRect();return r.width&&r.height?r:null;}
function hit(a,b){return a&&b&&a.left<b.right&&b.left<a.right&&a.top<b.bottom&&b.top<a.bottom;}
document.querySelectorAll("div.fig").forEach(function(fig){
 var parts=[];
 fig.querySelectorAll(".modebar").forEach(function(e){parts.push(["toolbar",box(e)]);});
 fig.querySelectorAll(".updatemenu-container .updatemenu-button,"
   +".updatemenu-container .updatemenu-header").forEach(function(e){
   parts.push(["button",box(e)]);});
 fig.querySelectorAll(".g-gtitle text").forEach(function(e){parts.push(["title",box(e)]);});
 fig.querySelectorAll(".annotation-text").forEach(function(e){
   parts.push(["panel title",box(e)]);});
 for(var i=0;i<parts.length;i++)for(var j=i+1;j<parts.length;j++){
  var a=parts[i],b=parts[j];
  if(a[0]==="panel title"&&b[0]==="panel title")continue;
  if(a[0]==="button"&&b[0]==="button")continue;
  if(hit(a[1],b[1]))out.push(fig.id+": "+a[0]+" overlaps "+b[0]+" "
   +JSON.stringify([a[1],b[1]]));}});
document.getElementById("overlaps").textContent=out.join("\\n")||"none";},3000);
</script>"""


@needs_chromium
def test_controls_do_not_overlap_the_toolbar_or_titles(any_report: Path, tmp_path: Path):
    """As laid out in a 1280-px-wide browser window, no linear/log button or menu overlaps
    plotly's toolbar, a figure title or a panel title, and the title clears the toolbar."""
    probe = tmp_path / "probe.html"
    probe.write_text(any_report.read_text().replace("</body>", _OVERLAP_PROBE + "</body>"))
    dom = load_in_browser(probe, tmp_path)
    match = re.search(r'<pre id="overlaps">(.*?)</pre>', dom, re.S)
    assert match is not None and match.group(1).strip() == "none", (
        match.group(1) if match else "probe did not run")


@needs_chromium
def test_the_overlap_probe_catches_a_button_on_the_toolbar(tmp_path: Path):
    """The probe itself can fail: buttons placed where the old reports put them (top right,
    over the toolbar) are reported."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    fig.update_layout(title="t", margin={"t": 50}, updatemenus=[{
        "type": "buttons", "direction": "left", "x": 1.0, "xanchor": "right", "y": 1.08,
        "yanchor": "bottom", "buttons": [{"label": s, "method": "relayout", "args": [{}]}
                                         for s in ("linear", "log")]}])
    page = write_report(tmp_path / "bad.html", "bad", [Section("s", [fig])])
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _OVERLAP_PROBE + "</body>"))
    dom = load_in_browser(probe, tmp_path)
    assert "button overlaps toolbar" in dom or "toolbar overlaps button" in dom, dom[-3000:]
