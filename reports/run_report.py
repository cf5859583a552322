"""The run report: `report.html` in every run folder, built from the folder's tables alone.

`simulate` writes it through `write_into_run` (one of `batchsim.sim.run.write_run`'s writers, so it
is part
of the atomic folder write); `batchsim report RUN_DIR` rebuilds it from disk with the same code.
The per-token ITL samples are not kept in the run folder, so their distribution is stored as
quantiles in `itl_cdf.csv` (a few KB) when the run is written.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batchsim.reports import figures
from batchsim.reports.fmt import display_path, latency, number
from batchsim.reports.html import Section, cards, table, write_report
from batchsim.reports.itl_cdf import ITL_FILE, write_itl_cdf
from batchsim.reports.series import (
    MAX_POINTS,
    bin_edges,
    decimate,
    quantile_cdf,
    token_rate,
    waiting_count,
)
from batchsim.sim.outputs import read_json, read_table
from batchsim.sim.overload import overload
from batchsim.sim.recorder import Recorder

if TYPE_CHECKING:
    from batchsim.sim.run import RunOutput

REPORT_FILE = "report.html"
# every steps column the report reads (run_sections, time_series, time_share, replica_view)
REPORT_STEP_COLUMNS = ("start_s", "duration_s", "phase", "batch_size", "kv_blocks_used",
                       "kv_cached_blocks", "replica")
LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL"),
             ("queue", "Queue"))
GPU_BUSY_NOTE = ("GPU busy is the share of the run with a step running, not saturation: a "
                 "continuous-batching server runs a step whenever any request is in flight, "
                 "so it reads 100% at moderate load while batches still have room (see the "
                 "running batch and KV panels for how full they are).")
ANALYTIC_WARNING = ("Profile source: analytic. These step costs are computed from FLOPs, bytes and "
                    "the GPU's published peaks with kernel efficiencies calibrated on public "
                    "measurements, not measured on this GPU: per-step error 5-13% where GEMMs "
                    "dominate, 22-34% for attention-heavy steps of a GPU left out of the "
                    "calibration (docs/ANALYTIC.md). Compare policies with it; profile your "
                    "hardware (`batchsim profile`) before trusting absolute numbers.")


@dataclass
class RunData:
    """What a report needs from one run folder."""

    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    requests: pd.DataFrame
    steps: pd.DataFrame
    itl_cdf: tuple[np.ndarray, np.ndarray] | None  # (itl_ms, probability); None: not stored


def load_run(run_dir: Path) -> RunData:
    """Read a run folder written by `batchsim simulate`; ValueError naming what is missing."""
    run_dir = Path(run_dir)
    for name in ("config.json", "metrics.json", "requests.csv", "steps.csv"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} is not a run folder: it has no {name}")
    itl = None
    if (run_dir / ITL_FILE).is_file():
        df = read_table(run_dir / ITL_FILE)
        itl = (df["itl_ms"].to_numpy(), df["probability"].to_numpy())
    return RunData(
        name=run_dir.name,
        config=read_json(run_dir / "config.json"),
        metrics=read_json(run_dir / "metrics.json"),
        requests=read_table(run_dir / "requests.csv"),
        steps=read_table(run_dir / "steps.csv"),
        itl_cdf=itl,
    )


def latency_cdfs(run: RunData) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"TTFT (ms)": (x, p), ...} for TTFT, TPOT, ITL, E2EL of the completed requests."""
    done = run.requests[run.requests["status"] == "completed"]
    out = {}
    for key, label in LATENCIES[:4]:
        if key == "itl":
            out[f"{label} (ms)"] = run.itl_cdf if run.itl_cdf is not None else (np.zeros(0),) * 2
        else:
            out[f"{label} (ms)"] = quantile_cdf(done[f"{key}_ms"].to_numpy())
    return out


def summary_cards(metrics: dict[str, Any]) -> str:
    m = metrics

    def ms(key: str, stat: str) -> str:
        value = m[key][stat]
        return "–" if value is None else latency(value)

    def frac(key: str, spec: str = ".0%") -> str:
        # None: not known (an observed run from a client sees no steps)
        if m.get(key) is None:
            return "–"
        if spec == ".0%" and 0 < m[key] < 0.01:  # 0.3%, not a misleading 0%
            spec = ".1%"
        return format(m[key], spec)

    items = {
        "completed / requests": f"{m['completed']:,} / {m['num_requests']:,}",
        "request throughput": f"{m['request_throughput']:,.2f} req/s",
        "output throughput": f"{m['output_token_throughput']:,.0f} tok/s",
        "mean TTFT": ms("ttft_ms", "mean"), "p99 TTFT": ms("ttft_ms", "p99"),
        "mean TPOT": ms("tpot_ms", "mean"), "p99 E2EL": ms("e2el_ms", "p99"),
        "GPU busy (not saturation)": frac("gpu_busy_fraction"),
        "prefill time share": frac("prefill_time_share"),
        "mean batch size": frac("mean_batch_size", ".1f"),
        "peak KV use": frac("max_kv_utilization"),
        "preemptions": frac("preemptions", ","),
    }
    if "goodput" in m:
        g = m["goodput"]
        items["goodput"] = f"{g['request_goodput']:,.2f} req/s ({g['good_requests']:,} good)"
    if "prefix_cache" in m:
        c = m["prefix_cache"]
        items["prefix cache hit rate"] = (f"{c['hit_rate']:.0%} of tokens, "
                                          f"{c['block_hit_rate']:.0%} of blocks")
        items["prefill tokens saved"] = f"{c['prefill_tokens_saved']:,}"
    return cards(items)


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = [{"metric": f"{label} (ms)", **metrics[f"{key}_ms"]} for key, label in LATENCIES]
    # one precision per table: latencies in ms to 0.1 (a 305,970.2 ms TTFT, an 8.3 ms TPOT)
    rows = [{k: f"{v:,.1f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    return table(rows, ["metric", "mean", "median", "p90", "p95", "p99"])


def time_series(run: RunData) -> tuple[figures.go.Figure, bool]:
    """Queue length, running batch, KV blocks and throughput on one shared time axis.

    Returns (figure, decimated?): per-step series above MAX_POINTS are cut to their extremes.
    """
    req, steps = run.requests, run.steps
    arrival = req["arrival_s"].to_numpy()
    ends = [arrival.max(), np.nanmax(req["finish_s"].to_numpy(), initial=0.0)]
    if len(steps):
        ends.append(float(steps["start_s"].iloc[-1] + steps["duration_s"].iloc[-1]))
    t_end = float(max(ends))
    edges = bin_edges(float(arrival.min()), t_end)
    grid = np.linspace(float(arrival.min()), t_end, 2001)
    leave = (arrival + req["queue_ms"].to_numpy() / 1e3)
    leave = np.where(req["status"].to_numpy() == "rejected", arrival, leave)
    idx = decimate(steps["batch_size"].to_numpy())
    kv_idx = decimate(steps["kv_blocks_used"].to_numpy())
    start = steps["start_s"].to_numpy()
    centers = (edges[:-1] + edges[1:]) / 2
    out_tok = token_rate(req["first_token_s"].to_numpy(), req["finish_s"].to_numpy(),
                         req["output_tokens"].to_numpy(), edges)
    capacity = run.config.get("kv_capacity_blocks")
    kv_title = "KV blocks used" + (f" (capacity {capacity:,})" if capacity else "")
    kv_series = {"KV blocks": (start[kv_idx], steps["kv_blocks_used"].to_numpy()[kv_idx])}
    if "kv_cached_blocks" in steps:  # enable_prefix_caching: free blocks holding a prefix
        kv_series["cached prefix blocks (free, evictable)"] = (
            start[kv_idx], steps["kv_cached_blocks"].to_numpy()[kv_idx])
    rows = [
        ("waiting requests", {"waiting": (grid, waiting_count(arrival, leave, grid))}),
        ("running batch (sequences per step)",
         {"batch size": (start[idx], steps["batch_size"].to_numpy()[idx])}),
        (kv_title, kv_series),
        ("output throughput (tok/s)", {"output tok/s": (centers, out_tok)}),
    ]
    fig = figures.timeseries_figure(rows, "Queue, batch, KV memory and throughput over time")
    return fig, len(idx) < len(steps) or len(kv_idx) < len(steps)


def time_share(run: RunData) -> dict[str, float]:
    """Seconds of the run spent in prefill, decode and mixed steps, and idle."""
    busy = run.steps.groupby("phase", observed=True)["duration_s"].sum()
    parts = {p: float(busy.get(p, 0.0)) for p in ("prefill", "decode", "mixed")}
    parts["idle"] = max(0.0, float(run.metrics["duration_s"]) - sum(parts.values()))
    return parts


def _setting(value: Any) -> str:
    """A setting's value for people: numbers (and lists of them) via reports.fmt.number, a
    shipped file by its name."""
    if value is None:
        return "–"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(value)
    if isinstance(value, list) and value and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return ", ".join(number(v) for v in value)
    if isinstance(value, str):
        return display_path(value)
    return str(value)


def config_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The resolved configuration as (setting, value) rows, nested keys dotted."""
    rows: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            rows.append({"setting": prefix, "value": _setting(value)})

    walk("", config)
    return rows


def replica_view(run: RunData) -> tuple[RunData, Section | None]:
    """A cluster run (a `replica` column): replica 0's requests and steps for the per-step
    panels, whose series mean one server's, and the section of every replica's metrics.
    A single server: the run itself and no section."""
    rows = run.metrics.get("replicas")
    if not rows or "replica" not in run.steps.columns:
        return run, None
    view = dataclasses.replace(run, steps=run.steps[run.steps["replica"] == 0],
                               requests=run.requests[run.requests["replica"] == 0])
    router = run.config.get("cluster", {}).get("router", "?")
    notes = [f"{len(rows)} replicas behind the {router} router (docs/CLUSTER.md). The summary "
             "and latency distributions are the cluster's; the panels over time, the step "
             "timeline and where the time goes show replica 0 only."]
    return view, Section("Replicas", html=table(rows), notes=notes)


def run_sections(run: RunData) -> list[Section]:
    cluster_run = run
    run, replicas = replica_view(run)
    steps = run.steps
    ts_fig, cut = time_series(run)
    phase = steps["phase"]
    start, duration = steps["start_s"].to_numpy(), steps["duration_s"].to_numpy()
    if isinstance(phase.dtype, pd.CategoricalDtype):  # by code, not a str object per step
        timeline, shown = figures.step_timeline_figure(
            start, duration, phase.cat.codes.to_numpy(),
            names=[str(c) for c in phase.cat.categories])
    else:
        timeline, shown = figures.step_timeline_figure(start, duration,
                                                       phase.astype(str).to_numpy())
    notes = []
    if cut:
        notes.append(f"{len(steps):,} steps: per-step series are downsampled to at most "
                     f"{MAX_POINTS:,} points (each bucket's minimum and maximum are kept).")
    timeline_notes = ([f"Showing {shown:,} of {len(steps):,} steps: per time bucket, the "
                       "shortest and longest step of each phase."] if shown < len(steps) else [])
    share = run.metrics["prefill_time_share"]
    head = [
        Section("Summary", html=summary_cards(run.metrics) + metrics_table(run.metrics)),
        *([replicas] if replicas is not None else []),
        Section("Latency distributions", [figures.cdf_figure(
            {k: {run.name: v} for k, v in latency_cdfs(cluster_run).items()})],
            notes=[f"CDFs drawn from {_num_quantiles(run)} quantiles per metric (finer above "
                   "p99). ITL pools every gap between consecutive tokens of all requests."]),
        Section("Over time", [ts_fig], notes=notes),
    ]
    if not len(steps):  # an observed run (batchsim bench): the client sees no engine steps
        return [*head, Section("Configuration", html=table(config_rows(run.config)),
                               notes=["Measured by a client: no engine steps were seen."])]
    return [
        *head,
        Section("Step timeline", [timeline], notes=timeline_notes),
        Section("Where the time goes", [
            figures.time_share_figure(time_share(run), "Wall-clock time by step phase"),
            figures.batch_histogram_figure(steps["batch_size"].to_numpy(),
                                           steps["duration_s"].to_numpy())],
            notes=[f"Prefill time share = {share:.1%} of busy time (mixed steps counted in "
                   "proportion to their prefill tokens).", GPU_BUSY_NOTE]),
        Section("Configuration and profile", html=table(config_rows(run.config))),
    ]


def _num_quantiles(run: RunData) -> int:
    """How many quantiles each CDF is drawn from (the stored ITL one's, else quantile_cdf's)."""
    if run.itl_cdf is not None:
        return len(run.itl_cdf[0])
    return len(quantile_cdf(np.arange(1000.0))[0])


def render_run_report(run: RunData, out: Path) -> Path:
    policy = run.config.get("policy", "?")
    workload = display_path(run.config.get("workload", {}).get("source", "?"))
    profile = run.config.get("profile", {})
    # the source word once: "h100-sxm (analytic, vllm engine)", not "(analytic) (analytic"
    device = str(profile.get("device"))
    source = str(profile.get("source"))
    where = device if source in device else f"{device} ({source})"
    digest = profile.get("digest")
    subtitle = (f"policy {policy} · workload {workload} · profile {profile.get('model')} on "
                f"{where}" + (f", digest {digest}" if digest else ""))
    warnings = [ANALYTIC_WARNING] if run.metrics.get("profile_source") == "analytic" else []
    behind = overload(run.requests)
    if behind is not None:  # the same facts as simulate's stderr warning
        warnings.insert(0, "Overloaded: " + behind.message()[0].upper() + behind.message()[1:]
                        + ".")
    sections = run_sections(run)
    command = run.config.get("command")
    if command:
        sections.insert(0, Section("", html=f'<p class="cmd">Made by <code>'
                                            f"{html.escape(str(command))}</code></p>"))
    return write_report(out, f"batchsim run: {run.name}", sections, subtitle, warnings)


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """Rebuild a run folder's report from its files (default: RUN_DIR/report.html)."""
    run = load_run(run_dir)
    return render_run_report(run, out or Path(run_dir) / REPORT_FILE)


def write_into_run(tmp_dir: Path, output: RunOutput) -> None:
    """Writer for sim.run.write_run: itl_cdf.csv and report.html into the run folder being made.

    Uses the in-memory tables (reading 200k rows back would double the cost); they hold the same
    values as the CSVs, so `batchsim report RUN_DIR` later rebuilds the same page.
    """
    x, p = write_itl_cdf(tmp_dir, output)
    name = tmp_dir.name  # sim.atomic builds the folder under the run folder's own name
    # config.json as written (with the command line and assumptions write_run added)
    config = read_json(tmp_dir / "config.json")
    run = RunData(name, config, output.metrics, output.requests, report_steps(output), (x, p))
    render_run_report(run, tmp_dir / REPORT_FILE)


def report_steps(output: RunOutput) -> pd.DataFrame:
    """The steps columns the report reads: from the recorder alone when the run has not built
    its steps table (the whole table is ~55 MB at a million requests, half of it unread)."""
    if output.steps_table is None and isinstance(output.recorder, Recorder):
        return output.recorder.step_frame(REPORT_STEP_COLUMNS)
    return output.steps
