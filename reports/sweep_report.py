"""The sweep report: which configuration to run, and the trade-off curves behind the answer.

Top of the page: one sentence naming the recommended configuration (the one that sustains the
highest request rate under the SLO). Then the latency–throughput curve of every configuration as
the load grows (seed 001's trade-off curve) with the Pareto frontier over all points, the SLO
attainment per load, the preset's seed-shaped tables, and the whole sweep table.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from batchsim.reports import figures
from batchsim.reports.fmt import FRACTIONS, metric_label, percent
from batchsim.reports.html import Section, table, write_report
from batchsim.reports.run_report import ANALYTIC_WARNING, config_rows
from batchsim.sim.outputs import read_json, read_table
from batchsim.sim.sweep.analysis import (
    SLO_TARGET,
    max_rate_under_slo,
    pareto_mask,
    recommendation,
    slo_text,
)
from batchsim.sim.sweep.presets import SHARE_COLUMNS

# y-axis choices of the trade-off figure (first = shown on opening)
LATENCY_CHOICES = (("e2el_p99_ms", "p99 E2EL (ms)"), ("e2el_mean_ms", "mean E2EL (ms)"),
                   ("ttft_p99_ms", "p99 TTFT (ms)"), ("ttft_mean_ms", "mean TTFT (ms)"),
                   ("tpot_p99_ms", "p99 TPOT (ms)"), ("tpot_mean_ms", "mean TPOT (ms)"))
TABLE_COLUMNS = ("config", "request_rate", "request_throughput", "output_token_throughput",
                 "ttft_mean_ms", "ttft_p99_ms", "tpot_mean_ms", "tpot_p99_ms", "e2el_mean_ms",
                 "e2el_p99_ms", "gpu_busy_fraction", "mean_batch_size", "preemptions",
                 "slo_attainment")


def tradeoff_figure(table: pd.DataFrame, x_col: str = "output_token_throughput") -> go.Figure:
    """Latency against throughput, one line per configuration along its loads, plus the Pareto
    frontier; buttons switch the latency metric (the frontier is recomputed for each)."""
    configs = list(dict.fromkeys(table["config"]))
    groups = [table[table["config"] == c].sort_values("request_rate") for c in configs]
    fig = go.Figure()
    for i, (config, g) in enumerate(zip(configs, groups, strict=True)):
        fig.add_trace(go.Scatter(
            x=g[x_col], y=g[LATENCY_CHOICES[0][0]], mode="lines+markers", name=config,
            line={"color": figures.PALETTE[i % len(figures.PALETTE)], "width": 1.5},
            marker={"size": 6},
            customdata=np.stack([g["request_rate"], g["request_throughput"]], axis=1),
            hovertemplate="%{x:,.0f} tok/s, %{y:,.1f} ms<br>rate %{customdata[0]:.3g} req/s"
                          "<extra>" + html.escape(config) + "</extra>"))

    def frontier(y_col: str) -> tuple[list[float], list[float]]:
        mask = pareto_mask(table[x_col].to_numpy(), table[y_col].to_numpy())
        pts = table[mask].sort_values(x_col)
        return pts[x_col].tolist(), pts[y_col].tolist()

    fx, fy = frontier(LATENCY_CHOICES[0][0])
    # drawn last, wide and translucent under open markers: visible where it runs along a curve
    fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines+markers", name="Pareto frontier",
                             line={"color": "rgba(20,20,20,0.35)", "width": 7},
                             marker={"symbol": "circle-open", "size": 12, "color": "#111",
                                     "line": {"width": 2}}))
    def dtick(y_col: str) -> str | None:
        """Over a few decades only 2 and 5 between the powers of ten are labelled (plotly's
        default labels every digit there, and they overlap)."""
        y = table[y_col].to_numpy(dtype=float)
        y = y[np.isfinite(y) & (y > 0)]
        return "D2" if len(y) and np.log10(y.max() / y.min()) >= 1.5 else None

    buttons = []
    for y_col, label in LATENCY_CHOICES:
        xs = [g[x_col].tolist() for g in groups] + [frontier(y_col)[0]]
        ys = [g[y_col].tolist() for g in groups] + [frontier(y_col)[1]]
        buttons.append({"label": label, "method": "update",
                        "args": [{"x": xs, "y": ys},
                                 {"yaxis.title.text": label, "yaxis.dtick": dtick(y_col)}]})
    # left, in the top margin's lower strip: clear of plotly's toolbar (top right)
    fig.update_layout(updatemenus=[{"type": "dropdown", "x": 0.0, "xanchor": "left", "y": 1.0,
                                    "yanchor": "bottom", "pad": {"b": 10}, "buttons": buttons}],
                      height=520)
    fig.update_yaxes(type="log", dtick=dtick(LATENCY_CHOICES[0][0]))
    return figures.styled(fig, "Latency vs throughput as the load grows (one line per "
                          "configuration)", "output throughput (tok/s)", LATENCY_CHOICES[0][1])


def attainment_figure(table: pd.DataFrame) -> go.Figure:
    """Share of requests within the SLO at each load, per configuration, with the 99% line."""
    fig = go.Figure()
    for i, (config, g) in enumerate(table.groupby("config", sort=False)):
        g = g[np.isfinite(g["request_rate"])].sort_values("request_rate")
        fig.add_trace(go.Scatter(x=g["request_rate"], y=g["slo_attainment"],
                                 mode="lines+markers", name=str(config),
                                 line={"color": figures.PALETTE[i % len(figures.PALETTE)]}))
    fig.add_hline(y=SLO_TARGET, line={"color": "#a00", "dash": "dash", "width": 1},
                  annotation_text=f"{SLO_TARGET:.0%}")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return figures.styled(fig, "Share of requests meeting the SLO", "request rate (req/s)",
                          "SLO attainment")


def _display_rows(df: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows with the metrics' names; shares (GPU busy, SLO attainment) as percentages."""
    cols = [c for c in columns if c in df]

    def cell(column: str, value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return percent(value) if column in FRACTIONS and isinstance(value, float) else value

    return [{metric_label(str(c)): cell(str(c), v) for c, v in row.items()}
            for row in df[cols].to_dict("records")]


def sweep_sections(df: pd.DataFrame, meta: Mapping[str, Any],
                   preset_tables: Sequence[tuple[str, list[dict[str, Any]]]] = ()) -> list[Section]:
    slo = meta.get("goodput")
    lead = f'<p class="lead"><b>{html.escape(recommendation(df, slo))}</b></p>'
    sections = [Section("", html=lead)]
    sections += [Section(title, html=_scroll(table(
        [{k: percent(v) if k in SHARE_COLUMNS and isinstance(v, float) else v
          for k, v in row.items()} for row in rows])))
                 for title, rows in preset_tables]
    finite = df[np.isfinite(df["request_rate"])]
    sections.append(Section("Latency–throughput trade-off", [tradeoff_figure(df)], notes=[
        "Each line is one configuration; its points are the tested request rates, lowest on the "
        "left. The wide grey line with open circles is the Pareto frontier over all points: no "
        "point beats a frontier point on both throughput and latency. Use the menu to change "
        "the latency metric."]))
    if slo and "slo_attainment" in df:
        limits = max_rate_under_slo(df)
        sections.append(Section(
            "Highest request rate meeting the SLO",
            [attainment_figure(finite)] if len(finite) else [],
            html=table(_display_rows(limits, list(limits.columns))),
            notes=[f"A rate counts when ≥ {SLO_TARGET:.0%} of its requests meet every SLO "
                   f"({slo_text(slo)}) and so does every lower tested rate. \u201cFails at\u201d "
                   "is the first tested rate that does not; no max rate: even the lowest "
                   "fails; no \u201cfails at\u201d: the limit is above the tested range."]))
    sections.append(Section("All points", html=_scroll(table(_display_rows(df, TABLE_COLUMNS)))))
    sections.append(Section("Sweep configuration", html=table(config_rows(shown_meta(meta)))))
    return sections


def _scroll(inner: str) -> str:
    """A wide table scrolls sideways instead of spilling off the page."""
    return f'<div style="overflow-x:auto">{inner}</div>'


def shown_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """sweep.json for the page: configurations by label; the base synthetic rate (replaced at
    every point by the swept rate) left out."""
    shown = dict(meta)
    shown["configurations"] = "; ".join(c["label"] for c in meta.get("configurations", []))
    workload = dict(shown.get("workload") or {})
    if isinstance(workload.get("synthetic"), dict):
        workload["synthetic"] = {k: v for k, v in workload["synthetic"].items()
                                 if k != "request_rate"}
    shown["workload"] = workload
    return shown


def write_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    """The report of a sweep folder (sweep.csv + sweep.json); default: SWEEP_DIR/report.html."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "sweep.csv").is_file():
        raise ValueError(f"{sweep_dir} is not a sweep folder: it has no sweep.csv")
    table_df = read_table(sweep_dir / "sweep.csv")
    meta = read_json(sweep_dir / "sweep.json")
    return render_sweep_report(table_df, meta, out or sweep_dir / "report.html")


def render_sweep_report(table_df: pd.DataFrame, meta: Mapping[str, Any], out: Path) -> Path:
    preset_tables: list[tuple[str, list[dict[str, Any]]]] = []
    if meta.get("preset"):
        from batchsim.sim.sweep.presets import get_preset

        preset_tables = get_preset(meta["preset"]).tables(table_df)
    profile = meta.get("profile") or {}
    warnings = [ANALYTIC_WARNING] if profile.get("source") == "analytic" else []
    n_configs = table_df["config"].nunique()
    subtitle = (f"{len(table_df)} points: {n_configs} configurations × "
                f"{len(table_df) // max(n_configs, 1)} loads · workload "
                f"{(meta.get('workload') or {}).get('source', '?')} · profile "
                f"{profile.get('model')} on {profile.get('device')}"
                + ("" if str(profile.get("source")) in str(profile.get("device"))
                   else f" ({profile.get('source')})"))
    title = f"batchsim sweep{': ' + meta['preset'] if meta.get('preset') else ''}"
    return write_report(out, title, sweep_sections(table_df, meta, preset_tables), subtitle,
                        warnings)
