"""A static batch in flight, as a server without paged KV runs it (seeds 000, 002).

Prompts are left-padded to the longest one and prefilled together; then the whole padded batch
decodes, one token per row per step, until its longest request is done. Requests that finish
early keep their row as padding, and no request joins mid-batch. KV is reserved contiguously:
batch_size * (padded prompt + longest output) tokens for the whole life of the batch.
"""

from __future__ import annotations

import numpy as np

from batchsim.policies.base import Plan, PrefillChunk, StepEvents, StepShape
from batchsim.policies.kv import blocks_for
from batchsim.policies.request import Request

# Fraction of device memory a static server budgets for weights + activations + KV.
STATIC_MEMORY_UTILIZATION = 0.9


def reserved_tokens(requests: list[Request]) -> int:
    """Contiguous KV reservation of a padded batch."""
    pad = max(r.input_tokens for r in requests)
    out = max(r.output_tokens for r in requests)
    return len(requests) * (pad + out)


def take_fitting(candidates: list[Request], capacity_tokens: int) -> list[Request]:
    """The longest prefix of candidates whose padded reservation fits capacity_tokens."""
    batch: list[Request] = []
    pad = out = 0
    for r in candidates:
        pad, out = max(pad, r.input_tokens), max(out, r.output_tokens)
        if (len(batch) + 1) * (pad + out) > capacity_tokens:
            break
        batch.append(r)
    return batch


class PaddedBatch:
    """Steps of one static batch: a padded prefill, then max_output - 1 padded decodes."""

    def __init__(self, requests: list[Request], block_size: int) -> None:
        assert requests, "empty batch"
        self.requests = requests
        self.pad_len = max(r.input_tokens for r in requests)
        self.max_out = max(r.output_tokens for r in requests)
        self.reserved_blocks = blocks_for(reserved_tokens(requests), block_size)
        self._outputs = np.array([r.output_tokens for r in requests])
        self._prompt_sum = sum(r.input_tokens for r in requests)
        self.steps_done = 0  # 0: prefill pending; k: prefill and k - 1 decodes done

    @property
    def done(self) -> bool:
        return self.steps_done >= self.max_out

    def plan(self) -> Plan:
        b, pad = len(self.requests), self.pad_len
        if self.steps_done == 0:
            return Plan(
                prefills=[PrefillChunk(r, 0, r.input_tokens) for r in self.requests],
                shape=StepShape(b, b * pad, 0, b * pad * (pad + 1) // 2, 0),
                layout="padded",
            )
        j = self.steps_done - 1  # index of the next decode step; each row attends pad + j + 1
        return Plan(
            decodes=list(self.requests),
            shape=StepShape(b, 0, b, 0, b * (pad + j + 1)),
            layout="padded",
            max_repeats=self.max_out - self.steps_done,
        )

    def complete(self, num_steps: int) -> StepEvents:
        events = StepEvents()
        if self.steps_done == 0:
            assert num_steps == 1, num_steps
            events.first_tokens = [(r, 0) for r in self.requests]
            events.finished = [(r, 0) for r in self.requests if r.output_tokens == 1]
            events.kv_blocks_used = [self.reserved_blocks]
            events.kv_tokens_used = [self._prompt_sum]
            self.steps_done = 1
            return events
        j0 = self.steps_done - 1
        assert j0 + num_steps <= self.max_out - 1, (j0, num_steps, self.max_out)
        # Decode step j produces token j + 2, so a request of `out` tokens ends at j = out - 2.
        for r in self.requests:
            offset = r.output_tokens - 2 - j0
            if 0 <= offset < num_steps:
                events.finished.append((r, offset))
        generated = np.minimum.outer(j0 + 1 + np.arange(num_steps), self._outputs - 1)
        events.kv_tokens_used = (self._prompt_sum + generated.sum(axis=1)).tolist()
        events.kv_blocks_used = [self.reserved_blocks] * num_steps
        self.steps_done += num_steps
        return events
