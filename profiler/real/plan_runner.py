"""Runs a policy's Plan on the real engines and says which request got which token.

Packed plans run on the paged ``Engine`` (what the profile's packed.* models measured), padded
plans on the ``StaticEngine`` (padded.*). The one place a Plan meets the engines: the validation
executor (``batchsim.profiler.real.executor``) and the live server (``batchsim.serve``) both run
their steps here. Recompute preemption frees a sequence's KV and keeps prompt + generated tokens
to prefill again; a static batch's rows keep running as padding until the batch ends.
torch is imported only by the engines, which the caller builds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchsim.profiler.engine.records import EngineChunk, EnginePlan, StepTiming

if TYPE_CHECKING:
    from batchsim.policies.base import Plan
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.static_engine import StaticEngine


@dataclass
class StepOutput:
    tokens: dict[int, int]  # request index -> token sampled for it (static: every row)
    busy_s: float  # wall time of the engine step
    timing: StepTiming  # the engine's own record of the step (shape, GPU and host times)


class PlanRunner:
    """The real engines behind the server (one of them may be None if no plan needs it)."""

    def __init__(self, paged: Engine | None, static: StaticEngine | None) -> None:
        self.paged = paged
        self.static = static
        self._prompts: dict[int, list[int]] = {}  # live requests' prompts, by index
        self._resume: dict[int, list[int]] = {}  # preempted: prompt + generated, to recompute
        self._batch: list[int] = []  # request index of each row of the static batch
        self._live: set[int] = set()  # requests added to the paged engine, not freed since

    def add(self, index: int, prompt: list[int]) -> None:
        self._prompts[index] = prompt

    def knows(self, index: int) -> bool:
        """The request's prompt was added and it has not been released."""
        return index in self._prompts

    def run(self, plan: Plan) -> StepOutput:
        t0 = time.perf_counter()
        tokens, timing = self._padded(plan) if plan.layout == "padded" else self._packed(plan)
        return StepOutput(tokens, time.perf_counter() - t0, timing)

    def release(self, index: int) -> None:
        """Forget a finished or aborted request and free its paged KV blocks, if it has any."""
        self._prompts.pop(index, None)
        self._resume.pop(index, None)
        self._live.discard(index)
        if self.paged is not None and self.paged.holds(index):  # O(1): 64 a step can end
            self.paged.free(index)

    def kv_usage(self) -> float | None:
        """Fraction of the paged pool's blocks in use (None without a paged engine)."""
        if self.paged is None:
            return None
        cache = self.paged.kv_cache
        return 1.0 - cache.num_free_blocks / cache.num_blocks

    def _packed(self, plan: Plan) -> tuple[dict[int, int], StepTiming]:
        engine = self.paged
        assert engine is not None, "a packed plan needs the paged engine"
        for r in plan.preempted:  # recompute preemption: free now, prefill again later
            self._resume[r.index] = engine.free(r.index)
            self._live.discard(r.index)
        chunks = []
        for chunk in plan.prefills:
            i = chunk.request.index
            if i not in self._live:
                resumed = self._resume.pop(i, None)
                engine.add(i, resumed if resumed is not None else self._prompts[i])
                self._live.add(i)
                if chunk.start:
                    # A prefix-cache hit: the engine shares no blocks, so it takes fresh ones
                    # for the cached tokens without computing them; the step has the shape
                    # the policy planned, but the KV of those tokens is not the prompt's.
                    engine.assume_cached(i, chunk.start)
            chunks.append(EngineChunk(i, chunk.start, chunk.num_tokens))
        result = engine.step(EnginePlan(prefills=chunks, decodes=[r.index for r in plan.decodes]))
        tokens = {int(k): int(v) for k, v in result.tokens.items()}  # type: ignore[call-overload]
        return tokens, result.timing

    def _padded(self, plan: Plan) -> tuple[dict[int, int], StepTiming]:
        engine = self.static
        assert engine is not None, "a padded plan needs the static engine"
        if plan.prefills:  # a new static batch: left-padded prefill of every row
            self._batch = [c.request.index for c in plan.prefills]
            prompts = [self._prompts[i] for i in self._batch]
            sampled, timing = engine.prefill(prompts,
                                             [c.request.output_tokens for c in plan.prefills])
        else:
            sampled, timing = engine.decode()
        # every row samples; rows past their request's end are padding, dropped by the caller
        return dict(zip(self._batch, (int(t) for t in sampled), strict=True)), timing
