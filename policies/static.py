"""Static batching (seeds 000, 001): collect max_batch_size requests, or fewer once the oldest
has waited max_batch_wait_ms; pad, prefill together, decode until the longest finishes; no
request joins a running batch. Contiguous KV reservation (see policies.padded_batch).

max_batch_wait_ms means what the dynamic batcher's max_queue_delay_microseconds means: 0
dispatches whatever is queued at once; inf (the default) waits for a full batch. The knob's old
name max_queue_delay_ms is kept as an alias with its old meaning (0 = wait for a full batch)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from batchsim.policies.base import Plan, Policy, StepEvents, Wait
from batchsim.policies.kv import MemoryFacts
from batchsim.policies.padded_batch import STATIC_MEMORY_UTILIZATION, PaddedBatch, take_fitting
from batchsim.policies.registry import register
from batchsim.policies.request import Request

BLOCK_SIZE = 16  # granularity for reporting contiguous reservations in blocks


def _from_queue_delay_ms(value: float) -> float:
    """The old knob max_queue_delay_ms (0 = wait for a full batch) as max_batch_wait_ms."""
    return math.inf if value == 0 else value


@dataclass(frozen=True)
class StaticConfig:
    max_batch_size: int = 8  # requests per batch
    # longest the oldest queued request waits for a full batch before a partial one is
    # dispatched, ms: 0 = at once (as dynamic's max_queue_delay_microseconds=0), inf = always
    # wait for a full batch (or the end of the arrivals)
    max_batch_wait_ms: float = math.inf

    # old knob name -> (its type, the new knob, how its value converts); registry.make_config
    KNOB_ALIASES: ClassVar[dict[str, tuple[type, str, Any]]] = {
        "max_queue_delay_ms": (float, "max_batch_wait_ms", _from_queue_delay_ms)}

    def __post_init__(self) -> None:
        if self.max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {self.max_batch_size}")
        if not self.max_batch_wait_ms >= 0:
            raise ValueError(f"max_batch_wait_ms must be >= 0, got {self.max_batch_wait_ms}")


class PaddedBatchPolicy(Policy):
    """Shared machinery of the policies that run static, padded batches."""

    def __init__(self, config: object, memory: MemoryFacts, max_model_len: int) -> None:
        super().__init__(config, memory, max_model_len)
        self._capacity_tokens = memory.kv_capacity_tokens(STATIC_MEMORY_UTILIZATION)
        self._batch: PaddedBatch | None = None

    @property
    def batch(self) -> PaddedBatch | None:
        """The batch running now, if any (nobody joins it)."""
        return self._batch

    @property
    def kv_capacity_blocks(self) -> int:
        return self._capacity_tokens // BLOCK_SIZE

    @property
    def kv_block_size(self) -> int:
        return BLOCK_SIZE

    def check_workload(self, max_input_tokens: int, max_total_tokens: int) -> None:
        if max_total_tokens > self._capacity_tokens:
            raise ValueError(
                f"the longest request ({max_total_tokens} tokens) does not fit the KV memory "
                f"({self._capacity_tokens} tokens at {STATIC_MEMORY_UTILIZATION:.0%} of the "
                "device): use a larger device or reject long requests"
            )

    def complete(self, plan: Plan, num_steps: int) -> StepEvents:
        assert self._batch is not None, "complete() without a running batch"
        events = self._batch.complete(num_steps)
        if self._batch.done:
            self._batch = None
        return events

    def abort(self, request: Request) -> bool:
        if self._batch is not None and request in self._batch.requests:
            return False  # its row runs on as padding; the reservation ends with the batch
        self._forget(request)
        return True

    def _forget(self, request: Request) -> None:
        """Take a queued request out of the waiting queue(s), if it is there."""
        raise NotImplementedError

    def start_batch(self, candidates: list[Request]) -> PaddedBatch:
        """Start a batch of the longest prefix of candidates whose reservation fits."""
        requests = take_fitting(candidates, self._capacity_tokens)
        assert requests, f"request {candidates[0].index} does not fit; check_workload missed it"
        self._batch = PaddedBatch(requests, BLOCK_SIZE)
        return self._batch


@register("static", StaticConfig)
class Static(PaddedBatchPolicy):
    config: StaticConfig

    def __init__(self, config: StaticConfig, memory: MemoryFacts, max_model_len: int) -> None:
        super().__init__(config, memory, max_model_len)
        self._waiting: deque[Request] = deque()

    def add_request(self, request: Request, now_s: float) -> str | None:
        self._waiting.append(request)
        return None

    def has_work(self) -> bool:
        return self._batch is not None or bool(self._waiting)

    def _forget(self, request: Request) -> None:
        if request in self._waiting:
            self._waiting.remove(request)

    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        if self._batch is not None:
            return self._batch.plan()
        if not self._waiting:
            return Wait()
        cfg = self.config
        deadline = self._waiting[0].arrival_s + cfg.max_batch_wait_ms / 1e3  # inf: never
        full = len(self._waiting) >= cfg.max_batch_size
        if not (full or now_s >= deadline or arrivals_done):
            return Wait(until_s=deadline if math.isfinite(deadline) else None)
        candidates = [self._waiting[i] for i in range(min(cfg.max_batch_size, len(self._waiting)))]
        batch = self.start_batch(candidates)
        for _ in batch.requests:
            self._waiting.popleft()
        return batch.plan()

