"""Replaying a trace differently: a time window, filters, sampling, another speed; and writing
the result in the native format.

The steps run in this order, each on the previous one's output:
  1. window: keep arrivals in [start_s, start_s + duration_s) of the trace's own time (seconds
     from its first request; a native trace's arrival_s), then shift them so start_s is t = 0;
  2. drop prompts longer than max_input_len;
  3. keep each request with probability `sample` (seeded);
  4. multiply arrival times by time_scale, or by the factor that makes the mean rate
     target_rate. The mean rate is 1 / mean gap = (N - 1) / (last - first arrival), the rate
     that synthetic arrivals with --request-rate R have.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchsim.sim.atomic import atomic_file
from batchsim.sim.checks import MAX_ARRIVAL_S, MAX_RATE, MAX_TIME_SCALE, integer, number
from batchsim.sim.outputs import check_output
from batchsim.sim.workload.workload import Workload, WorkloadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraceOptions:
    """How to read and replay a trace; every field defaults to 'as recorded'."""

    time_scale: float = 1.0  # multiply arrival times (0.5 = replay twice as fast)
    format: str | None = None  # None: detect from the first line
    strict: bool = False  # out-of-order timestamps: fail instead of sorting
    start_s: float = 0.0  # window start, seconds of trace time
    duration_s: float | None = None  # window length; None = to the end
    target_rate: float | None = None  # req/s; replaces time_scale
    max_input_len: int | None = None  # drop longer prompts
    sample: float | None = None  # keep each request with this probability
    seed: int = 0  # of the sampling

    def __post_init__(self) -> None:
        try:  # finite and bounded (sim.checks); the checks below say what the options mean
            number("--time-scale", self.time_scale, 0, MAX_TIME_SCALE, low_open=True)
            number("--start", self.start_s, 0, MAX_ARRIVAL_S)
            if self.duration_s is not None:
                number("--duration", self.duration_s, 0, None, low_open=True, allow_inf=True)
            if self.target_rate is not None:
                number("--target-rate", self.target_rate, 0, MAX_RATE, low_open=True)
            if self.sample is not None:
                number("--sample", self.sample, 0, 1, low_open=True)
            if self.max_input_len is not None:
                integer("--max-input-len", self.max_input_len, 1, 2**53)
        except ValueError as e:
            raise WorkloadError(str(e)) from None
        if not self.time_scale > 0:
            raise WorkloadError(f"--time-scale must be positive, got {self.time_scale}")
        if self.target_rate is not None:
            if self.time_scale != 1.0:
                raise WorkloadError("--time-scale and --target-rate cannot be combined: "
                                    "choose one")
            if not 0 < self.target_rate < math.inf:
                raise WorkloadError(f"--target-rate must be a positive number of req/s, "
                                    f"got {self.target_rate}")
        if not 0 <= self.start_s < math.inf:
            raise WorkloadError(f"--start must be >= 0 seconds, got {self.start_s}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise WorkloadError(f"--duration must be positive, got {self.duration_s}")
        if self.max_input_len is not None and self.max_input_len <= 0:
            raise WorkloadError(f"--max-input-len must be positive, got {self.max_input_len}")
        if self.sample is not None and not 0 < self.sample <= 1:
            raise WorkloadError(f"--sample is a fraction in (0, 1], got {self.sample}")

    @property
    def windowed(self) -> bool:
        return self.start_s > 0 or self.duration_s is not None


def mean_rate(arrival_s: np.ndarray) -> float | None:
    """(N - 1) / span in req/s, or None when it is undefined (one request, or a zero span)."""
    span = float(arrival_s[-1] - arrival_s[0]) if len(arrival_s) else 0.0
    return (len(arrival_s) - 1) / span if span > 0 else None


def transform(workload: Workload, options: TraceOptions) -> Workload:
    """Apply options' window, filter, sampling and speed; record each in the provenance."""
    record = dict(workload.provenance)
    source = workload.source
    arrival = workload.arrival_s
    index = np.arange(len(workload))
    if options.windowed:
        end = options.start_s + (options.duration_s or math.inf)
        index = np.flatnonzero((arrival >= options.start_s) & (arrival < end))
        record["window"] = {"start_s": options.start_s, "duration_s": options.duration_s}
        record["dropped_outside_window"] = len(workload) - len(index)
        if len(index) == 0:
            raise WorkloadError(f"{source}: no request in the window [{options.start_s:g}, "
                                f"{end:g}) s; the trace spans {arrival[0]:g} to "
                                f"{arrival[-1]:g} s")
    if options.max_input_len is not None:
        fits = workload.input_tokens[index] <= options.max_input_len
        record["max_input_len"] = options.max_input_len
        record["dropped_too_long"] = int((~fits).sum())
        if record["dropped_too_long"]:
            log.warning("%s: dropped %d requests with more than %d input tokens", source,
                        record["dropped_too_long"], options.max_input_len)
        index = index[fits]
    if options.sample is not None:
        kept = np.random.default_rng(options.seed).random(len(index)) < options.sample
        record["sample"] = {"fraction": options.sample, "seed": options.seed}
        record["dropped_by_sample"] = int((~kept).sum())
        index = index[kept]
    if len(index) == 0:
        raise WorkloadError(f"{source}: no request left after --max-input-len / --sample")
    shifted = arrival[index] - options.start_s
    scale = options.time_scale
    if options.target_rate is not None:
        rate = mean_rate(shifted)
        if rate is None:
            raise WorkloadError(f"{source}: --target-rate needs at least two requests at "
                                "different times")
        scale = rate / options.target_rate
        record["target_rate"] = options.target_rate
    record["time_scale"] = scale
    record["num_requests"] = len(index)
    if len(index) == len(workload):  # nothing dropped: no copy of the columns
        return dataclasses.replace(workload, arrival_s=shifted * scale, provenance=record)
    subset = workload.take(index, shifted * scale)
    subset.provenance = record
    return subset


def write_native(workload: Workload, out: Path, force: bool = False) -> None:
    """Write the native JSONL format atomically: a temporary sibling, then a rename."""
    check_output(out, force, "file")
    with atomic_file(out) as f:
        f.writelines(native_lines(workload))


def native_lines(workload: Workload) -> Iterator[str]:
    """One JSON object per request; arrival rounded to the microsecond, optional fields only
    where they say something (an id, a non-zero priority, hash_ids, a prefix group)."""
    arrival = np.round(workload.arrival_s, 6).tolist()
    inputs = workload.input_tokens.tolist()
    outputs = workload.output_tokens.tolist()
    priority = workload.priority.tolist()
    blocks = workload.hash_ids
    flat = blocks.values.tolist() if blocks is not None else []
    offsets = blocks.offsets.tolist() if blocks is not None else []
    groups = workload.prefix_group.tolist() if workload.prefix_group is not None else None
    shared = workload.prefix_tokens.tolist() if workload.prefix_tokens is not None else []
    for i, (a, n_in, n_out, p) in enumerate(zip(arrival, inputs, outputs, priority,
                                                strict=True)):
        extra = ""
        if workload.ids is not None:
            extra += f', "id": {json.dumps(workload.ids[i])}'
        if p:
            extra += f', "priority": {p}'
        if blocks is not None:
            extra += f', "hash_ids": [{", ".join(map(str, flat[offsets[i]:offsets[i + 1]]))}]'
        if groups is not None and groups[i] >= 0:
            extra += f', "prefix_group": {groups[i]}, "prefix_len": {shared[i]}'
        yield (f'{{"arrival_s": {a!r}, "input_tokens": {n_in}, '
               f'"output_tokens": {n_out}{extra}}}\n')
