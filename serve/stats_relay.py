"""`LiveStats` calls recorded in the engine process and replayed in the HTTP process.

The engine loop writes its statistics through the `LiveStats` methods below; in the engine
process it is given a `StatsRelay`, which only appends each call to a list that goes to the
parent with the step's events, where `replay` makes the same calls on the real `LiveStats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchsim.serve.live_stats import LiveStats

Op = tuple[str, tuple[Any, ...]]
OPS = ("step", "idle", "admitted", "request_done")  # the only methods replayed


class StatsRelay:
    """Stands in for `LiveStats` in the engine process (not thread-safe: the loop's thread)."""

    def __init__(self) -> None:
        self.kv_usage = 0.0  # read back by the loop when it publishes an idle state
        self._ops: list[Op] = []

    def step(self, busy_s: float, host_s: float, tokens: int, running: int, waiting: int,
             kv_usage: float, preempted: int, host_cpu_s: float = 0.0,
             host_runqueue_s: float = 0.0) -> None:
        self.kv_usage = kv_usage
        self._ops.append(("step", (busy_s, host_s, tokens, running, waiting, kv_usage,
                                   preempted, host_cpu_s, host_runqueue_s)))

    def idle(self, running: int, waiting: int, kv_usage: float) -> None:
        self.kv_usage = kv_usage
        self._ops.append(("idle", (running, waiting, kv_usage)))

    def admitted(self, prompt_tokens: int) -> None:
        self._ops.append(("admitted", (prompt_tokens,)))

    def request_done(self, reason: str, ttft_s: float | None, e2e_s: float | None,
                     queue_s: float | None, itls_s: list[float]) -> None:
        self._ops.append(("request_done", (reason, ttft_s, e2e_s, queue_s, itls_s)))

    def take(self) -> list[Op]:
        """The calls since the last take."""
        ops, self._ops = self._ops, []
        return ops


def replay(stats: LiveStats, ops: Sequence[Op]) -> None:
    """Make the recorded calls on the real statistics."""
    for name, args in ops:
        assert name in OPS, name
        getattr(stats, name)(*args)
