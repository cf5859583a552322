"""One self-contained HTML file from figures and tables: the writer every report uses.

plotly.js is embedded once in the page (no network needed to open it from disk); each figure
is a `<div>` plus a call to `Plotly.newPlot`. The page is written to a temporary sibling file
and renamed into place, so an interrupted write never leaves a half-written report.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from batchsim.reports.fmt import number
from batchsim.sim.atomic import atomic_file

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
  max-width:1200px;padding:1rem 1.5rem;color:#1d2330}
h1{font-size:1.5rem;margin:.2rem 0} h2{font-size:1.15rem;margin:1.6rem 0 .4rem;
  border-bottom:1px solid #dde;padding-bottom:.2rem}
.sub{color:#566;margin:.2rem 0 1rem}
.warn{background:#fff4d6;border:1px solid #e6c35c;padding:.5rem .8rem;margin:.6rem 0;
  border-radius:4px}
.note{color:#566;font-size:.9rem;margin:.3rem 0}
.cmd{color:#566;font-size:.85rem;margin:.2rem 0 .6rem} .cmd code{background:#f3f5f9;
  padding:.1rem .3rem;border-radius:3px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:.6rem 0}
.card{border:1px solid #dde;border-radius:6px;padding:.5rem .8rem;min-width:9rem}
.card .v{font-size:1.3rem;font-weight:600} .card .k{color:#566;font-size:.8rem}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0}
th,td{border:1px solid #dde;padding:.25rem .5rem;text-align:right}
th{background:#f3f5f9} td:first-child,th:first-child{text-align:left}
.fig{width:100%;min-height:380px}
#js-errors{color:#a00;white-space:pre-wrap}
"""

# Installed before plotly.js: every uncaught error, unhandled promise rejection and console.error
# is appended to <pre id="js-errors">, so a broken page says so on screen, and the browser test
# (tests/reports/test_browser.py) can read the failures back from the dumped DOM.
_ERROR_HOOK = """(function(){var errs=[];function show(){var el=document.getElementById(
"js-errors");if(el){el.textContent=errs.join("\\n");el.hidden=errs.length===0;}}
function rec(m){errs.push(String(m));show();}
window.addEventListener("error",function(e){rec("error: "+(e.message||e));});
window.addEventListener("unhandledrejection",function(e){rec("unhandled rejection: "+e.reason);});
var ce=console.error;console.error=function(){rec("console.error: "+Array.prototype.join.call(
arguments," "));return ce.apply(console,arguments);};
document.addEventListener("DOMContentLoaded",show);})();"""


@dataclass
class Section:
    """A titled block of the page: optional HTML (cards, tables, notes), then figures."""

    title: str
    figures: list[go.Figure] = field(default_factory=list)
    html: str = ""  # trusted HTML built with the helpers below (escape user text!)
    notes: list[str] = field(default_factory=list)  # plain-text notes, escaped on output


def cards(items: Mapping[str, str]) -> str:
    """Summary cards: {label: formatted value}."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{html.escape(v)}</div>'
        f'<div class="k">{html.escape(k)}</div></div>'
        for k, v in items.items()
    ) + "</div>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
          fmt: str | None = None) -> str:
    """An HTML table of rows; numbers formatted by reports.fmt.number (or fmt, a format
    string), None shown as an en dash."""
    if not rows:
        return '<p class="note">(no rows)</p>'
    cols = list(columns) if columns is not None else list(rows[0].keys())

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int | float):
            return number(value) if fmt is None else fmt.format(value)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def warning(text: str) -> str:
    return f'<div class="warn">{html.escape(text)}</div>'


def render(title: str, sections: Iterable[Section], subtitle: str = "",
           warnings: Iterable[str] = ()) -> str:
    """The whole page as a string (plotly.js inlined once)."""
    from plotly.offline import get_plotlyjs

    parts: list[str] = []
    scripts: list[str] = []
    n = 0
    for section in sections:
        if section.title:  # an untitled section continues the page head (e.g. a lead sentence)
            parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts.append(section.html)
        parts.extend(f'<p class="note">{html.escape(t)}</p>' for t in section.notes)
        for fig in section.figures:
            div = f"fig{n}"
            n += 1
            parts.append(f'<div id="{div}" class="fig"></div>')
            # plotly's own encoder: numpy arrays become compact base64 typed arrays
            payload = pio.to_json(fig, validate=False, remove_uids=True)
            payload = payload.replace("</", "<\\/")  # a "</script>" in a label stays text
            scripts.append(
                f'(function(){{var s={payload};Plotly.newPlot("{div}",s.data,s.layout,'
                '{responsive:true,displaylogo:false});})();'
            )
    head = (f"<h1>{html.escape(title)}</h1>"
            + (f'<p class="sub">{html.escape(subtitle)}</p>' if subtitle else "")
            + "".join(warning(w) for w in warnings))
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script>{_ERROR_HOOK}</script><script>{get_plotlyjs()}</script></head>"
        f"<body>{head}{''.join(parts)}<pre id=\"js-errors\" hidden></pre>"
        f"<script>{''.join(scripts)}</script></body></html>\n"
    )


def write_report(path: str | Path, title: str, sections: Iterable[Section],
                 subtitle: str = "", warnings: Iterable[str] = ()) -> Path:
    """Render and write atomically (temporary sibling, then rename). Returns the path."""
    out = Path(path)
    text = render(title, sections, subtitle, warnings)
    with atomic_file(out) as f:
        f.write(text)
    return out

