"""Workloads: who arrives when, asking for how many tokens.

Native trace format (JSONL, one request per line):
    {"arrival_s": 0.0, "input_tokens": 812, "output_tokens": 153, "id": "r1", "priority": 0}
`id`, `priority` and `hash_ids` (prefix-block hashes, a list of integers) are optional. Public
trace formats (Azure, BurstGPT, Mooncake, Vidur) are read by `batchsim.sim.workload.traces`;
`load_trace` reads
any of them. Synthetic workloads follow `vllm bench serve`: request_rate (req/s; inf = all at
t=0) and burstiness (gamma shape; 1 = Poisson), gaps gamma(shape=b, scale=1/(rate*b)), lengths
uniform in [len*(1-r), len*(1+r)] or sampled from a trace.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.policies.request import Request
from batchsim.sim.checks import MAX_NUM_REQUESTS, MAX_RATE, integer, number

if TYPE_CHECKING:
    from batchsim.sim.workload.transform import TraceOptions


class WorkloadError(ValueError):
    """Bad workload input; the message names the file, line and problem."""


@dataclass
class PrefixBlocks:
    """Ragged per-request lists of prefix-block hashes, stored flat.

    One int64 array plus offsets instead of a list of lists: a million Mooncake requests
    with a few dozen blocks each stay a few hundred MB smaller. Request i's blocks are
    values[offsets[i]:offsets[i + 1]].
    """

    values: np.ndarray  # int64 [total blocks]
    offsets: np.ndarray  # int64 [N + 1], offsets[0] == 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index]:self.offsets[index + 1]]

    def take(self, index: np.ndarray) -> PrefixBlocks:
        """The lists of the requests at `index`, in that order."""
        starts, ends = self.offsets[index], self.offsets[np.asarray(index) + 1]
        lengths = ends - starts
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        # position of every kept value in the old flat array, built without a Python loop
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return PrefixBlocks(self.values[np.repeat(starts, lengths) + within], offsets)


@dataclass
class Workload:
    """Column arrays, sorted by arrival time."""

    arrival_s: np.ndarray  # float64 [N]
    input_tokens: np.ndarray  # int64 [N]
    output_tokens: np.ndarray  # int64 [N]
    priority: np.ndarray  # int64 [N]
    ids: list[str] | None  # None: a request's id is its index (saves a string per request)
    source: str  # how it was made; for a trace, its path (error messages say source:line)
    line_numbers: np.ndarray | None = None  # trace line of each request, for error messages
    hash_ids: PrefixBlocks | None = field(default=None, repr=False)
    # how a trace was read and transformed (format, window, scale, drops), for config.json
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def requests(self) -> list[Request]:
        ids = self.ids if self.ids is not None else [str(i) for i in range(len(self))]
        return [
            Request(i, float(a), int(n_in), int(n_out), int(p), rid)
            for i, (a, n_in, n_out, p, rid) in enumerate(
                zip(self.arrival_s, self.input_tokens, self.output_tokens, self.priority,
                    ids, strict=True)
            )
        ]

    def where(self, index: int) -> str:
        """Human pointer to request `index`: its trace line when there is one."""
        if self.line_numbers is not None:
            return f"{self.source}:{int(self.line_numbers[index])}"
        return f"{self.source} request {index}"

    def take(self, index: np.ndarray, arrival_s: np.ndarray | None = None) -> Workload:
        """The requests at `index` (in that order), optionally with new arrival times."""
        return dataclasses.replace(
            self,
            arrival_s=self.arrival_s[index] if arrival_s is None else arrival_s,
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            priority=self.priority[index],
            ids=None if self.ids is None else [self.ids[i] for i in index],
            line_numbers=None if self.line_numbers is None else self.line_numbers[index],
            hash_ids=None if self.hash_ids is None else self.hash_ids.take(index),
            provenance=dict(self.provenance),
        )


def load_trace(path: str | Path, time_scale: float = 1.0,
               options: TraceOptions | None = None) -> Workload:
    """Read a trace in any known format; arrival times are multiplied by time_scale.

    `options` (window, rate, filters, sampling, format, strictness) replaces time_scale when
    given. Native traces keep their arrival_s; imported ones start at their first request.
    """
    # both modules build Workloads and so import this one: import them here, not at the top
    from batchsim.sim.workload.traces import read_trace
    from batchsim.sim.workload.transform import TraceOptions

    return read_trace(path, options if options is not None else TraceOptions(time_scale))


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

    def __post_init__(self) -> None:
        try:  # finite and bounded (sim.checks)
            integer("--num-requests", self.num_requests, 1, MAX_NUM_REQUESTS)
            number("--request-rate", self.request_rate, 0, MAX_RATE, low_open=True,
                   allow_inf=True)
            number("--burstiness", self.burstiness, 1e-3, 1e3)
            integer("--input-len", self.input_len, 1, 2**31)
            integer("--output-len", self.output_len, 1, 2**31)
            number("--range-ratio", self.range_ratio, 0, 1)
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
    return Workload(
        arrival_s=arrival,
        input_tokens=inputs.astype(np.int64),
        output_tokens=outputs.astype(np.int64),
        priority=np.zeros(n, dtype=np.int64),
        ids=[str(i) for i in range(n)],
        source=f"synthetic(rate={rate}, burstiness={spec.burstiness:g}, n={n})",
    )


def _uniform_lengths(rng: np.random.Generator, length: int, ratio: float, n: int) -> np.ndarray:
    low = max(1, int(length * (1 - ratio)))
    high = max(low, int(length * (1 + ratio)))
    return rng.integers(low, high + 1, size=n)
