"""The profile report: are the fitted cost models good enough to simulate with?

Written next to the profile by `batchsim profile` (`<profile>.html`) and by
`batchsim report PROFILE.json`. It shows every measured point against the fitted model (per step
kind, the measured times as points and the model's prediction at the same shapes as lines, one
line per batch size), the relative residuals, the cross-validated errors the fit reported, and the
memory facts the simulator budgets KV with. An analytic profile has no points: only its models'
CV table (empty) and memory facts are shown, under the analytic warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from batchsim.policies.base import StepShape
from batchsim.reports import figures
from batchsim.reports.fmt import percent
from batchsim.reports.html import Section, table, write_report
from batchsim.reports.run_report import ANALYTIC_WARNING, config_rows
from batchsim.sim.outputs import read_json
from batchsim.sim.profile import Profile, load_profile
from batchsim.sim.shipped import is_shipped, resolve

# For each step kind: the feature on the x axis and the one whose values make separate lines.
AXES = {
    "prefill": ("num_prefill_tokens", "num_seqs"),
    "decode": ("decode_ctx_tokens", "num_decode_seqs"),
    "mixed": ("num_prefill_tokens", "num_decode_seqs"),
}
SHAPE_FIELDS = StepShape._fields
# the shape fields as people name them (axis titles, legend entries)
_AXIS_NAMES = {"num_prefill_tokens": "prefill tokens", "decode_ctx_tokens":
               "decode context tokens (sum over the batch)", "num_tokens": "tokens"}
_GROUP_NAMES = {"num_seqs": "sequences", "num_decode_seqs": "decode sequences"}


def points_table(profile: Profile, doc: dict[str, Any]) -> pd.DataFrame:
    """One row per raw measured point with the fitted model's prediction; empty if none."""
    rows = []
    for point in doc.get("points") or []:
        key = point.get("model")
        if key not in profile.cost_models or point.get("time_s") is None:
            continue
        shape = StepShape(*(int(point[f]) for f in SHAPE_FIELDS))
        rows.append({"model": key, **{f: point[f] for f in SHAPE_FIELDS},
                     "measured_ms": float(point["time_s"]) * 1e3,
                     "predicted_ms": profile.cost_models[key].predict(shape) * 1e3})
    df = pd.DataFrame(rows, columns=["model", *SHAPE_FIELDS, "measured_ms", "predicted_ms"])
    df["residual"] = (df["predicted_ms"] - df["measured_ms"]) / df["measured_ms"]
    return df


def fit_figure(key: str, pts: pd.DataFrame) -> go.Figure:
    """Measured points (markers) and the fitted model at the same shapes (lines), per group."""
    x_col, group_col = AXES.get(key.rsplit(".", 1)[-1], ("num_tokens", "num_seqs"))
    fig = go.Figure()
    for i, (group, g) in enumerate(pts.groupby(group_col)):
        g = g.sort_values(x_col)
        color = figures.PALETTE[i % len(figures.PALETTE)]
        name = f"{group:,} {_GROUP_NAMES.get(group_col, group_col)}"
        fig.add_trace(go.Scatter(x=g[x_col], y=g["measured_ms"], mode="markers", name=name,
                                 legendgroup=name, marker={"color": color, "size": 7}))
        fig.add_trace(go.Scatter(x=g[x_col], y=g["predicted_ms"], mode="lines", name="fit",
                                 legendgroup=name, showlegend=False,
                                 line={"color": color, "width": 1.5}))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return figures.styled(fig, f"{key}: measured (points) vs fitted (lines)",
                          _AXIS_NAMES.get(x_col, x_col), "step time (ms)")


def _measured_range(pts: pd.DataFrame | None, key: str, col: str) -> tuple[float, float] | None:
    """(min, max) of col over the measured points of cost model key; None: none measured."""
    if pts is None or not len(pts):
        return None
    values = pts.loc[pts["model"] == key, col]
    return (float(values.min()), float(values.max())) if len(values) else None


def _curve(fig: go.Figure, x: np.ndarray, y: list[float], name: str, color: str,
           measured: tuple[float, float] | None, col: int) -> None:
    """A model curve: solid over the measured range, dotted where it extrapolates."""
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, legendgroup=name,
                             line={"color": color, "width": 1.5,
                                   "dash": "dot" if measured else "solid"}), row=1, col=col)
    if measured:
        inside = (x >= measured[0]) & (x <= measured[1])
        fig.add_trace(go.Scatter(x=x[inside], y=np.asarray(y)[inside], mode="lines",
                                 name=name, legendgroup=name, showlegend=False,
                                 line={"color": color, "width": 3}), row=1, col=col)


def model_curves_figure(profile: Profile, pts: pd.DataFrame | None = None) -> go.Figure:
    """What the simulator will charge: decode steps vs batch size at three contexts, packed
    prefill vs prompt length. Drawn for every profile, measured or analytic; with measured
    points, each curve is solid over the measured range and dotted beyond it."""
    batch = np.unique(np.geomspace(1, 256, 40).astype(int))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[
        "packed.decode: step time vs batch", "packed.prefill: one prompt, step time vs tokens"])
    decode = profile.cost_models["packed.decode"]
    decode_range = _measured_range(pts, "packed.decode", "num_decode_seqs")
    for i, ctx in enumerate((512, 2048, 8192)):
        y = [decode.predict(StepShape(int(b), 0, int(b), 0, int(b) * ctx)) * 1e3 for b in batch]
        _curve(fig, batch, y, f"context {ctx}", figures.PALETTE[i], decode_range, 1)
    tokens = np.unique(np.geomspace(16, profile.max_model_len, 40).astype(int))
    prefill = profile.cost_models["packed.prefill"]
    y = [prefill.predict(StepShape(1, int(n), 0, int(n) * (int(n) + 1) // 2, 0)) * 1e3
         for n in tokens]
    _curve(fig, tokens, y, "prefill", figures.PALETTE[3],
           _measured_range(pts, "packed.prefill", "num_prefill_tokens"), 2)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log", title_text="step time (ms)")
    fig.update_xaxes(title_text="batch size (decode sequences)", col=1)
    fig.update_xaxes(title_text="prompt tokens", col=2)
    measured = decode_range is not None
    return figures.styled(fig, "The fitted models over their whole range"
                          + (" (thick: measured range; dotted: extrapolated)" if measured
                             else ""))


def residual_figure(pts: pd.DataFrame) -> go.Figure:
    """Relative error of the fit at every measured point, by step kind."""
    fig = go.Figure([
        go.Box(y=g["residual"] * 100, name=key, boxpoints="all", jitter=0.4, pointpos=0,
               customdata=g[["measured_ms", "predicted_ms"]],
               hovertemplate="%{y:.1f}% (measured %{customdata[0]:.3f} ms, "
                             "fit %{customdata[1]:.3f} ms)<extra></extra>")
        for key, g in pts.groupby("model")
    ])
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    return figures.styled(fig, "Residuals: (fit − measured) / measured", "",
                           "relative error (%)")


def _pct(fraction: float | None) -> str | None:
    """CV errors as the CLI prints them (15.5%), not as fractions."""
    return None if fraction is None else percent(fraction)


def cv_rows(profile: Profile) -> list[dict[str, Any]]:
    return [{"cost model": key, "form": cv.get("candidate"), "CV MAPE": _pct(cv.get("mape")),
             "CV max APE": _pct(cv.get("max_ape")), "train MAPE": _pct(cv.get("train_mape")),
             "points": cv.get("n_points"), "folds": cv.get("folds")}
            for key, cv in sorted(profile.cv.items())]


def memory_rows(profile: Profile, doc: dict[str, Any]) -> list[dict[str, Any]]:
    m = profile.memory
    gib = 2**30
    free = m.total_bytes * 0.9 - m.weight_bytes - m.activation_reserve_bytes
    rows = [
        {"fact": "device memory", "value": f"{m.total_bytes / gib:.2f} GiB"},
        {"fact": "weights", "value": f"{m.weight_bytes / gib:.3f} GiB"},
        {"fact": "activation reserve", "value": f"{m.activation_reserve_bytes / gib:.3f} GiB"},
        {"fact": "KV bytes per token", "value": f"{m.kv_bytes_per_token:,}"},
        {"fact": "KV tokens at gpu_memory_utilization 0.9",
         "value": f"{max(0, int(free // m.kv_bytes_per_token)):,}"},
        {"fact": "max model length", "value": f"{profile.max_model_len:,}"},
    ]
    limits = doc.get("limits") or {}
    if "max_batch_size" in limits:
        rows.append({"fact": "largest batch that fit (OOM search)",
                     "value": f"{limits['max_batch_size']} at context "
                              f"{limits.get('reference_context')} ({limits.get('bound')})"})
    if profile.kv_copy:
        rows.append({"fact": "CPU→GPU KV copy",
                     "value": f"{profile.kv_copy.get('bytes_per_s', 0) / 1e9:.2f} GB/s"})
    return rows


def profile_sections(profile: Profile, doc: dict[str, Any]) -> list[Section]:
    pts = points_table(profile, doc)
    fits = [fit_figure(str(key), g) for key, g in pts.groupby("model")]
    fit_notes = ([] if len(pts) else
                 ["This profile has no measured points (analytic), so there is nothing to plot."])
    residual = [residual_figure(pts)] if len(pts) else []
    return [
        Section("Cross-validated error of each cost model", html=table(cv_rows(profile)),
                notes=["MAPE = mean absolute percentage error on held-out grid points (k-fold); "
                       "a model is only as trustworthy as this number."]),
        Section("Measured points vs fitted models", [model_curves_figure(profile, pts), *fits],
                notes=fit_notes),
        Section("Residuals", residual),
        Section("Memory", html=table(memory_rows(profile, doc))),
        Section("Fingerprint", html=table(config_rows(
            {"source": profile.source, "digest": profile.digest, **profile.fingerprint,
             "model": profile.model, "run": doc.get("run") or {}}))),
    ]


def default_report_path(profile: Path) -> Path:
    """Where a profile's report goes by default: beside it, `<profile>.html`, except for a
    shipped profile, whose folder is not the user's: `./<name>.html` in the current folder."""
    profile = Path(profile)
    return Path(profile.stem + ".html") if is_shipped(profile) else profile.with_suffix(".html")


def write_profile_report(path: Path, out: Path | None = None) -> Path:
    """Report of a profile file; default output: `default_report_path(path)`."""
    path = resolve(Path(path), "profiles")
    profile = load_profile(path)
    doc = read_json(path)
    out = out or default_report_path(path)
    warnings = [ANALYTIC_WARNING] if profile.source == "analytic" else []
    device = str(profile.fingerprint.get("device"))
    # the source word once: "h100-sxm (analytic, vllm engine)" already says it
    source = "" if profile.source in device else f" · {profile.source}"
    subtitle = (f"{profile.model.get('name')} · {device} · "
                f"{profile.fingerprint.get('dtype')}{source} · digest {profile.digest}")
    num = len(doc.get("points") or [])
    # an analytic profile's points are computed on the grid, not measured
    what = "grid points (computed)" if profile.source == "analytic" else "measured points"
    return write_report(out, f"batchsim profile: {path.name}", profile_sections(profile, doc),
                        f"{subtitle} · {num:,} {what}", warnings)
