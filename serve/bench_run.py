"""What `batchsim bench` measured, as a run folder in `simulate`'s format.

`requests.csv` has simulate's columns with the client's times (arrival = when the request was
sent, since the run's start); `metrics.json` is computed by the simulator's own
`sim.metrics.summarize`, so every metric has the definition a simulated run has. What a client
cannot see is left empty (None/NaN) unless the server reports it: from a server that exposes
vLLM's and batchsim's Prometheus metrics (`/metrics`, read before and after the run) come the
device busy fraction, preemptions and the server-side mean TTFT; from `batchsim serve` also
per-request server times (`server_ttft_ms`, `server_e2el_ms`, `server_queue_ms`), so the client
and HTTP overhead (client TTFT minus server TTFT) is shown apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from batchsim.serve.loadgen import RequestResult
from batchsim.sim.metrics import stats_ms, summarize
from batchsim.sim.recorder import Recorder
from batchsim.sim.run import RunOutput
from batchsim.sim.samples import ItlSampleCache
from batchsim.sim.workload.workload import Workload

OBSERVED_SOURCE = "observed (bench client)"
STEP_COLUMNS = ("step", "start_s", "duration_s", "phase", "layout", "device", "batch_size",
                "prefill_tokens", "decode_tokens", "kv_blocks_used", "kv_tokens_used")


class ClientTimes(ItlSampleCache):
    """The part of the Recorder interface `summarize` and the report read: ITL samples.

    Inter-token latencies are the gaps between consecutive token chunks of each completed
    request, as vllm bench measures them."""

    def __init__(self, results: Sequence[RequestResult]) -> None:
        self.prefill_paths = False
        self.cpu_steps: list[Any] = []
        gaps = [np.diff(r.chunk_s) for r in results if r.status == "completed"]
        self._gaps = np.concatenate(gaps) if gaps else np.zeros(0)
        # each token chunk's arrival since the run's start (token_times_s)
        self._chunks = [r.sent_s + np.asarray(r.chunk_s, dtype=float) for r in results]

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        return self._gaps, np.ones(len(self._gaps), dtype=np.int64)

    def token_times_s(self, indexes: Sequence[int]) -> list[np.ndarray]:
        """When each token chunk of each request in indexes arrived, since the run's start."""
        return [self._chunks[i] for i in indexes]


def requests_table(workload: Workload, results: Sequence[RequestResult]) -> pd.DataFrame:
    nan = float("nan")
    done = [r.status == "completed" for r in results]
    sent = np.array([r.sent_s for r in results])
    ttft = np.array([r.ttft_s if ok else nan for r, ok in zip(results, done, strict=True)])
    e2el = np.array([r.e2el_s if ok else nan for r, ok in zip(results, done, strict=True)])
    out = np.array([r.output_tokens for r in results])
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2el - ttft) / (out - 1), nan)

    def server(key: str) -> list[float]:
        return [float((r.server_timing or {}).get(key) or nan) if ok else nan
                for r, ok in zip(results, done, strict=True)]

    ids = workload.ids if workload.ids is not None else [str(i) for i in range(len(workload))]
    return pd.DataFrame({
        "id": ids,
        "arrival_s": sent,
        "input_tokens": workload.input_tokens,
        "output_tokens": workload.output_tokens,
        "priority": workload.priority,
        "status": [r.status for r in results],
        "reject_reason": [r.reason for r in results],
        "queue_ms": server("queue_ms"),
        "ttft_ms": ttft * 1e3,
        "tpot_ms": tpot * 1e3,
        "e2el_ms": e2el * 1e3,
        "first_token_s": sent + ttft,
        "finish_s": sent + e2el,
        "preemptions": np.full(len(results), nan),
        "generated_tokens": out,
        "scheduled_arrival_s": workload.arrival_s,
        "server_ttft_ms": server("ttft_ms"),
        "server_e2el_ms": server("e2el_ms"),
    })


def empty_steps() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in STEP_COLUMNS})


def bench_output(workload: Workload, results: Sequence[RequestResult],
                 config: dict[str, Any], server: dict[str, Any] | None) -> RunOutput:
    """The run (config, metrics, tables) of one bench; server: deltas of its /metrics."""
    requests = requests_table(workload, results)
    times = ClientTimes(results)
    recorder = cast(Recorder, times)  # summarize reads only its ITL samples and CPU steps
    metrics = summarize(recorder, requests, empty_steps(), 1, OBSERVED_SOURCE)
    metrics["failed"] = int((requests["status"] == "failed").sum())
    # what only the server knows: from its /metrics when it has them, else unknown
    for key in ("gpu_busy_fraction", "prefill_time_share", "mean_batch_size",
                "max_kv_utilization", "preemptions"):
        metrics[key] = None
    done = requests[requests["status"] == "completed"]
    metrics["generated_tokens_match"] = bool(
        (done["generated_tokens"] == done["output_tokens"]).all())
    if done["server_ttft_ms"].notna().any():
        metrics["server_ttft_ms"] = stats_ms(done["server_ttft_ms"].to_numpy() / 1e3)
        metrics["server_e2el_ms"] = stats_ms(done["server_e2el_ms"].to_numpy() / 1e3)
        metrics["queue_ms"] = stats_ms(done["queue_ms"].to_numpy() / 1e3)
        gap = (done["ttft_ms"] - done["server_ttft_ms"]).to_numpy() / 1e3
        metrics["client_overhead_ttft_ms"] = stats_ms(gap)
    if server:
        metrics["server_metrics"] = server
        duration = metrics["duration_s"]
        if server.get("busy_s") is not None and duration > 0:
            metrics["gpu_busy_fraction"] = server["busy_s"] / duration
        if server.get("preemptions") is not None:
            metrics["preemptions"] = int(server["preemptions"])
        if server.get("ttft_mean_ms") is not None and "client_overhead_ttft_ms" not in metrics:
            mean = metrics["ttft_ms"]["mean"]
            metrics["client_overhead_ttft_ms"] = {
                "mean": None if mean is None else mean - server["ttft_mean_ms"]}
    return RunOutput(config, metrics, requests, empty_steps(), recorder)


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels} value` lines -> {name: value summed over label sets} (buckets skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        if name.endswith("_bucket"):
            continue
        try:
            v = float(value)
        except ValueError:
            continue
        if math.isfinite(v):
            out[name] = out.get(name, 0.0) + v
    return out


def server_deltas(before: dict[str, float] | None, after: dict[str, float] | None
                  ) -> dict[str, Any] | None:
    """What the server counted during the run, from two scrapes of its /metrics."""
    if not before or not after:
        return None

    def delta(name: str) -> float | None:
        if name not in after or name not in before:
            return None
        return after[name] - before[name]

    ttft_n = delta("vllm:time_to_first_token_seconds_count")
    ttft_sum = delta("vllm:time_to_first_token_seconds_sum")
    e2e_n = delta("vllm:e2e_request_latency_seconds_count")
    e2e_sum = delta("vllm:e2e_request_latency_seconds_sum")
    host = delta("batchsim:host_seconds_total")
    host_cpu = delta("batchsim:host_cpu_seconds_total")
    host_rq = delta("batchsim:host_runqueue_seconds_total")
    steps = delta("batchsim:engine_steps_total")
    return {
        "busy_s": delta("batchsim:device_busy_seconds_total"),
        "preemptions": delta("vllm:num_preemptions_total"),
        "generation_tokens": delta("vllm:generation_tokens_total"),
        "prompt_tokens": delta("vllm:prompt_tokens_total"),
        "ttft_mean_ms": ttft_sum / ttft_n * 1e3 if ttft_n and ttft_sum is not None else None,
        "e2el_mean_ms": e2e_sum / e2e_n * 1e3 if e2e_n and e2e_sum is not None else None,
        "engine_steps": steps,
        "host_s": host,
        "host_ms_per_step": host / steps * 1e3 if steps and host is not None else None,
        "host_cpu_ms_per_step": (host_cpu / steps * 1e3 if steps and host_cpu is not None
                                 else None),
        "host_runqueue_ms_per_step": (host_rq / steps * 1e3 if steps and host_rq is not None
                                      else None),
    }
