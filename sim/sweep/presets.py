"""Sweep presets that repeat the seed documents' experiments, with their table shapes.

- `seed-batch-window` (seed 001's experiment, seed 004's record): batch sizes 1, 4, 8 × wait
  windows 0, 10, 50 ms; 16 requests of one prompt length, 32 new tokens; average and P95 latency,
  throughput, GPU use. The batches are static (padded, nobody joins mid-batch); the window is
  Triton's dynamic-batcher queue delay, so the `dynamic` policy runs them: its 0 means "dispatch
  at once", which is what the seeds' "wait 0 ms" measured (the `static` policy's 0 means "wait
  for a full batch" instead).
- `seed-dynamic-vs-batch1` (seed 000's table): batch=1 vs dynamic batching up to 16 vs continuous
  batching up to 16; 128 input / 256 output tokens; throughput, speed-up over batch=1, average and
  P95 latency, GPU use, prefill vs decode time share.

A preset fixes the configurations and the workload; `--request-rate` may replace its loads and
`--profile` its hardware. Tables are computed from the sweep table, one per load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from batchsim.sim.errors import UsageError
from batchsim.sim.sweep.sweep import Configuration
from batchsim.sim.workload.synthetic import SyntheticSpec

Table = tuple[str, list[dict[str, object]]]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    configurations: tuple[Configuration, ...]
    synthetic: SyntheticSpec
    rates: tuple[float, ...]  # default loads (req/s; inf = all at t=0)
    tables: Callable[[pd.DataFrame], list[Table]]


# the tables' columns that are shares of the run (shown as percentages)
SHARE_COLUMNS = frozenset({"GPU use", "prefill share", "decode share"})


def _rate_title(rate: float) -> str:
    return "all requests at t=0" if math.isinf(rate) else f"Poisson arrivals at {rate:g} req/s"


def batch_window_tables(table: pd.DataFrame) -> list[Table]:
    """Seed 001's shape: batch × wait window -> latency (avg, P95), throughput, GPU use."""
    out = []
    for rate in table["request_rate"].unique():  # in the order of the grid
        g = table[table["request_rate"] == rate]
        rows = [{"batch": int(r["max_batch_size"]),
                 "wait (ms)": float(r["max_queue_delay_microseconds"]) / 1e3,
                 "avg latency (ms)": r["e2el_mean_ms"], "P95 latency (ms)": r["e2el_p95_ms"],
                 "avg queue (ms)": r["queue_mean_ms"],
                 "throughput (tok/s)": r["output_token_throughput"],
                 "GPU use": r["gpu_busy_fraction"]} for _, r in g.iterrows()]
        out.append((f"Batch size × wait window, {_rate_title(float(rate))}", rows))
    return out


def dynamic_vs_batch1_tables(table: pd.DataFrame) -> list[Table]:
    """Seed 000's shape: one row per strategy, speed-up relative to batch=1 at the same load."""
    out = []
    for rate in table["request_rate"].unique():  # in the order of the grid
        g = table[table["request_rate"] == rate]
        base = g[g["config"] == "batch=1"]["output_token_throughput"]
        ref = float(base.iloc[0]) if len(base) else math.nan
        rows = [{"strategy": r["config"], "throughput (tok/s)": r["output_token_throughput"],
                 "speed-up": r["output_token_throughput"] / ref if ref > 0 else None,
                 "avg latency (s)": r["e2el_mean_ms"] / 1e3,
                 "P95 latency (s)": r["e2el_p95_ms"] / 1e3,
                 "GPU use": r["gpu_busy_fraction"], "prefill share": r["prefill_time_share"],
                 "decode share": 1 - r["prefill_time_share"],
                 "mean batch": r["mean_batch_size"]} for _, r in g.iterrows()]
        out.append((f"batch=1 vs dynamic vs continuous, {_rate_title(float(rate))}", rows))
    return out


PRESETS = {
    "seed-batch-window": Preset(
        name="seed-batch-window",
        description="static batches of 1, 4, 8 × wait windows 0, 10, 50 ms; 16 requests, "
                    "32-token prompt, 32 new tokens (seed 001)",
        configurations=tuple(
            Configuration("dynamic", (("max_batch_size", str(b)),
                                      ("max_queue_delay_microseconds", str(w * 1000))))
            for b in (1, 4, 8) for w in (0, 10, 50)),
        synthetic=SyntheticSpec(num_requests=16, input_len=32, output_len=32),
        rates=(math.inf, 50.0),
        tables=batch_window_tables,
    ),
    "seed-dynamic-vs-batch1": Preset(
        name="seed-dynamic-vs-batch1",
        description="batch=1 vs dynamic batching up to 16 vs continuous up to 16; 128 input / "
                    "256 output tokens (seed 000)",
        configurations=(
            Configuration("static", (("max_batch_size", "1"),), name="batch=1"),
            Configuration("dynamic", (("max_batch_size", "16"),
                                      ("max_queue_delay_microseconds", "10000")),
                          name="dynamic ≤16 (10 ms window)"),
            Configuration("continuous", (("max_num_seqs", "16"),), name="continuous ≤16"),
        ),
        synthetic=SyntheticSpec(num_requests=64, input_len=128, output_len=256),
        rates=(math.inf, 2.0),
        tables=dynamic_vs_batch1_tables,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
