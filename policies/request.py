"""The request as every policy and executor sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Request:
    """One inference request: what arrives, not how far it got.

    Progress (tokens computed, tokens generated) is owned by the policy that schedules the
    request, so executors never iterate over a batch to advance it.
    """

    index: int  # row in the workload's arrays; also the stable tie-breaker
    arrival_s: float
    input_tokens: int
    output_tokens: int
    priority: int = 0  # lower value = more urgent (vLLM convention)
    id: str = ""

    def __post_init__(self) -> None:
        assert self.input_tokens > 0 and self.output_tokens > 0, (
            f"request {self.id or self.index}: input_tokens={self.input_tokens} "
            f"output_tokens={self.output_tokens} must be positive"
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
