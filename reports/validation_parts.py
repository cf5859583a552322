"""Pieces of the validation reports shared by the live one (validation.py) and the observed one
(observed.py): the metric table, the error heatmap, the distributions, the notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from batchsim.reports.fmt import FRACTIONS, metric_label, percent
from batchsim.sim.validation.plan import METRIC_NAMES, point_label

REAL_COLOR, SIM_COLOR = "#1f77b4", "#ff7f0e"


def metric_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary table: one row per metric, real / sim / error per point, then MAPE."""
    rows = []
    for name in METRIC_NAMES:
        row: dict[str, Any] = {"metric": metric_label(name)}
        for p in doc["points"]:
            c = p["comparison"][name]
            lab = point_label(p)
            row[f"real @{lab}"] = _shown(name, c["real"])
            row[f"sim @{lab}"] = _shown(name, c["sim"])
            row[f"err @{lab}"] = None if c["rel_error"] is None else f"{c['rel_error']:+.1%}"
        mape = doc["errors"][name]["mape"]
        row["MAPE"] = None if mape is None else f"{mape:.1%}"
        rows.append(row)
    return rows


def _shown(name: str, value: Any) -> Any:
    """A share (GPU busy) as a percentage, other values as they are."""
    return percent(value) if name in FRACTIONS and isinstance(value, float) else value


def jitter_note(doc: dict[str, Any]) -> str:
    if "step_jitter" not in doc:  # written before validate recorded it
        return ""
    jitter = doc["step_jitter"]
    if not jitter:
        return "simulated side: every step at the cost model's prediction (no step jitter)"
    return (f"simulated side: step jitter drawn from the profile's repeats, every metric the "
            f"mean of {jitter.get('replicas', 1)} draws (seed {jitter.get('seed')})")


def error_heatmap(doc: dict[str, Any]) -> go.Figure:
    z, text = [], []
    for name in METRIC_NAMES:
        errs = [p["comparison"][name]["rel_error"] for p in doc["points"]]
        z.append([np.nan if e is None else e * 100 for e in errs])
        text.append(["n/a" if e is None else f"{e * 100:+.1f}%" for e in errs])
    fig = go.Figure(go.Heatmap(
        z=z, x=[_name(p) for p in doc["points"]], y=[metric_label(m) for m in METRIC_NAMES],
        text=text, texttemplate="%{text}", colorscale="RdBu_r", zmid=0,
        colorbar={"title": "%"}))
    fig.update_layout(height=28 * len(METRIC_NAMES) + 120, yaxis={"autorange": "reversed"})
    return fig


def _name(point: dict[str, Any]) -> str:
    return point.get("label") or f"load {point['load']:g}"


def read_point_table(run_dir: Path, point: dict[str, Any], side: str,
                     name: str) -> pd.DataFrame | None:
    """A point's per-side CSV (requests.csv, steps.csv), or None when absent."""
    path = run_dir / point["folder"] / side / name
    return pd.read_csv(path) if path.exists() else None


def cdf_figure(doc: dict[str, Any], run_dir: Path, column: str) -> go.Figure:
    fig = go.Figure()
    dashes = ("solid", "dash", "dot", "dashdot")
    for k, p in enumerate(doc["points"]):
        for side, color in (("real", REAL_COLOR), ("sim", SIM_COLOR)):
            df = read_point_table(run_dir, p, side, "requests.csv")
            if df is None:
                continue
            values = np.sort(df[column].dropna().to_numpy())
            if not len(values):
                continue
            fig.add_trace(go.Scatter(
                x=values, y=np.arange(1, len(values) + 1) / len(values), mode="lines",
                name=f"{side} @ {_name(p)}",
                line={"color": color, "dash": dashes[k % len(dashes)]}))
    fig.update_layout(xaxis_title=column, yaxis_title="fraction of requests")
    return fig
