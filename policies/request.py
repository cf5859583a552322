"""The request as every policy and executor sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrefixId:
    """What a request's prompt shares with others, compactly: one hash per block_tokens tokens
    of the prompt, where equal hashes at positions 0..k mean equal prompts up to the end of
    block k (the prefix cache chains them, so per-block hashes work too).

    Mooncake's hash_ids are 512-token blocks; a shared system prompt of P tokens is one block
    of P tokens (its group number as the hash). Tokens past the hashes' reach are the
    request's own. The hashes are int64 values packed in a bytes object (33 + 8 bytes per
    hash), not a tuple of ints (about 40 bytes per hash), for million-request runs."""

    block_tokens: int
    hashes: bytes

    def __post_init__(self) -> None:
        assert self.block_tokens > 0 and len(self.hashes) % 8 == 0, (self.block_tokens,
                                                                    len(self.hashes))

    @property
    def num_tokens(self) -> int:
        """Tokens the hashes cover (the last block may reach past the prompt)."""
        return self.block_tokens * (len(self.hashes) // 8)


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
    # prefix identity for prefix caching; None = nothing shared (and no cost when caching is
    # off: the workload attaches it only for a policy with enable_prefix_caching)
    prefix: PrefixId | None = None

    def __post_init__(self) -> None:
        assert self.input_tokens > 0 and self.output_tokens > 0, (
            f"request {self.id or self.index}: input_tokens={self.input_tokens} "
            f"output_tokens={self.output_tokens} must be positive"
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
