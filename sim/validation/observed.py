"""An observed run of a real server, read into the tables a simulation produces.

Two kinds of RUN (`batchsim validate --observed RUN`):

- a **vLLM request log** (sim/workload/request_log.py): per request, the server's timestamps.
  Times are measured from `queued_ts` (the server-side arrival) and made relative to the first
  request, as its trace reading does: TTFT = first_token_ts - queued_ts, E2EL = last_token_ts -
  queued_ts, TPOT = (last - first) / (output - 1), queue = scheduled_ts - queued_ts. A
  `timeseries.csv` beside the log (vLLM's periodic stats: t, prompt_throughput, gen_throughput,
  running, waiting, ...) is read too; its t counts from `started_at` in a `meta.json` beside it,
  so it is shifted by (first request's arrival_time - started_at) when both are there.
- a **batchsim run folder** (config.json + requests.csv, as `simulate` and `batchsim bench`
  write): its requests.csv as is, its metrics.json where present.

What a log cannot tell (inter-token gaps, GPU busy time, batch sizes, preemptions) is None in the
observed metrics, so the comparison leaves those metrics out rather than inventing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from batchsim.sim.metrics import STATS, stats_ms
from batchsim.sim.workload import request_log
from batchsim.sim.workload.traces import detect_format, read_trace
from batchsim.sim.workload.workload import Workload, WorkloadError

TIMESERIES = "timeseries.csv"
TIMESERIES_COLUMNS = ("t", "prompt_throughput", "gen_throughput", "running", "waiting")
_RUN_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "ttft_ms", "e2el_ms")


@dataclass
class ObservedRun:
    """The requests to replay and what the real server did with them (same order)."""

    source: str
    kind: Literal["vllm_log", "run_folder"]
    workload: Workload  # arrivals and lengths, in arrival order
    requests: pd.DataFrame  # one row per workload request: the recorder's columns
    metrics: dict[str, Any]  # metrics.json's keys; None where the run does not tell
    timeseries: pd.DataFrame | None  # TIMESERIES_COLUMNS, t in the workload's seconds
    tick_s: float = 1.0  # the timeseries' interval


def load_observed(path: str | Path) -> ObservedRun:
    """Read RUN (a vLLM request log or a batchsim run folder); WorkloadError on bad input."""
    run = Path(path)
    if run.is_dir():
        return _run_folder(run)
    if not run.exists():
        raise WorkloadError(f"{run}: no such observed run (a vLLM request log or a run folder)")
    fmt = detect_format(run)[0]
    if fmt.name != "vllm":
        raise WorkloadError(f"{run}: a {fmt.name} trace has arrivals but no served timings; "
                            "--observed takes a vLLM request log (queued_ts, first_token_ts, "
                            "last_token_ts, ...) or a batchsim run folder")
    return _vllm_log(run)


def _vllm_log(file: Path) -> ObservedRun:
    workload = read_trace(file)  # sorted by queued_ts; checks every line (request_log)
    log = request_log.read_request_log(file)
    row_of = {int(line): k for k, line in enumerate(log.lines)}
    assert workload.line_numbers is not None  # a trace's requests know their lines
    take = np.array([row_of[int(line)] for line in workload.line_numbers], dtype=np.int64)
    stamp = {k: v[take] for k, v in log.stamps.items()}
    origin = float(stamp["queued_ts"].min())
    queued = stamp["queued_ts"] - origin
    first, last = stamp["first_token_ts"] - origin, stamp["last_token_ts"] - origin
    out = workload.output_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (last - first) / (out - 1), np.nan)
    requests = pd.DataFrame({
        "id": workload.ids if workload.ids is not None else [str(i) for i in range(len(out))],
        "arrival_s": queued, "input_tokens": workload.input_tokens, "output_tokens": out,
        "priority": workload.priority, "status": "completed", "reject_reason": "",
        "queue_ms": (stamp["scheduled_ts"] - stamp["queued_ts"]) * 1e3,
        "ttft_ms": (first - queued) * 1e3, "tpot_ms": tpot * 1e3, "e2el_ms": (last - queued) * 1e3,
        "first_token_s": first, "finish_s": last,
        "preemptions": np.full(len(out), np.nan),  # a log does not say
    })
    offset = 0.0
    meta = _json_beside(file, "meta.json")
    if meta and log.arrival_time is not None and "started_at" in meta:
        started = pd.Timestamp(meta["started_at"]).timestamp()
        offset = float(log.arrival_time[take][0]) - started
    tick = float(meta.get("tick_seconds", 1.0)) if meta else 1.0
    return ObservedRun(str(file), "vllm_log", workload, requests, request_metrics(requests),
                       _timeseries(file.parent / TIMESERIES, offset), tick)


def _run_folder(folder: Path) -> ObservedRun:
    table = folder / "requests.csv"
    if not (folder / "config.json").exists() or not table.exists():
        raise WorkloadError(f"{folder}: not a run folder (needs config.json and requests.csv)")
    try:
        df = pd.read_csv(table, dtype={"id": str, "reject_reason": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{table}: cannot parse ({e})") from None
    missing = [c for c in _RUN_COLUMNS if c not in df.columns]
    if missing or not len(df):
        raise WorkloadError(f"{table}: " + (f"missing columns {', '.join(missing)}" if missing
                                            else "no requests"))
    for c in ("arrival_s", "input_tokens", "output_tokens"):
        bad = np.flatnonzero(~np.isfinite(df[c].to_numpy(dtype=np.float64)))
        if len(bad):
            raise WorkloadError(f"{table}:{int(bad[0]) + 2}: {c} is missing or not finite")
    df["line"] = np.arange(len(df), dtype=np.int64) + 2  # the CSV's own line (header = 1)
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    if "status" not in df:
        df["status"] = "completed"
    workload = Workload(
        arrival_s=df["arrival_s"].to_numpy(dtype=np.float64),
        input_tokens=df["input_tokens"].to_numpy(dtype=np.int64),
        output_tokens=df["output_tokens"].to_numpy(dtype=np.int64),
        priority=(df["priority"].to_numpy(dtype=np.int64) if "priority" in df
                  else np.zeros(len(df), dtype=np.int64)),
        ids=df["id"].astype(str).tolist() if "id" in df else None,
        source=str(table), line_numbers=df.pop("line").to_numpy(),
        provenance={"path": str(table), "format": "run_folder"})
    metrics = request_metrics(df)
    saved = _json_beside(folder / "metrics.json", "metrics.json")
    if saved:
        metrics = saved  # the run's own summary: the same definitions, ITL included
    return ObservedRun(str(folder), "run_folder", workload, df, metrics,
                       _timeseries(folder / TIMESERIES, 0.0))


def request_metrics(requests: pd.DataFrame) -> dict[str, Any]:
    """metrics.json's request-level figures from a requests table (sim.metrics' definitions);
    what needs the steps (ITL, GPU busy, batch sizes) is None."""
    done = requests[requests["status"] == "completed"]
    first = float(requests["arrival_s"].min())
    duration = (float(done["finish_s"].max()) - first) if len(done) else 0.0
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    out_tokens = float(done["output_tokens"].sum())
    metrics: dict[str, Any] = {
        "num_requests": len(requests), "completed": len(done),
        "rejected": int((requests["status"] == "rejected").sum()), "duration_s": duration,
        "request_throughput": rate(len(done)), "output_token_throughput": rate(out_tokens),
        "total_token_throughput": rate(out_tokens + float(done["input_tokens"].sum())),
        "itl_ms": dict.fromkeys(STATS),
    }
    for name in ("ttft", "tpot", "e2el", "queue"):
        metrics[f"{name}_ms"] = stats_ms(done[f"{name}_ms"].to_numpy(dtype=np.float64) / 1e3)
    preempted = requests.get("preemptions")
    metrics.update({"gpu_busy_fraction": None, "mean_batch_size": None,
                    "preemptions": (None if preempted is None or preempted.isna().any()
                                    else int(preempted.sum()))})
    return metrics


def _json_beside(path: Path, name: str) -> dict[str, Any] | None:
    file = path if path.name == name else path.parent / name
    if not file.exists():
        return None
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{file}: not JSON ({e})") from None
    return data if isinstance(data, dict) else None


def _timeseries(file: Path, offset_s: float) -> pd.DataFrame | None:
    """The server's periodic stats with t moved onto the workload's clock; None if absent."""
    if not file.exists():
        return None
    try:
        df = pd.read_csv(file)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{file}: cannot parse ({e})") from None
    missing = [c for c in TIMESERIES_COLUMNS if c not in df.columns]
    if missing:
        raise WorkloadError(f"{file}: missing columns {', '.join(missing)}")
    df = df[list(TIMESERIES_COLUMNS)].astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(df.to_numpy()).all(axis=1))
    if len(bad):
        raise WorkloadError(f"{file}:{int(bad[0]) + 2}: a value is missing or not a number")
    df["t"] = df["t"] - offset_s
    return df
