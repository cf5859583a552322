"""A run as the JSON `vllm bench serve --save-result` writes, so tools built for it read ours.

Key names and meanings follow vLLM's `vllm/benchmarks/serve.py` (the `result_json` it dumps):

- run: `backend`/`endpoint_type` (here `batchsim-simulate` or, for `batchsim bench`,
  `openai`), `label` (the policy), `model_id`/`tokenizer_id` (the profile's model), `num_prompts`,
  `request_rate` (`"inf"` as vLLM writes it; null for a trace replay), `burstiness`,
  `max_concurrency`;
- totals: `duration` (s), `completed`, `failed` (rejected + failed requests),
  `total_input_tokens`/`total_output_tokens` (completed requests), `request_throughput`,
  `request_goodput` (null without --goodput), `output_throughput`, `total_token_throughput`;
- `max_output_tokens_per_s` and `max_concurrent_requests` computed as vLLM does: tokens and
  requests counted in one-second buckets from the first arrival (a request counts in every
  bucket it overlaps, so this is at least the summary's instantaneous "Peak concurrent requests");
- per metric of --percentile-metrics: `mean_<m>_ms`, `median_<m>_ms`, `std_<m>_ms` (population
  standard deviation, numpy's default, as vLLM) and `p<P>_<m>_ms` per --metric-percentiles;
  means, medians and percentiles are those of `metrics.json`;
- with detailed: `input_lens`, `output_lens` (0 for a request that did not complete), `ttfts`
  (seconds; null for one that did not complete), `itls` (seconds, one list per request) and
  `errors` ("" or why it was rejected/failed), one entry per request in request order.

Differences, on purpose: no `date` (the same run gives the same bytes) and no `generated_texts`
(nothing is generated); an undefined statistic (no completed request) is null where vLLM
writes 0; `queue` is a metric batchsim adds (`mean_queue_ms`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from batchsim.sim.metrics import PERCENTS, STATS

# the percentile -> metrics.json key of the stats it stores
_STAT_OF = dict(zip((50, 90, 95, 99), STATS[1:], strict=True))
assert tuple(_STAT_OF) == tuple(int(p) for p in PERCENTS)


def _std_ms(values_s: np.ndarray, weights: np.ndarray | None = None) -> float | None:
    keep = np.isfinite(values_s)
    values = values_s[keep] * 1e3
    w = np.ones(len(values)) if weights is None else weights[keep].astype(float)
    if len(values) == 0 or w.sum() == 0:
        return None
    mean = np.average(values, weights=w)
    return float(math.sqrt(np.average((values - mean) ** 2, weights=w)))


def _peaks(done: pd.DataFrame, token_times: Sequence[np.ndarray]) -> tuple[float, int]:
    """vLLM's max_output_tokens_per_s and max_concurrent_requests: per one-second bucket from
    the first arrival of a completed request, the tokens produced in it and the requests
    active in any part of it."""
    if len(done) == 0:
        return 0.0, 0
    start = done["arrival_s"].to_numpy(dtype=float)
    end = done["finish_s"].to_numpy(dtype=float)
    t0 = float(start.min())
    num_buckets = math.ceil(float(end.max()) - t0) + 1
    times = np.concatenate(token_times) if token_times else np.zeros(0)
    buckets = (times - t0).astype(np.int64)
    buckets = buckets[(buckets >= 0) & (buckets < num_buckets)]
    tokens = np.bincount(buckets, minlength=num_buckets)
    active = np.zeros(num_buckets + 1, dtype=np.int64)
    np.add.at(active, (start - t0).astype(np.int64), 1)
    np.add.at(active, (end - t0).astype(np.int64) + 1, -1)
    return float(tokens.max()), int(np.cumsum(active)[:-1].max())


def vllm_result(run: Any, percentile_metrics: Sequence[str], percentiles: Sequence[int],
                detailed: bool = False, backend: str = "batchsim-simulate",
                max_concurrency: int | None = None) -> dict[str, Any]:
    """The result dict of `vllm bench serve --save-result` (see the module doc) of a run
    (sim.run.RunOutput, simulated or measured by `batchsim bench`)."""
    m, config, requests = run.metrics, run.config, run.requests
    workload = config.get("workload", {})
    synthetic = workload.get("synthetic")
    model = (config.get("profile") or {}).get("model")
    done_mask = (requests["status"] == "completed").to_numpy()
    done = requests[done_mask]
    positions = np.flatnonzero(done_mask)
    token_times = run.recorder.token_times_s(positions.tolist())
    rate = synthetic.get("request_rate") if synthetic else None
    goodput = m.get("goodput")
    out: dict[str, Any] = {
        "endpoint_type": backend, "backend": backend, "label": config.get("policy"),
        "model_id": model, "tokenizer_id": model, "num_prompts": len(requests),
        "request_rate": "inf" if isinstance(rate, float) and math.isinf(rate) else rate,
        "burstiness": synthetic.get("burstiness") if synthetic else None,
        "max_concurrency": max_concurrency,
        "duration": m["duration_s"],
        "completed": int(done_mask.sum()),
        "failed": len(requests) - int(done_mask.sum()),
        "total_input_tokens": int(done["input_tokens"].sum()),
        "total_output_tokens": int(done["output_tokens"].sum()),
        "request_throughput": m["request_throughput"],
        "request_goodput": goodput["request_goodput"] if goodput else None,
        "output_throughput": m["output_token_throughput"],
        "total_token_throughput": m["total_token_throughput"],
    }
    if detailed:
        first = done["first_token_s"].to_numpy(dtype=float)
        ttfts: list[float | None] = [None] * len(requests)
        itls: list[list[float]] = [[] for _ in range(len(requests))]
        output_lens = [0] * len(requests)
        for k, pos in enumerate(positions):
            ttfts[pos] = float(first[k] - done["arrival_s"].iloc[k])
            itls[pos] = np.diff(token_times[k]).tolist()
            output_lens[pos] = int(done["output_tokens"].iloc[k])
        out.update({
            "input_lens": requests["input_tokens"].astype(int).tolist(),
            "output_lens": output_lens,
            "ttfts": ttfts,
            "itls": itls,
            "errors": requests["reject_reason"].fillna("").astype(str).tolist(),
        })
    out["max_output_tokens_per_s"], out["max_concurrent_requests"] = _peaks(done, token_times)
    out["profile_source"] = m.get("profile_source")
    itl_values, itl_weights = run.recorder.itl_samples()
    for name in percentile_metrics:
        stats = m[f"{name}_ms"]
        if name == "itl":
            std = _std_ms(itl_values, itl_weights)
        else:
            std = _std_ms(done[f"{name}_ms"].to_numpy(dtype=float) / 1e3)
        out[f"mean_{name}_ms"] = stats["mean"]
        out[f"median_{name}_ms"] = stats["median"]
        out[f"std_{name}_ms"] = std
        for p in percentiles:
            out[f"p{p}_{name}_ms"] = stats[_STAT_OF[p]]
    return out
