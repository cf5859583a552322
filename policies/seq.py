"""A request's scheduling state inside a continuous-batching policy (the policy's view of it,
like nano-vllm's Sequence): how much of it is prefilled, how many tokens it generated."""

from __future__ import annotations

from batchsim.policies.request import Request


class Seq:
    """Progress of one request. Policies read every field; `Continuous` alone writes the
    decode fields (entry_step, entry_len, finish_step, version)."""

    __slots__ = ("computed", "entry_len", "entry_step", "finish_step", "gen", "req", "target",
                 "version")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.target = req.input_tokens  # tokens to prefill: prompt (+ generated, on recompute)
        self.computed = 0  # tokens in KV while prefilling
        self.gen = 0  # tokens generated when it last entered decode or was preempted
        self.entry_step = 0  # first step index it decodes in
        self.entry_len = 0  # KV length before that step
        self.finish_step = 0  # step index producing its last token
        self.version = 0  # bumped on preemption: stale heap entries are skipped

    @property
    def sort_key(self) -> tuple[int, float, int]:
        """Priority order: lower priority value first, then arrival, then workload row."""
        return (self.req.priority, self.req.arrival_s, self.req.index)

    @property
    def is_fresh(self) -> bool:
        """Never prefilled before (not a recompute after preemption)."""
        return self.gen == 0

    def advance_prefill(self, num_tokens: int) -> bool:
        """Count num_tokens more as prefilled; True if that completes the prefill, which
        samples a token."""
        self.computed += num_tokens
        if self.computed < self.target:
            return False
        self.gen += 1
        return True

    def restart(self) -> None:
        """After a recompute preemption: prefill prompt + generated tokens again from zero."""
        self.target = self.req.input_tokens + self.gen
        self.computed = 0
