"""The validation report: simulated vs real, per metric and per load level, in one HTML file.

Reads a `batchsim validate` folder (validation.json and the per-point tables) and shows how far
the simulation is from the real engine: the error table, each headline metric real vs simulated
across loads, the signed error of every metric, latency distributions per load, and the cost
model judged step by step on the steps that really ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchsim.reports import figures
from batchsim.reports.fmt import display_path, metric_label
from batchsim.reports.html import Section, cards, table, write_report
from batchsim.reports.validation_parts import (
    REAL_COLOR,
    SIM_COLOR,
    cdf_figure,
    error_heatmap,
    jitter_note,
    metric_rows,
    read_point_table,
)
from batchsim.sim.outputs import read_json
from batchsim.sim.validation.plan import TARGET_METRICS

# Metrics drawn real vs sim across loads (one small chart each).
_HEADLINE = ("request_throughput", "ttft_ms.mean", "ttft_ms.p99", "tpot_ms.mean",
             "itl_ms.p99", "e2el_ms.mean", "e2el_ms.p99", "queue_ms.mean",
             "gpu_busy_fraction", "mean_batch_size")


def write_validation_report(run_dir: Path, out: Path) -> Path:
    """Render run_dir's validation.json (+ per-point CSVs) to the HTML file `out`."""
    run_dir = Path(run_dir)
    doc = read_json(run_dir / "validation.json")
    if doc.get("kind") == "observed":
        from batchsim.reports.observed import write_observed_report

        return write_observed_report(doc, run_dir, out)
    sections = [
        _summary(doc),
        Section("Real vs simulated across load levels", [_headline_figure(doc)]),
        Section("Signed relative error (sim − real) / real", [error_heatmap(doc)],
                notes=["Positive: the simulation predicts more than the engine did."]),
        Section("E2EL distribution per load level", [cdf_figure(doc, run_dir, "e2el_ms")]),
        Section("Cost model on the steps that really ran", [_step_figure(doc, run_dir)],
                html=_step_table(doc),
                notes=["Each real step's measured duration against the profile's prediction "
                       "for exactly that step shape: error here is the cost model's own; "
                       "error in the metrics beyond it comes from what happens between steps."]),
    ]
    subtitle = (f"policy {doc['policy']} · profile {display_path(str(doc['profile'].get('path')))} "
                f"(digest {doc['profile'].get('digest')}) · {doc['engine']['model']} on "
                f"{doc['engine']['device_name']}")
    return write_report(out, f"Validation: {doc['policy']}", sections, subtitle=subtitle)


def _summary(doc: dict[str, Any]) -> Section:
    errors = doc["errors"]
    items = {"capacity (req/s)": f"{doc['capacity']['request_rate']:.3g}",
             "load levels": ", ".join(f"{x:g}" for x in doc["loads"])}
    for m in TARGET_METRICS:
        mape = errors[m]["mape"]
        items[f"MAPE {metric_label(m)}"] = "n/a" if mape is None else f"{mape * 100:.1f}%"
    hosts = [p["host_overhead"]["per_step_mean_s"] for p in doc["points"]]
    if all(h is not None for h in hosts):  # a server that does not report it: unknown
        items["host time per step"] = f"{np.mean(hosts) * 1e3:.3f} ms"
    levels = [p.get("step_cost_level") for p in doc["points"]]
    if all(levels):
        items["step cost level (real / predicted)"] = ", ".join(f"{x:.2f}x" for x in levels)
    rows = metric_rows(doc)
    engine = doc["engine"]
    notes = [f"command: {doc['command']}", jitter_note(doc),
             f"engine: torch {engine.get('torch')}, transformers {engine.get('transformers')}, "
             f"{engine['dtype']}, threads {engine.get('threads')}"]
    return Section("Summary", html=cards(items) + table(rows), notes=[n for n in notes if n])


def _headline_figure(doc: dict[str, Any]) -> go.Figure:
    cols = 5
    rows = -(-len(_HEADLINE) // cols)
    fig = make_subplots(rows=rows, cols=cols, vertical_spacing=0.22,
                        subplot_titles=[metric_label(m) for m in _HEADLINE])
    loads = [p["load"] for p in doc["points"]]
    for k, name in enumerate(_HEADLINE):
        r, c = k // cols + 1, k % cols + 1
        for side, color in (("real", REAL_COLOR), ("sim", SIM_COLOR)):
            fig.add_trace(go.Scatter(
                x=loads, y=[p["comparison"][name][side] for p in doc["points"]],
                mode="lines+markers", name=side, legendgroup=side, showlegend=k == 0,
                line={"color": color}), row=r, col=c)
    fig.update_xaxes(title_text="load")
    fig.update_layout(height=300 * rows)
    return figures.styled(fig, "Real and simulated, per load level")


def _step_figure(doc: dict[str, Any], run_dir: Path) -> go.Figure:
    fig = go.Figure()
    top = 0.0
    for p in doc["points"]:
        df = read_point_table(run_dir, p, "real", "steps.csv")
        if df is None or "predicted_s" not in df:
            continue
        for phase, g in df.groupby("phase"):
            fig.add_trace(go.Scatter(
                x=g["duration_s"] * 1e3, y=g["predicted_s"] * 1e3, mode="markers",
                marker={"size": 4, "opacity": 0.6},
                name=f"{phase} @ load {p['load']:g}"))
        top = max(top, float(df["duration_s"].max()), float(df["predicted_s"].max()))
    fig.add_trace(go.Scatter(x=[0, top * 1e3], y=[0, top * 1e3], mode="lines",
                             name="prediction = measurement", line={"color": "#888"}))
    return figures.styled(fig, "Each real step: predicted vs measured", "measured step (ms)",
                          "predicted step (ms)")


def _step_table(doc: dict[str, Any]) -> str:
    rows = []
    for p in doc["points"]:
        for kind, e in p.get("step_prediction", {}).items():
            rows.append({"load": f"{p['load']:g}", "steps": kind, "n": e["num_steps"],
                         "mean signed error": f"{e['mean_signed_error']:+.1%}",
                         "MAPE": f"{e['mape']:.1%}", "real total s": e["real_total_s"],
                         "predicted total s": e["predicted_total_s"]})
        h = p["host_overhead"]
        rows.append({"load": f"{p['load']:g}", "steps": "host time between steps",
                     "n": h["num_steps"], "mean signed error": None, "MAPE": None,
                     "real total s": h["total_s"], "predicted total s": 0.0})
        level = p.get("step_cost_level")
        if level is not None:
            rows.append({"load": f"{p['load']:g}",
                         "steps": "step cost level: real / predicted, all device steps",
                         "n": h["num_steps"], "mean signed error": f"{level:.3f}x",
                         "MAPE": None, "real total s": None, "predicted total s": None})
        drift = p.get("machine_drift") or {}
        if drift.get("ratio") is not None:
            rows.append({"load": f"{p['load']:g}",
                         "steps": "machine drift: profile points around the point / profiled",
                         "n": len(drift["points"]), "mean signed error": f"{drift['ratio']:.3f}x",
                         "MAPE": None, "real total s": None, "predicted total s": None})
    return table(rows)
