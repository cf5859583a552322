"""vLLM request logs: one JSON object per served request, with the server's own timestamps.

  {"request_id": "bench-0", "input_toks": 2358, "output_toks": 531,
   "arrival_time": 1777142838.338653,            # client send time, epoch seconds
   "queued_ts": 479748.340626232,                # server: request entered the waiting queue
   "scheduled_ts": 479748.34067238,              #   first scheduled
   "first_token_ts": 479748.510151426,           #   first output token
   "last_token_ts": 479764.054028055}            #   last output token  (monotonic seconds)

This is the format of LLMServingSim's recorded vLLM runs (vLLM's per-request stats). The
server-side arrival is `queued_ts`: `queued_ts - arrival_time` varies by ~0.1 s across requests
of one run (client to server), so TTFT and E2EL are measured from `queued_ts`, as the server
sees them. As a trace, the log's arrivals are `queued_ts` relative to the first request.

A log is a measurement, so its timestamps are checked strictly: every one present and finite,
and queued <= scheduled <= first token <= last token on each line; anything else is one
WorkloadError naming file:line (lines out of arrival order are fine: a server may write them
in completion order, and they are sorted on reading like any trace).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from batchsim.sim.workload.workload import WorkloadError

TIME_KEY = "queued_ts"
INPUT_KEY = "input_toks"
OUTPUT_KEY = "output_toks"
# server-side timestamps in the order a request passes them
TIMESTAMPS = ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts")


@dataclass(frozen=True)
class RequestLog:
    """A log's columns in file order (one entry per non-blank line)."""

    path: Path
    ids: list[str]
    input_tokens: np.ndarray  # float64 as written; the trace reader checks them as lengths
    output_tokens: np.ndarray
    stamps: dict[str, np.ndarray]  # TIMESTAMPS -> float64 seconds (the server's clock)
    arrival_time: np.ndarray | None  # the client's send time, epoch seconds, when every line has it
    lines: np.ndarray  # int64 file line numbers (1-based)

    def __len__(self) -> int:
        return len(self.lines)


def read_request_log(path: str | Path) -> RequestLog:
    """Read and check a vLLM request log; raise WorkloadError naming file:line."""
    file = Path(path)
    ids: list[str] = []
    inputs: list[float] = []
    outputs: list[float] = []
    stamps: dict[str, list[float]] = {k: [] for k in TIMESTAMPS}
    arrivals: list[float | None] = []
    lines: list[int] = []
    try:
        handle = file.open(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise WorkloadError(f"{file}: cannot read request log: {e.strerror}") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{file}:{number}"
            row = _object(text, where)
            values = [_finite(row, key, where) for key in TIMESTAMPS]
            for (a, b), (x, y) in zip(pairwise(TIMESTAMPS), pairwise(values), strict=True):
                if y < x:
                    raise WorkloadError(f"{where}: {b} ({y!r}) is earlier than {a} ({x!r}): "
                                        "the request's timestamps are out of order")
            for key, value in zip(TIMESTAMPS, values, strict=True):
                stamps[key].append(value)
            inputs.append(_finite(row, INPUT_KEY, where))
            outputs.append(_finite(row, OUTPUT_KEY, where))
            arrival = row.get("arrival_time")
            arrivals.append(_finite(row, "arrival_time", where) if arrival is not None else None)
            ids.append(str(row.get("request_id", len(ids))))
            lines.append(number)
    if not lines:
        raise WorkloadError(f"{file}: request log holds no requests")
    arrival_time = (np.asarray(arrivals, dtype=np.float64)
                    if all(a is not None for a in arrivals) else None)
    return RequestLog(file, ids, np.asarray(inputs, dtype=np.float64),
                      np.asarray(outputs, dtype=np.float64),
                      {k: np.asarray(v, dtype=np.float64) for k, v in stamps.items()},
                      arrival_time, np.asarray(lines, dtype=np.int64))


def _object(text: str, where: str) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{where}: malformed JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise WorkloadError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _finite(row: dict, key: str, where: str) -> float:
    value = row.get(key)
    if value is None:
        raise WorkloadError(f"{where}: missing {key}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WorkloadError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)
