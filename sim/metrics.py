"""Summary metrics, with the names and definitions of `vllm bench serve`.

Per request: TTFT = first token - arrival; E2EL = last token - arrival;
TPOT = (E2EL - TTFT) / (output_tokens - 1) (requests of one token have none);
ITL = every gap between consecutive tokens of a request; queue = first scheduled - arrival.
Percentiles interpolate linearly between samples (numpy's default, as vllm bench does).
Throughputs divide by duration_s = last completion - first arrival.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from batchsim.sim.checks import MAX_SLO_MS, number
from batchsim.sim.recorder import DEVICES, PHASES, Recorder
from batchsim.sim.samples import SortedSample

STATS = ("mean", "median", "p90", "p95", "p99")
PERCENTS = (50.0, 90.0, 95.0, 99.0)


def parse_goodput(items: list[str]) -> dict[str, float]:
    """`ttft:MS tpot:MS e2el:MS` -> {"ttft_ms": MS, ...}."""
    slo: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or name not in ("ttft", "tpot", "e2el"):
            raise ValueError(f"--goodput takes ttft:MS tpot:MS e2el:MS, got {item!r}")
        try:
            slo[f"{name}_ms"] = float(value)
        except ValueError:
            raise ValueError(f"--goodput {item!r}: {value!r} is not a number of ms") from None
        number(f"--goodput {name}", slo[f"{name}_ms"], 0, MAX_SLO_MS, low_open=True)
    return slo


def weighted_percentiles(values: np.ndarray, weights: np.ndarray,
                         percents: tuple[float, ...]) -> list[float]:
    """np.percentile(np.repeat(values, weights), percents) without materialising the repeat."""
    return SortedSample(values, weights).percentiles(percents)


def stats_ms(values_s: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float | None]:
    """mean/median/p90/p95/p99 in ms of finite values (None when there are none)."""
    return sample_stats(SortedSample(values_s * 1e3, weights))


def sample_stats(sample: SortedSample) -> dict[str, float | None]:
    """stats_ms of a sample already in ms."""
    if sample.mean is None:
        return dict.fromkeys(STATS)
    return dict(zip(STATS, [sample.mean, *sample.percentiles(PERCENTS)], strict=True))


def _path_metrics(requests_df: pd.DataFrame, cpu_busy_s: float,
                  duration: float) -> dict[str, Any]:
    """Per-path figures of a run with a CPU path: CPU busy fraction, requests per path, and
    TTFT per path (the CPU path's value is the question the hybrid policy answers)."""
    done = requests_df[requests_df["status"] == "completed"]
    out: dict[str, Any] = {
        "cpu_busy_fraction": cpu_busy_s / duration if duration > 0 else 0.0,
        "prefill_path_requests": {p: int((done["prefill_path"] == p).sum())
                                  for p in ("gpu", "cpu")},
    }
    for p in ("gpu", "cpu"):
        out[f"ttft_ms_{p}_path"] = stats_ms(done.loc[done["prefill_path"] == p,
                                                     "ttft_ms"].to_numpy() / 1e3)
    return out


def summarize(recorder: Recorder, requests_df: pd.DataFrame,
              steps_df: pd.DataFrame | None, kv_capacity_blocks: int, profile_source: str,
              goodput: Mapping[str, float] | None = None, itl: bool = True) -> dict[str, Any]:
    """The run's metrics.json. steps_df: the steps table, or None to read the recorder's steps
    as arrays (the same figures, without building the table). itl=False: no `itl_ms` (a
    cluster's replica rows show none, and sorting every gap costs)."""
    completed = (requests_df["status"] == "completed").to_numpy()
    num_done = int(completed.sum())

    def done(name: str) -> np.ndarray:
        """A column's completed rows (a mask per column: filtering the whole table would copy
        every column of a million-request run)."""
        return requests_df[name].to_numpy()[completed]

    first_arrival = float(requests_df["arrival_s"].min())
    last_finish = float(done("finish_s").max()) if num_done else first_arrival
    duration = last_finish - first_arrival
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    out_tokens = float(done("output_tokens").sum())
    in_tokens = float(done("input_tokens").sum())
    metrics: dict[str, Any] = {
        "num_requests": len(requests_df),
        "completed": num_done,
        "rejected": int((requests_df["status"] == "rejected").sum()),
        "duration_s": duration,
        "request_throughput": rate(num_done),
        "output_token_throughput": rate(out_tokens),
        "total_token_throughput": rate(out_tokens + in_tokens),
    }
    for name in ("ttft", "tpot", "itl", "e2el", "queue"):
        if name == "itl":  # the samples only while needed: ~12 MB at a million requests
            if itl:
                metrics["itl_ms"] = sample_stats(recorder.itl_sample())
        else:
            metrics[f"{name}_ms"] = stats_ms(done(f"{name}_ms") / 1e3)
    # the per-step arrays after the latencies, so both are not held at once
    steps = _step_arrays(recorder, steps_df)
    cpu_busy = None
    if recorder.cpu_steps:  # a CPU path ran: GPU figures from GPU steps, CPU ones apart
        on_cpu = steps["device"] == DEVICES.index("cpu")
        cpu_busy = float(steps["duration_s"][on_cpu].sum())
        steps = {name: column[~on_cpu] for name, column in steps.items()}
    busy = steps["duration_s"]
    phase = steps["phase"]
    prefill_tok = steps["prefill_tokens"]
    tokens = prefill_tok + steps["decode_tokens"]
    # Mixed steps count toward prefill in proportion to their prefill tokens.
    share = np.where(phase == PHASES.index("prefill"), 1.0,
                     np.where(phase == PHASES.index("mixed"),
                              prefill_tok / np.maximum(tokens, 1), 0.0))
    busy_total = float(busy.sum())
    num_steps = len(busy)
    metrics.update({
        "gpu_busy_fraction": busy_total / duration if duration > 0 else 0.0,
        "prefill_time_share": float((busy * share).sum() / busy_total) if busy_total else 0.0,
        # an integer sum is exact in float64 (< 2**53), so this is pandas' mean to the bit
        "mean_batch_size": (float(steps["batch_size"].sum(dtype=np.float64) / num_steps)
                            if num_steps else 0.0),
        "max_kv_utilization": (float(steps["kv_blocks_used"].max()) / kv_capacity_blocks
                               if num_steps else 0.0),
        "preemptions": int(requests_df["preemptions"].sum()),
    })
    if recorder.prefill_paths:
        metrics.update(_path_metrics(requests_df, cpu_busy or 0.0, duration))
    if goodput:
        good = np.ones(num_done, dtype=bool)
        for key, limit in goodput.items():
            values = done(key)
            good &= np.where(np.isnan(values), 0.0, values) <= limit  # NaN: no such latency
        metrics["goodput"] = {
            "slo_ms": dict(goodput),
            "good_requests": int(good.sum()),
            "request_goodput": rate(int(good.sum())),
        }
    metrics["profile_source"] = profile_source
    return metrics


_STEP_NUMBERS = ("duration_s", "prefill_tokens", "decode_tokens", "batch_size", "kv_blocks_used")


def _step_arrays(recorder: Recorder, steps_df: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """The columns summarize reads, phase and device as codes (recorder.PHASES, DEVICES)."""
    if steps_df is None:
        return recorder.step_columns((*_STEP_NUMBERS, "phase", "device"))
    out = {name: steps_df[name].to_numpy() for name in _STEP_NUMBERS}
    for name, names in (("phase", PHASES), ("device", DEVICES)):
        values = steps_df[name].astype(str)  # categorical, or strings read back from a CSV
        out[name] = pd.Categorical(values, categories=list(names)).codes.astype(np.int64)
    return out
