"""Synthetic workloads with `vllm bench serve` semantics.

request_rate (req/s; inf = all at t=0) and burstiness (gamma shape; 1 = Poisson): gaps
gamma(shape=b, scale=1/(rate*b)); lengths uniform in [len*(1-r), len*(1+r)] or sampled from a
trace.

Shared system prompts, as inference-perf's shared-prefix workload: with prefix_len P, every
prompt starts with one of num_prefix_groups prompts of P tokens (drawn uniformly per request)
followed by its own input_len tokens, so input_tokens = P + its drawn length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from batchsim.sim.checks import MAX_NUM_REQUESTS, MAX_RATE, integer, number
from batchsim.sim.workload.traces import load_trace
from batchsim.sim.workload.workload import Workload, WorkloadError


@dataclass(frozen=True)
class SyntheticSpec:
    """vllm-bench-style synthetic workload."""

    num_requests: int = 1000
    request_rate: float = math.inf  # req/s; inf = all at t=0
    burstiness: float = 1.0  # gamma shape of inter-arrival gaps; 1 = Poisson, <1 burstier
    input_len: int = 1024
    output_len: int = 128
    range_ratio: float = 0.0  # lengths uniform in [len*(1-r), len*(1+r)]
    lengths_from: str | None = None  # sample (input, output) pairs from this trace instead
    prefix_len: int = 0  # tokens of shared system prompt before each prompt; 0 = none
    num_prefix_groups: int = 0  # distinct shared prompts (0 = 1 when prefix_len > 0)

    def __post_init__(self) -> None:
        try:  # finite and bounded (sim.checks)
            integer("--num-requests", self.num_requests, 1, MAX_NUM_REQUESTS)
            number("--request-rate", self.request_rate, 0, MAX_RATE, low_open=True,
                   allow_inf=True)
            number("--burstiness", self.burstiness, 1e-3, 1e3)
            integer("--input-len", self.input_len, 1, 2**31)
            integer("--output-len", self.output_len, 1, 2**31)
            number("--range-ratio", self.range_ratio, 0, 1)
            integer("--prefix-len", self.prefix_len, 0, 2**31)
            integer("--num-prefix-groups", self.num_prefix_groups, 0, MAX_NUM_REQUESTS)
        except ValueError as e:
            raise WorkloadError(str(e)) from None
        if self.num_requests <= 0:
            raise WorkloadError(f"--num-requests must be positive, got {self.num_requests}")
        if not self.request_rate > 0:
            raise WorkloadError(f"--request-rate must be positive or inf, got {self.request_rate}")
        if not self.burstiness > 0:
            raise WorkloadError(f"--burstiness must be positive, got {self.burstiness}")
        if self.input_len <= 0 or self.output_len <= 0:
            raise WorkloadError("--input-len and --output-len must be positive")
        if not 0 <= self.range_ratio < 1:
            raise WorkloadError(f"--range-ratio must be in [0, 1), got {self.range_ratio}")
        if self.num_prefix_groups > 0 and self.prefix_len == 0:
            raise WorkloadError("--num-prefix-groups needs --prefix-len (the shared prompt's "
                                "tokens)")


def synthesize(spec: SyntheticSpec, rng: np.random.Generator) -> Workload:
    """Arrivals and lengths drawn from rng (created and seeded by the caller)."""
    n = spec.num_requests
    if math.isinf(spec.request_rate):
        arrival = np.zeros(n)
    else:
        b = spec.burstiness
        gaps = rng.gamma(shape=b, scale=1.0 / (spec.request_rate * b), size=n)
        arrival = np.concatenate(([0.0], np.cumsum(gaps[:-1])))  # first request at t=0
    if spec.lengths_from:
        source = load_trace(spec.lengths_from)
        pick = rng.integers(0, len(source), size=n)
        inputs, outputs = source.input_tokens[pick], source.output_tokens[pick]
    else:
        inputs = _uniform_lengths(rng, spec.input_len, spec.range_ratio, n)
        outputs = _uniform_lengths(rng, spec.output_len, spec.range_ratio, n)
    rate = "inf" if math.isinf(spec.request_rate) else f"{spec.request_rate:g}"
    workload = Workload(
        arrival_s=arrival,
        input_tokens=inputs.astype(np.int64),
        output_tokens=outputs.astype(np.int64),
        priority=np.zeros(n, dtype=np.int64),
        ids=None,  # a request's id is its index: no million strings to hold through a run
        source=f"synthetic(rate={rate}, burstiness={spec.burstiness:g}, n={n})",
    )
    if spec.prefix_len:
        # drawn last: the arrivals and lengths stay those of the same seed without a prefix
        groups = rng.integers(0, max(1, spec.num_prefix_groups), size=n)
        workload.input_tokens = workload.input_tokens + spec.prefix_len
        workload.prefix_group = groups.astype(np.int64)
        workload.prefix_tokens = np.full(n, spec.prefix_len, dtype=np.int64)
        workload.source = (f"synthetic(rate={rate}, burstiness={spec.burstiness:g}, n={n}, "
                           f"prefix={spec.prefix_len}x{max(1, spec.num_prefix_groups)})")
    return workload


def _uniform_lengths(rng: np.random.Generator, length: int, ratio: float, n: int) -> np.ndarray:
    low = max(1, int(length * (1 - ratio)))
    high = max(low, int(length * (1 + ratio)))
    return rng.integers(low, high + 1, size=n)
