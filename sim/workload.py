"""Workloads: who arrives when, asking for how many tokens.

Native trace format (JSONL, one request per line):
    {"arrival_s": 0.0, "input_tokens": 812, "output_tokens": 153, "id": "r1", "priority": 0}
`id` and `priority` are optional. Synthetic workloads follow `vllm bench serve`: request_rate
(req/s; inf = all at t=0) and burstiness (gamma shape; 1 = Poisson), gaps gamma(shape=b,
scale=1/(rate*b)), lengths uniform in [len*(1-r), len*(1+r)] or sampled from a trace.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from policies.request import Request

log = logging.getLogger(__name__)


class WorkloadError(ValueError):
    """Bad workload input; the message names the file, line and problem."""


@dataclass
class Workload:
    """Column arrays, sorted by arrival time."""

    arrival_s: np.ndarray  # float64 [N]
    input_tokens: np.ndarray  # int64 [N]
    output_tokens: np.ndarray  # int64 [N]
    priority: np.ndarray  # int64 [N]
    ids: list[str]
    source: str  # how it was made, for config.json
    line_numbers: np.ndarray | None = None  # trace line of each request, for error messages
    hash_ids: list[list[int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def requests(self) -> list[Request]:
        return [
            Request(i, float(a), int(n_in), int(n_out), int(p), rid)
            for i, (a, n_in, n_out, p, rid) in enumerate(
                zip(self.arrival_s, self.input_tokens, self.output_tokens, self.priority,
                    self.ids, strict=True)
            )
        ]

    def where(self, index: int) -> str:
        """Human pointer to request `index`: its trace line when there is one."""
        if self.line_numbers is not None:
            return f"{self.source}:{int(self.line_numbers[index])}"
        return f"{self.source} request {index}"


def load_trace(path: str | Path, time_scale: float = 1.0) -> Workload:
    """Read a native JSONL trace; arrival times are multiplied by time_scale (<1 = faster)."""
    if not time_scale > 0:
        raise WorkloadError(f"--time-scale must be positive, got {time_scale}")
    file = Path(path)
    arrivals: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    priorities: list[int] = []
    ids: list[str] = []
    lines: list[int] = []
    try:
        handle = file.open(encoding="utf-8")
    except OSError as e:
        raise WorkloadError(f"{file}: cannot read trace: {e.strerror}") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{file}:{number}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{where}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise WorkloadError(f"{where}: expected a JSON object, got {type(row).__name__}")
            arrivals.append(_number(row, "arrival_s", where, minimum=0.0))
            inputs.append(_count(row, "input_tokens", where))
            outputs.append(_count(row, "output_tokens", where))
            priorities.append(int(_number(row, "priority", where, default=0.0)))
            ids.append(str(row.get("id", len(ids))))
            lines.append(number)
    if not arrivals:
        raise WorkloadError(f"{file}: trace holds no requests")
    arrival = np.asarray(arrivals) * time_scale
    order = np.argsort(arrival, kind="stable")
    if np.any(order != np.arange(len(order))):
        log.warning("%s: arrival_s is not sorted; requests were sorted by arrival", file)
    return Workload(
        arrival_s=arrival[order],
        input_tokens=np.asarray(inputs, dtype=np.int64)[order],
        output_tokens=np.asarray(outputs, dtype=np.int64)[order],
        priority=np.asarray(priorities, dtype=np.int64)[order],
        ids=[ids[i] for i in order],
        source=str(file),
        line_numbers=np.asarray(lines)[order],
    )


def _number(row: dict, key: str, where: str, minimum: float | None = None,
            default: float | None = None) -> float:
    if key not in row:
        if default is not None:
            return default
        raise WorkloadError(f"{where}: missing field {key!r}")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WorkloadError(f"{where}: {key} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise WorkloadError(f"{where}: {key} must be >= {minimum}, got {value!r}")
    return float(value)


def _count(row: dict, key: str, where: str) -> int:
    value = _number(row, key, where)
    if value != int(value) or value <= 0:
        raise WorkloadError(f"{where}: {key} must be a positive integer, got {row[key]!r}")
    return int(value)


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
