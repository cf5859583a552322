"""Shortest-prompt-first continuous batching: the example policy of docs/POLICIES.md.

Continuous batching (policies/continuous.py, vLLM V1 semantics) whose waiting queue is ordered
by the tokens each request must prefill, shortest first, instead of by arrival. Shortest-job-
first ordering minimises mean waiting time when job sizes are known; a server knows the
prompt's length on arrival but not the output's, so this orders by the part it knows (the
idea behind length-aware schedulers such as Fu et al.'s "Efficient LLM Scheduling by Learning
to Rank", NeurIPS'24, which predict the output length instead). A request preempted for
recompute is queued again by its new length, prompt plus the tokens it generated.

The price is fairness: under sustained load a long prompt may wait while shorter ones keep
arriving. `prompt_bucket_tokens` coarsens the order: prompts in the same bucket of that many
tokens keep their arrival order. With `policy=priority` the priority level comes first and
prompt length orders requests within a level.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchsim.policies.continuous import Continuous, ContinuousConfig
from batchsim.policies.queues import QueueKey
from batchsim.policies.registry import register
from batchsim.policies.seq import Seq


@dataclass(frozen=True)
class ShortestPromptConfig(ContinuousConfig):
    # prompts within one bucket of this many tokens keep arrival order; 1 = strict order
    prompt_bucket_tokens: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_bucket_tokens <= 0:
            raise ValueError(f"prompt_bucket_tokens must be positive (1 = order by exact "
                             f"length), got {self.prompt_bucket_tokens}")


@register("shortest_prompt", ShortestPromptConfig)
class ShortestPrompt(Continuous):
    config: ShortestPromptConfig

    def queue_order(self) -> QueueKey:
        bucket = self.config.prompt_bucket_tokens
        by_priority = self.config.policy == "priority"

        def key(seq: Seq) -> tuple[int, int, float, int]:
            # seq.target: tokens to prefill, the prompt (+ generated tokens on a recompute)
            level = seq.req.priority if by_priority else 0
            return (level, -(-seq.target // bucket), seq.req.arrival_s, seq.req.index)

        return key
