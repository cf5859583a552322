"""The report of `batchsim validate --observed`: a simulation against a real server's run.

The same summary table, error heatmap and distributions as a validation report (one point,
labelled "observed"), plus each request's TTFT and E2EL real against simulated, and the
server's throughput, running and waiting over time against the simulation's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchsim.reports.fmt import display_path, metric_label
from batchsim.reports.html import Section, cards, write_report
from batchsim.reports.html import table as html_table
from batchsim.reports.validation_parts import (
    REAL_COLOR,
    SIM_COLOR,
    cdf_figure,
    error_heatmap,
    jitter_note,
    metric_rows,
)
from batchsim.sim.validation.plan import TARGET_METRICS

_SERIES = (("prompt_throughput", "prompt tokens/s"), ("gen_throughput", "generated tokens/s"),
           ("running", "running requests"), ("waiting", "waiting requests"))


def write_observed_report(doc: dict[str, Any], run_dir: Path, out: Path) -> Path:
    """Render an observed validation folder (validation.json + its CSVs) to `out`."""
    sections = [
        _summary(doc),
        Section("Signed relative error (sim − real) / real", [error_heatmap(doc)],
                notes=["Positive: the simulation predicts more than the server did. Metrics a "
                       "request log cannot tell (ITL, GPU busy, batch size) are n/a."]),
        Section("TTFT and E2EL distributions",
                [cdf_figure(doc, run_dir, "ttft_ms"), cdf_figure(doc, run_dir, "e2el_ms")]),
    ]
    per_request = run_dir / "per_request.csv"
    if per_request.exists():
        sections.append(Section("Per request: real vs simulated",
                                [_scatter(pd.read_csv(per_request))],
                                notes=["One point per request; on the diagonal the simulation "
                                       "matches the server exactly (per_request.csv)."]))
    series = run_dir / "timeseries.csv"
    if series.exists():
        sections.append(Section("Over time: the server's stats against the simulation's",
                                [_timeseries(pd.read_csv(series))],
                                notes=["Real: the server's timeseries.csv at each tick. "
                                       "Simulated at the same ticks: tokens of steps ending in "
                                       "the last interval, running and waiting at the tick."]))
    obs = doc["observed"]
    profile = display_path(str(doc["profile"].get("path")))
    subtitle = (f"policy {doc['policy']} · profile {profile} ({doc['profile'].get('source')}) "
                f"· observed {obs['source']}")
    return write_report(out, f"Observed run vs simulation: {doc['policy']}", sections,
                        subtitle=subtitle)


def _summary(doc: dict[str, Any]) -> Section:
    point = doc["points"][0]
    items = {"requests": str(point["num_requests"]),
             "observed": doc["observed"]["kind"].replace("_", " ")}
    for m in ("ttft_ms.mean", "tpot_ms.mean", *TARGET_METRICS):
        err = point["comparison"][m]["rel_error"]
        items[f"error {metric_label(m)}"] = "n/a" if err is None else f"{err * 100:+.1f}%"
    notes = [f"command: {doc['command']}", jitter_note(doc)]
    engine = doc.get("engine_config")
    if engine:
        notes.append("engine config " + engine["path"] + ": " + ", ".join(
            f"{k}={v['value']}" for k, v in engine["knobs"].items()))
        notes += [f"not modelled: {line}" for line in engine.get("not_modelled", [])]
    return Section("Summary", html=cards(items) + html_table(metric_rows(doc)),
                   notes=[n for n in notes if n])


def _scatter(df: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT (ms)", "E2EL (ms)"))
    for col, name in enumerate(("ttft_ms", "e2el_ms"), start=1):
        real, sim = df[f"real_{name}"].to_numpy(), df[f"sim_{name}"].to_numpy()
        fig.add_trace(go.Scattergl(x=real, y=sim, mode="markers", text=df["id"].astype(str),
                                   marker={"size": 5, "opacity": 0.6, "color": SIM_COLOR},
                                   name=name, showlegend=False), row=1, col=col)
        top = float(np.nanmax(np.concatenate([real, sim]))) if len(df) else 1.0
        fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", showlegend=False,
                                 line={"color": "#888"}), row=1, col=col)
        fig.update_xaxes(title_text="real", row=1, col=col)
        fig.update_yaxes(title_text="simulated", row=1, col=col)
    fig.update_layout(height=420)
    return fig


def _timeseries(df: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=2, cols=2, subplot_titles=[title for _, title in _SERIES])
    for k, (name, _) in enumerate(_SERIES):
        r, c = k // 2 + 1, k % 2 + 1
        for side, color in (("real", REAL_COLOR), ("sim", SIM_COLOR)):
            fig.add_trace(go.Scatter(x=df["t"], y=df[f"{side}_{name}"], mode="lines",
                                     name=side, legendgroup=side, showlegend=k == 0,
                                     line={"color": color}), row=r, col=c)
    fig.update_xaxes(title_text="s since the first request")
    fig.update_layout(height=600)
    return fig
