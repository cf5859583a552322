"""Live server statistics: Prometheus counters, gauges and histograms, and a per-second history.

Written by the engine thread, read by HTTP handlers (`/metrics`, the dashboard): every access
holds one lock, and the engine thread only adds numbers under it (no I/O, no formatting).
Metric names are vLLM's where vLLM has one (`vllm:num_requests_running`,
`vllm:time_to_first_token_seconds`, ...), `batchsim:*` otherwise.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field

# Histogram bounds in seconds (vLLM's TTFT buckets; the same for the other latencies).
BUCKETS_S: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0)
HISTORY_S = 600  # seconds of per-second history kept for the dashboard


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0
    count: int = 0

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, value_s)] += 1
        self.sum_s += value_s
        self.count += 1


@dataclass
class _Second:
    """What happened during one wall-clock second (dashboard history)."""

    t_s: float
    tokens: int = 0
    busy_s: float = 0.0
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0


class LiveStats:
    """Counters the engine thread updates and the HTTP side reads (thread-safe)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self.start_wall = time.time()
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0  # fraction of KV blocks held
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.busy_s = 0.0  # device time in engine steps
        self.host_s = 0.0  # engine-thread time between steps while it had work
        self.host_cpu_s = 0.0  # of which the thread was on a core (thread CPU time)
        self.host_runqueue_s = 0.0  # of which it was runnable, waiting for a core (Linux)
        self.steps = 0
        self.finished: dict[str, int] = {"length": 0, "stop": 0, "abort": 0, "rejected": 0}
        self.ttft = Histogram()
        self.itl = Histogram()
        self.e2e = Histogram()
        self.queue = Histogram()
        self._history: deque[_Second] = deque(maxlen=HISTORY_S)

    # -- written by the engine thread -------------------------------------------------------

    def step(self, busy_s: float, host_s: float, tokens: int, running: int, waiting: int,
             kv_usage: float, preempted: int, host_cpu_s: float = 0.0,
             host_runqueue_s: float = 0.0) -> None:
        with self._lock:
            self.steps += 1
            self.busy_s += busy_s
            self.host_s += host_s
            self.host_cpu_s += host_cpu_s
            self.host_runqueue_s += host_runqueue_s
            self.generation_tokens += tokens
            self.preemptions += preempted
            self.running, self.waiting, self.kv_usage = running, waiting, kv_usage
            second = self._second()
            second.tokens += tokens
            second.busy_s += busy_s
            second.running, second.waiting, second.kv_usage = running, waiting, kv_usage

    def idle(self, running: int, waiting: int, kv_usage: float) -> None:
        with self._lock:
            self.running, self.waiting, self.kv_usage = running, waiting, kv_usage
            second = self._second()
            second.running, second.waiting, second.kv_usage = running, waiting, kv_usage

    def admitted(self, prompt_tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens

    def request_done(self, reason: str, ttft_s: float | None, e2e_s: float | None,
                     queue_s: float | None, itls_s: list[float]) -> None:
        with self._lock:
            self.finished[reason] = self.finished.get(reason, 0) + 1
            for hist, value in ((self.ttft, ttft_s), (self.e2e, e2e_s), (self.queue, queue_s)):
                if value is not None:
                    hist.observe(value)
            for gap in itls_s:
                self.itl.observe(gap)

    def _second(self) -> _Second:
        now = time.time()
        t = float(int(now))
        if not self._history or self._history[-1].t_s != t:
            self._history.append(_Second(t))
        return self._history[-1]

    # -- read by the HTTP side --------------------------------------------------------------

    def history(self) -> dict[str, list[float]]:
        """Per-second series for the dashboard (seconds since the server started)."""
        with self._lock:
            rows = list(self._history)
        return {
            "t_s": [r.t_s - self.start_wall for r in rows],
            "tokens_per_s": [float(r.tokens) for r in rows],
            "running": [float(r.running) for r in rows],
            "waiting": [float(r.waiting) for r in rows],
            "kv_usage": [r.kv_usage for r in rows],
            "busy_fraction": [min(r.busy_s, 1.0) for r in rows],
        }

    def prometheus(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        label = f'model_name="{self.model}"'
        with self._lock:
            uptime = max(time.time() - self.start_wall, 1e-9)
            lines: list[str] = []

            def metric(name: str, kind: str, help_text: str, value: float,
                       labels: str = label) -> None:
                lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                              f"{name}{{{labels}}} {value!r}"])

            metric("vllm:num_requests_running", "gauge", "Requests in the running batch.",
                   float(self.running))
            metric("vllm:num_requests_waiting", "gauge", "Requests waiting to be scheduled.",
                   float(self.waiting))
            metric("vllm:gpu_cache_usage_perc", "gauge", "Fraction of KV blocks in use (1 = "
                   "100%).", self.kv_usage)
            metric("vllm:prompt_tokens_total", "counter", "Prompt tokens admitted.",
                   float(self.prompt_tokens))
            metric("vllm:generation_tokens_total", "counter", "Tokens generated.",
                   float(self.generation_tokens))
            metric("vllm:num_preemptions_total", "counter", "Recompute preemptions.",
                   float(self.preemptions))
            lines += ["# HELP vllm:request_success_total Finished requests by reason.",
                      "# TYPE vllm:request_success_total counter"]
            for reason, count in sorted(self.finished.items()):
                lines.append(f'vllm:request_success_total{{{label},finished_reason="{reason}"}} '
                             f"{float(count)!r}")
            for name, hist, text in (
                    ("vllm:time_to_first_token_seconds", self.ttft, "Time to first token."),
                    ("vllm:inter_token_latency_seconds", self.itl, "Inter-token latency."),
                    ("vllm:e2e_request_latency_seconds", self.e2e, "End-to-end latency."),
                    ("vllm:request_queue_time_seconds", self.queue, "Arrival to first "
                     "scheduled.")):
                lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
                cumulative = 0
                for bound, count in zip((*BUCKETS_S, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'{name}_bucket{{{label},le="{le}"}} {float(cumulative)!r}')
                lines.append(f"{name}_sum{{{label}}} {hist.sum_s!r}")
                lines.append(f"{name}_count{{{label}}} {float(hist.count)!r}")
            metric("batchsim:device_busy_seconds_total", "counter", "Device time spent in "
                   "engine steps (path=gpu: the main device).", self.busy_s,
                   f'{label},path="gpu"')
            metric("batchsim:device_busy_fraction", "gauge", "Busy seconds over uptime.",
                   self.busy_s / uptime, f'{label},path="gpu"')
            metric("batchsim:host_seconds_total", "counter", "Engine-thread time between steps "
                   "while there was work (the server's own overhead).", self.host_s)
            metric("batchsim:host_cpu_seconds_total", "counter", "CPU time of the engine "
                   "thread between steps (host seconds minus waiting for a core or the GIL).",
                   self.host_cpu_s)
            metric("batchsim:host_runqueue_seconds_total", "counter", "Of the host seconds, "
                   "the engine thread was runnable but waiting for a core (Linux schedstat; "
                   "the machine's contention, not the server's work).", self.host_runqueue_s)
            metric("batchsim:engine_steps_total", "counter", "Engine steps run.",
                   float(self.steps))
        return "\n".join(lines) + "\n"
