"""What a trace looks like: size, rate, burstiness and lengths, in the terms of `vllm bench`.

Burstiness is the coefficient of variation (CV) of the gaps between arrivals and the gamma shape
fitted to them by moments, shape = 1 / CV^2: the value of --burstiness whose synthetic gamma
arrivals have the same CV (1 = Poisson, < 1 burstier). Moments rather than maximum likelihood
because traces have gaps of zero (duplicate timestamps; Mooncake's come in ~3 s buckets), where
the gamma likelihood is undefined.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchsim.sim.workload.transform import mean_rate
from batchsim.sim.workload.workload import Workload

PEAK_WINDOW_S = 60.0


def trace_stats(workload: Workload) -> dict[str, Any]:
    """A JSON-ready summary; rates in req/s, times in s; None where a value is undefined."""
    arrival = workload.arrival_s
    gaps = np.diff(arrival)
    # a trace shorter than a minute has no full minute to call its peak
    spans_a_minute = arrival[-1] - arrival[0] >= PEAK_WINDOW_S
    peak = int(arrivals_per_bin(arrival, PEAK_WINDOW_S).max()) if spans_a_minute else None
    cv = gap_cv(gaps)
    provenance = workload.provenance
    return {
        "file": provenance.get("path", workload.source),
        "format": provenance.get("format"),
        "num_requests": len(workload),
        "span_s": float(arrival[-1] - arrival[0]),
        "mean_rate": mean_rate(arrival),
        "peak_minute_requests": peak,
        "peak_minute_rate": peak / PEAK_WINDOW_S if peak is not None else None,
        "gap_cv": cv,
        "gamma_shape": 1.0 / cv**2 if cv else None,
        "duplicate_timestamps": int((gaps == 0).sum()),
        "input_tokens": length_stats(workload.input_tokens),
        "output_tokens": length_stats(workload.output_tokens),
        "has_hash_ids": workload.hash_ids is not None,
        "dropped_zero_length": provenance.get("dropped_zero_length", 0),
        "sorted_on_reading": provenance.get("sorted", False),
    }


def arrivals_per_bin(arrival_s: np.ndarray, bin_s: float) -> np.ndarray:
    """Requests arriving in each bin_s-wide bin, the first starting at the first arrival."""
    return np.bincount(((arrival_s - arrival_s[0]) // bin_s).astype(np.int64))


def gap_cv(gaps: np.ndarray) -> float | None:
    """std / mean of the inter-arrival gaps; None with fewer than two gaps or a zero mean."""
    if len(gaps) < 2 or gaps.mean() <= 0:
        return None
    return float(gaps.std() / gaps.mean())


def length_stats(tokens: np.ndarray) -> dict[str, float]:
    """Mean, median, p99, min and max (percentiles interpolate linearly, as vllm bench)."""
    return {"mean": float(tokens.mean()), "median": float(np.median(tokens)),
            "p99": float(np.percentile(tokens, 99)), "min": int(tokens.min()),
            "max": int(tokens.max())}
