"""Pure functions from (already reduced) result arrays to plotly figures.

No file access and no metric computation here: callers pass what to draw (see reports/series.py
for the reductions), so each figure can be tested from a small hand-made table. Only SVG trace
types are used (no WebGL `scattergl`): they render in every browser, headless ones included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from batchsim.reports.series import decimate

# One colour per step phase, the same on every page.
PHASE_COLORS = {"prefill": "#d62728", "decode": "#1f77b4", "mixed": "#9467bd", "idle": "#c7c7c7"}

# One colour per run (or series) in every report, in this order (phases have their own
# colours above).
PALETTE: list[str] = list(qualitative.Plotly)

# Statistics of one run (mean, p99) side by side: greys, so they never read as runs
STAT_COLORS = {"mean": "#9aa5b1", "p99": "#3e4c59", "output tok/s": "#9aa5b1",
               "total tok/s": "#3e4c59"}

# The one template every report uses (registered once; each figure names it).
TEMPLATE = "batchsim"
pio.templates[TEMPLATE] = go.layout.Template(pio.templates["plotly_white"])
pio.templates[TEMPLATE].layout.colorway = PALETTE

Curve = tuple[np.ndarray, np.ndarray]


def _f4(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """float32 halves the page size; plenty of precision for a plot."""
    return np.asarray(x, dtype=np.float32)


def _use_template(fig: go.Figure) -> None:
    """fig.layout.template = TEMPLATE without re-validating it: validation copies the whole
    template (every trace type's defaults), ~50 ms a figure, and a report has a dozen. The
    registered template is valid already; plotly assigns its default template the same way
    (BaseFigure._initialize_layout_template). The figure's JSON is the same."""
    layout = fig.layout
    layout._validate = False
    try:
        layout.template = pio.templates[TEMPLATE]
    finally:
        layout._validate = fig._validate


def styled(fig: go.Figure, title: str, x_title: str = "", y_title: str = "") -> go.Figure:
    # t=90: the title and plotly's toolbar share the top strip (10-30 px from the top, left
    # and right), our buttons the lower one (just above the plot area); tests/reports/
    # test_browser.py checks in a browser that none overlap
    _use_template(fig)
    fig.update_layout(title={"text": title, "x": 0.01, "xanchor": "left", "yref": "container",
                             "y": 1.0, "yanchor": "top", "pad": {"t": 10}},
                      margin={"l": 60, "r": 20, "t": 90, "b": 45},
                      legend={"orientation": "h", "y": -0.18}, hovermode="closest")
    if x_title:
        fig.update_xaxes(title_text=x_title)
    if y_title:
        fig.update_yaxes(title_text=y_title)
    return fig


def log_toggle(fig: go.Figure, axes: Sequence[str] = ("xaxis",), label: str = "") -> None:
    """Linear/log buttons: latency distributions span decades (a 20 ms TTFT and a 20 s one).

    Placed in the top margin's lower strip, left of centre, clear of plotly's toolbar (top
    right) and of subplot titles (centred over each panel)."""
    fig.update_layout(updatemenus=[{
        "type": "buttons", "direction": "left", "x": 0.0, "xanchor": "left", "y": 1.0,
        "yanchor": "bottom", "pad": {"b": 10}, "showactive": True, "buttons": [
            {"label": f"{label}{scale}", "method": "relayout",
             "args": [{f"{a}.type": scale for a in axes}]}
            for scale in ("linear", "log")
        ],
    }])


def cdf_figure(curves_by_metric: Mapping[str, Mapping[str, Curve]],
               title: str = "Latency distributions (CDF)") -> go.Figure:
    """Panels of CDFs, one per metric ({"TTFT (ms)": {run name: (x, p)}}), two per row.

    A run keeps its colour across panels and one legend entry toggles it everywhere.
    """
    metrics = [m for m, curves in curves_by_metric.items()
               if any(len(x) for x, _ in curves.values())]
    cols = 2 if len(metrics) > 1 else 1
    nrows = max(1, -(-len(metrics) // cols))
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=metrics, vertical_spacing=0.12,
                        horizontal_spacing=0.08)
    palette = PALETTE
    names = list(dict.fromkeys(n for m in metrics for n in curves_by_metric[m]))
    for i, metric in enumerate(metrics):
        row, col = divmod(i, cols)
        for name, (x, p) in curves_by_metric[metric].items():
            k = names.index(name)
            fig.add_trace(go.Scatter(
                x=_f4(x), y=_f4(p), mode="lines", name=name, legendgroup=name,
                showlegend=i == 0, line={"color": palette[k % len(palette)]},
                hovertemplate="%{x:.4g} ms: p%{y:.3f}<extra>" + name + "</extra>"),
                row=row + 1, col=col + 1)
    fig.update_yaxes(range=[0, 1.01], title_text="fraction ≤ x", col=1)
    axes = [f"xaxis{'' if i == 0 else i + 1}" for i in range(len(metrics))]
    log_toggle(fig, axes)
    fig.update_layout(height=max(380, 330 * nrows))
    return styled(fig, title)


def timeseries_figure(rows: Sequence[tuple[str, Mapping[str, Curve]]],
                      title: str = "Over time") -> go.Figure:
    """Stacked panels sharing the time axis (zoom one, all follow): [(y title, {name: (t, y)})]."""
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[y_title for y_title, _ in rows])
    for i, (_, series) in enumerate(rows, start=1):
        for name, (t, y) in series.items():
            fig.add_trace(go.Scatter(x=_f4(t), y=_f4(y), mode="lines", name=name,
                                     line={"width": 1, "shape": "hv"}), row=i, col=1)
        values = np.concatenate([np.asarray(y, dtype=float) for _, y in series.values()]
                                or [np.zeros(0)])
        finite = values[np.isfinite(values)]
        if len(finite) and np.all(finite == np.round(finite)):  # a count: no 0.5 requests
            top = float(finite.max())
            fig.update_yaxes(tickformat=",d", dtick=1 if top <= 5 else None, row=i, col=1)
    fig.update_xaxes(title_text="time (s)", row=len(rows), col=1)
    fig.update_layout(height=max(380, 190 * len(rows)))
    return styled(fig, title)


def step_timeline_figure(start_s: np.ndarray, duration_s: np.ndarray, phase: np.ndarray,
                         max_points: int = 20_000,
                         names: Sequence[str] | None = None) -> tuple[go.Figure, int]:
    """Each step as a point at its start time, height = its duration, colour = its phase.

    phase: each step's phase name, or with names its code into names (a categorical's codes:
    a million steps' names as str objects take ~0.1 s a comparison, as a str array ~30 MB).
    Returns (figure, points drawn). Above max_points the series of each phase is decimated to
    its per-bucket extremes, so the long prefill steps stay visible.
    """
    fig = go.Figure()
    wanted = [p for p in PHASE_COLORS if p != "idle"]
    keys = wanted if names is None else [names.index(p) if p in names else -1 for p in wanted]
    where = {p: np.flatnonzero(phase == key) for p, key in zip(wanted, keys, strict=True)}
    phases = [p for p, idx in where.items() if len(idx)]
    shown = 0
    for name in phases:
        idx = where[name]
        keep = idx[decimate(duration_s[idx], max(2, max_points // max(len(phases), 1)))]
        shown += len(keep)
        fig.add_trace(go.Scatter(
            x=_f4(start_s[keep]), y=_f4(duration_s[keep] * 1e3), mode="markers", name=name,
            marker={"size": 4, "color": PHASE_COLORS[name]},
            hovertemplate="t=%{x:.4f} s, %{y:.3f} ms<extra>" + name + "</extra>"))
    return styled(fig, "Step timeline (drag to zoom, double-click to reset)", "start time (s)",
                   "step duration (ms)"), shown


def time_share_figure(seconds_by_part: Mapping[str, float], title: str) -> go.Figure:
    """Where the wall-clock time went: a pie of seconds per part (prefill, decode, idle, ...)."""
    labels = [k for k, v in seconds_by_part.items() if v > 0]
    values = [seconds_by_part[k] for k in labels]
    total = sum(values) or 1.0
    # a slice too thin for its text gets it outside, with its phase's name (never unlabelled)
    fig = go.Figure(go.Pie(
        labels=labels, values=values, sort=False, textinfo="label+percent",
        textposition=["inside" if v / total >= 0.06 else "outside" for v in values],
        marker={"colors": [PHASE_COLORS.get(k, "#7f7f7f") for k in labels]},
        hovertemplate="%{label}: %{value:.3f} s (%{percent})<extra></extra>"))
    return styled(fig, title)


def batch_histogram_figure(batch_size: np.ndarray, duration_s: np.ndarray) -> go.Figure:
    """Share of steps and share of busy time at each batch size (counted in numpy, not in JS)."""
    sizes = np.asarray(batch_size, dtype=np.int64)
    steps = np.bincount(sizes)
    busy = np.bincount(sizes, weights=duration_s)
    present = np.flatnonzero(steps)
    fig = go.Figure([
        go.Bar(x=present, y=_f4(steps[present] / max(steps.sum(), 1)), name="share of steps"),
        go.Bar(x=present, y=_f4(busy[present] / max(busy.sum(), 1e-300)),
               name="share of busy time"),
    ])
    fig.update_layout(barmode="group")
    return styled(fig, "Batch size (sequences per step)", "batch size", "share")


def grouped_bar_figure(title: str, categories: Sequence[str],
                       series: Mapping[str, Sequence[float | None]], y_title: str,
                       colors: Mapping[str, str] | None = None, log: bool = True) -> go.Figure:
    """Bars per category, one colour per series (e.g. mean and p99 TTFT of each run; colors
    names them, e.g. PHASE_COLORS); log: linear/log buttons on the value axis."""
    fig = go.Figure([
        go.Bar(x=list(categories), y=[np.nan if v is None else v for v in values], name=name,
               marker={"color": colors[name]} if colors and name in colors else None)
        for name, values in series.items()
    ])
    fig.update_layout(barmode="group")
    if log:
        log_toggle(fig, ("yaxis",), "y ")
    return styled(fig, title, "", y_title)
