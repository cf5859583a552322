"""Plain records exchanged with the real engines (no torch import: the simulator can use them)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

SeqId = Hashable  # ints, strings, tuples: the engines only use it as a dict key


@dataclass(frozen=True)
class EngineChunk:
    """Compute tokens ``[start, start + num_tokens)`` of a sequence.

    Its first ``start`` tokens must already be cached; the chunk adds ``num_tokens`` more.
    """

    seq_id: SeqId
    start: int
    num_tokens: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.num_tokens <= 0:
            raise ValueError(
                f"prefill chunk of {self.seq_id!r} needs start >= 0 and num_tokens > 0, "
                f"got start={self.start}, num_tokens={self.num_tokens}"
            )


@dataclass(frozen=True)
class EnginePlan:
    """One engine step: prefill chunks plus decodes (one new token each, the last sampled one)."""

    prefills: Sequence[EngineChunk] = field(default_factory=list)
    decodes: Sequence[SeqId] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [c.seq_id for c in self.prefills] + list(self.decodes)
        if len(set(ids)) != len(ids):
            raise ValueError(f"a sequence appears twice in one step: {ids}")
        if not ids:
            raise ValueError("an engine step needs at least one prefill chunk or decode")


@dataclass(frozen=True)
class StepTiming:
    """Cost record of one engine step (the same record for the paged and the static engine)."""

    wall_ms: float  # host time from step start (before building inputs) to sampled ids on host
    gpu_ms: float | None  # CUDA events around forward + sampling; None on CPU
    prep_ms: float  # host time building the step's inputs and metadata
    num_seqs: int
    num_prefill_tokens: int  # prompt tokens computed this step (padding included, static engine)
    num_decode_tokens: int
    kv_tokens_read: int  # context tokens attended over, summed over sequences (padding included)
    num_padding_tokens: int = 0  # static engine: pad positions computed this step
    peak_activation_bytes: int | None = None  # set by Engine.step_with_peak_memory on CUDA


@dataclass(frozen=True)
class StepResult:
    """Sampled tokens of a step (decodes, prefill chunks that complete their sequence) + timing."""

    tokens: dict[SeqId, int]
    timing: StepTiming


@dataclass(frozen=True)
class EngineMemoryFacts:
    """Memory facts of a built engine, in bytes."""

    total_bytes: int  # device memory (CUDA) or host RAM (CPU)
    weight_bytes: int
    kv_bytes_per_token: int
    kv_pool_bytes: int
    num_blocks: int
    block_size: int  # tokens per block
    free_bytes_after_load: int  # free device memory after the weights loaded, before the KV pool
    free_bytes_now: int
