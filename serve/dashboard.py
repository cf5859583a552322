"""GET /: the live dashboard, one page with plotly.js inlined (no network needed).

The page polls `/dashboard/data` (the per-second history of `LiveStats`) every two seconds and
redraws five plots: tokens/s, running batch, queue, KV use and device busy fraction over the last
ten minutes. The page itself is built once per server (plotly.js is a few MB).
"""

from __future__ import annotations

import html

_PLOTS = (("tokens_per_s", "Generated tokens/s"), ("running", "Running batch (requests)"),
          ("waiting", "Waiting queue (requests)"), ("kv_usage", "KV blocks in use (fraction)"),
          ("busy_fraction", "Device busy (fraction of each second)"))

_SCRIPT = """
var PLOTS = %s;
function draw(d) {
  PLOTS.forEach(function(p) {
    Plotly.react(p[0], [{x: d.t_s, y: d[p[0]], mode: "lines", line: {shape: "hv"}}],
      {title: {text: p[1]}, margin: {t: 40, r: 10, b: 40, l: 50}, height: 260,
       xaxis: {title: {text: "seconds since start"}}}, {displaylogo: false, responsive: true});
  });
  document.getElementById("status").textContent = d.status;
}
function poll() {
  fetch("dashboard/data").then(function(r) { return r.json(); }).then(draw)
    .catch(function(e) { document.getElementById("status").textContent = "no data: " + e; });
}
poll(); setInterval(poll, 2000);
"""


def dashboard_page(model: str, policy: str) -> str:
    """The page's HTML (call once; it embeds plotly.js)."""
    import json

    from plotly.offline import get_plotlyjs

    divs = "".join(f'<div id="{key}" style="width:100%"></div>' for key, _ in _PLOTS)
    title = f"batchsim serve: {html.escape(model)} ({html.escape(policy)})"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><script>{get_plotlyjs()}</script></head>"
        "<body style=\"font-family:system-ui,sans-serif;max-width:1100px;margin:auto\">"
        f"<h1 style=\"font-size:1.4rem\">{title}</h1><p id=\"status\"></p>{divs}"
        f"<script>{_SCRIPT % json.dumps([list(p) for p in _PLOTS])}</script></body></html>\n"
    )
