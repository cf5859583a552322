"""The HTML report of `batchsim trace stats`: the numbers, the arrival rate over time and the
length and gap distributions.

Figures are pure functions from arrays to plotly figures. They draw histograms computed here
(filled steps), never the raw points, so a million-request trace gives a page of a few hundred KB.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from batchsim.reports import figures
from batchsim.reports.fmt import display_path
from batchsim.reports.html import Section, cards, table, write_report
from batchsim.sim.workload.stats import arrivals_per_bin

_NUM_BINS = 60
_MAX_RATE_POINTS = 400


def rate_figure(arrival_s: np.ndarray) -> go.Figure:
    """Arrival rate (req/s) per bin, bins sized so the plot has at most a few hundred points."""
    span = float(arrival_s[-1] - arrival_s[0])
    bin_s = max(1.0, span / _MAX_RATE_POINTS)
    counts = arrivals_per_bin(arrival_s, bin_s)
    starts = arrival_s[0] + bin_s * np.arange(len(counts))
    fig = go.Figure(go.Scatter(x=starts, y=counts / bin_s, mode="lines", line_shape="hv",
                               name="arrival rate", line={"color": figures.PALETTE[0]}))
    return figures.styled(fig, f"Arrival rate over time ({bin_s:.3g} s bins)",
                          "time since the first request (s)", "requests / s")


def histogram_figure(values: np.ndarray, title: str, axis: str, log_x: bool = True) -> go.Figure:
    """A histogram drawn as bars; log-spaced bins for heavy-tailed values (zeros get their own)."""
    if len(values) == 0:  # e.g. the gaps of a one-request trace
        fig = go.Figure()
        fig.update_layout(title=f"{title} (none)", xaxis_title=axis, yaxis_title="requests")
        return fig
    positive = values[values > 0]
    # values equal up to rounding (gaps of 0.1 s come out 1 ulp apart) get linear bins; the
    # width floor keeps edges distinct at any magnitude, as np.histogram requires
    if log_x and len(positive) and positive.max() > positive.min() * (1 + 1e-6):
        edges = np.geomspace(positive.min(), positive.max(), _NUM_BINS + 1)
    else:
        low = float(values.min())
        high = max(float(values.max()), low + max(1.0, abs(low) * 1e-6))
        edges = np.linspace(low, high, _NUM_BINS + 1)
        log_x = False
    edges = np.unique(edges)
    counts, edges = np.histogram(positive if log_x else values, bins=edges)
    # each bin drawn from its left edge to its right edge (a filled step line), so on a log axis
    # the log-spaced bins have equal widths; plotly's bars would be linear-width slivers there
    x = np.repeat(edges, 2)[1:-1]
    y = np.repeat(counts, 2)
    fig = go.Figure(go.Scatter(
        x=x, y=y, mode="lines", fill="tozeroy", name=axis,
        line={"color": figures.PALETTE[0], "width": 1},
        hovertemplate="%{x:.3g}: %{y:,} requests<extra></extra>"))
    zeros = int((values == 0).sum())
    if log_x and zeros:
        title += f" ({zeros:,} zero values not shown)"
    fig.update_xaxes(type="log" if log_x else "linear")
    if log_x and axis.endswith("(s)"):  # 1 µs … 1 s, not plotly's mix of 10µ and 0.001
        ticks = 10.0 ** np.arange(np.floor(np.log10(edges[0])), np.ceil(np.log10(edges[-1])) + 1)
        fig.update_xaxes(tickvals=ticks.tolist(), ticktext=[_time_label(t) for t in ticks])
    return figures.styled(fig, title, axis, f"requests per bin ({len(counts)} "
                          + ("log-spaced bins)" if log_x else "bins)"))


def _time_label(seconds: float) -> str:
    """A power of ten of seconds as people write it: 1 µs, 10 ms, 1 s, 100 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale * (1 - 1e-9):
            return f"{seconds / scale:,.0f} {unit}"
    return f"{seconds:g} s"


def _fmt(value: float | None, spec: str = ",.3f") -> str:
    return "–" if value is None else format(value, spec)


def trace_sections(stats: Mapping[str, Any], arrival_s: np.ndarray, input_tokens: np.ndarray,
                   output_tokens: np.ndarray) -> list[Section]:
    summary = cards({
        "requests": f"{stats['num_requests']:,}",
        "time span (s)": _fmt(stats["span_s"], ",.1f"),
        "mean rate (req/s)": _fmt(stats["mean_rate"]),
        "peak minute (req/s)": _fmt(stats["peak_minute_rate"]),
        "gap CV": _fmt(stats["gap_cv"]),
        "gamma shape (1/CV²)": _fmt(stats["gamma_shape"]),
    })
    lengths = table([{"": name, **stats[key]} for name, key in
                     (("input tokens", "input_tokens"), ("output tokens", "output_tokens"))],
                    columns=["", "mean", "median", "p99", "min", "max"])
    return [
        Section("Summary", html=summary + lengths, notes=[
            "Mean rate = (N − 1) / time span. Gamma shape is fitted by moments (1 / CV²): pass "
            "it as --burstiness to synthesise arrivals this bursty (1 = Poisson)."]),
        Section("Arrivals", figures=[
            rate_figure(arrival_s),
            histogram_figure(np.diff(arrival_s), "Gaps between arrivals", "gap (s)")]),
        Section("Lengths", figures=[
            histogram_figure(input_tokens, "Input lengths", "input tokens"),
            histogram_figure(output_tokens, "Output lengths", "output tokens")]),
    ]


def write_trace_report(path: str | Path, stats: Mapping[str, Any], arrival_s: np.ndarray,
                       input_tokens: np.ndarray, output_tokens: np.ndarray) -> Path:
    subtitle = f"{display_path(str(stats['file']))} · {stats['format']} format"
    return write_report(path, "Trace statistics", trace_sections(
        stats, arrival_s, input_tokens, output_tokens), subtitle=subtitle)
