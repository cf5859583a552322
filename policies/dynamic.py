"""Dynamic batching with the semantics of Triton Inference Server's dynamic batcher.

Requests queue by priority level (1 = most urgent). When the server is free a batch is formed:
at once if max_batch_size requests are waiting or a preferred size is reached, otherwise when
the oldest request has waited max_queue_delay_microseconds (0 = dispatch whatever is queued).
A request that waits longer than default_timeout_microseconds is rejected (REJECT) or moved
behind the others of its level (DELAY). A full queue (max_queue_size) rejects new arrivals.
Each formed batch runs as a static, padded batch (policies.padded_batch).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from batchsim.policies.base import Plan, Wait
from batchsim.policies.kv import MemoryFacts
from batchsim.policies.registry import register
from batchsim.policies.request import Request
from batchsim.policies.static import PaddedBatchPolicy


@dataclass(frozen=True)
class DynamicConfig:
    max_batch_size: int = 8  # requests per batch
    preferred_batch_size: tuple[int, ...] = ()  # dispatch at once on reaching one of these
    max_queue_delay_microseconds: int = 0  # longest wait for a fuller batch; 0 = no wait
    priority_levels: int = 0  # 0 = one queue; else request priority p maps to level clamp(p)
    default_priority_level: int = 0  # level of requests with priority 0; 0 = lowest level
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"  # default_queue_policy
    default_timeout_microseconds: int = 0  # queue timeout; 0 = none
    max_queue_size: int = 0  # queued requests per level at most; 0 = unbounded

    def __post_init__(self) -> None:
        if self.max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {self.max_batch_size}")
        bad = [p for p in self.preferred_batch_size if not 0 < p <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_size {bad} must be between 1 and max_batch_size "
                f"({self.max_batch_size})"
            )
        for knob in ("max_queue_delay_microseconds", "priority_levels",
                     "default_timeout_microseconds", "max_queue_size", "default_priority_level"):
            if getattr(self, knob) < 0:
                raise ValueError(f"{knob} must be >= 0, got {getattr(self, knob)}")
        if self.default_priority_level > self.priority_levels:
            raise ValueError(
                f"default_priority_level ({self.default_priority_level}) exceeds "
                f"priority_levels ({self.priority_levels})"
            )
        if self.timeout_action not in ("REJECT", "DELAY"):
            raise ValueError(f"timeout_action must be REJECT or DELAY, got {self.timeout_action!r}")


@register("dynamic", DynamicConfig)
class Dynamic(PaddedBatchPolicy):
    config: DynamicConfig

    def __init__(self, config: DynamicConfig, memory: MemoryFacts, max_model_len: int) -> None:
        super().__init__(config, memory, max_model_len)
        levels = max(config.priority_levels, 1)
        # Per level: requests in arrival order, then those delayed by a timeout.
        self._queues: list[deque[Request]] = [deque() for _ in range(levels)]
        self._delayed: list[deque[Request]] = [deque() for _ in range(levels)]
        self._num_queued = 0

    def _level(self, request: Request) -> int:
        cfg = self.config
        if cfg.priority_levels == 0:
            return 0
        p = request.priority or cfg.default_priority_level or cfg.priority_levels
        return min(max(p, 1), cfg.priority_levels) - 1

    def add_request(self, request: Request, now_s: float) -> str | None:
        level = self._level(request)
        queued = len(self._queues[level]) + len(self._delayed[level])
        if self.config.max_queue_size and queued >= self.config.max_queue_size:
            return "queue full"
        self._queues[level].append(request)
        self._num_queued += 1
        return None

    def has_work(self) -> bool:
        return self.batch is not None or self._num_queued > 0

    def _forget(self, request: Request) -> None:
        level = self._level(request)
        for q in (self._queues[level], self._delayed[level]):
            if request in q:
                q.remove(request)
                self._num_queued -= 1
                return

    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        if self.batch is not None:
            return self.batch.plan()
        rejected = self._expire(now_s)
        cfg = self.config
        n = self._num_queued
        if n == 0:
            return Wait(rejected=rejected)
        oldest = min(q[0].arrival_s for q in (*self._queues, *self._delayed) if q)
        deadline = oldest + cfg.max_queue_delay_microseconds / 1e6
        preferred = sorted(cfg.preferred_batch_size)
        target = 0
        if n >= cfg.max_batch_size:
            target = cfg.max_batch_size
        elif preferred and (n in preferred or n >= preferred[-1]):
            target = max(p for p in preferred if p <= n)
        elif cfg.max_queue_delay_microseconds == 0 or now_s >= deadline or arrivals_done:
            target = n
        if not target:
            return Wait(until_s=min(deadline, self._next_timeout()), rejected=rejected)
        batch = self.start_batch(self._ordered(target))
        for r in batch.requests:
            self._remove(r)
        plan = batch.plan()
        plan.rejected = rejected
        return plan

    def _ordered(self, count: int) -> list[Request]:
        out: list[Request] = []
        for level in range(len(self._queues)):
            for q in (self._queues[level], self._delayed[level]):
                for r in q:
                    if len(out) == count:
                        return out
                    out.append(r)
        return out

    def _remove(self, request: Request) -> None:
        level = self._level(request)
        for q in (self._queues[level], self._delayed[level]):
            if q and q[0] is request:
                q.popleft()
                self._num_queued -= 1
                return
        raise AssertionError(f"request {request.index} not at the head of its queue")

    def _expire(self, now_s: float) -> list[tuple[Request, str]]:
        """Apply the queue timeout to requests at the front of each level (FIFO per level)."""
        timeout = self.config.default_timeout_microseconds / 1e6
        rejected: list[tuple[Request, str]] = []
        if not timeout:
            return rejected
        for level, q in enumerate(self._queues):
            while q and now_s - q[0].arrival_s >= timeout:
                r = q.popleft()
                if self.config.timeout_action == "REJECT":
                    self._num_queued -= 1
                    rejected.append((r, "queue timeout"))
                else:
                    self._delayed[level].append(r)
        return rejected

    def _next_timeout(self) -> float:
        timeout = self.config.default_timeout_microseconds / 1e6
        if not timeout:
            return float("inf")
        heads = [q[0].arrival_s for q in self._queues if q]
        return min(heads) + timeout if heads else float("inf")
