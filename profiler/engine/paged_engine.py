"""The paged engine: a transformers model driven step by step over a paged KV cache.

Each ``step`` runs one ``EnginePlan`` (prefill chunks + decodes) as one packed forward pass
(``input_ids [1, T]``, explicit ``position_ids``), samples greedily, and times itself the way vLLM
and sglang time steps: host ``perf_counter`` around the whole step, CUDA events around the forward
and sampling. Sequences never stop on EOS: what runs is what the caller plans.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from batchsim.profiler.engine.attention import (
    build_metadata,
    register_paged_attention,
    select_backend,
)
from batchsim.profiler.engine.kv_cache import OutOfBlocksError, PagedKVCache
from batchsim.profiler.engine.models import build_model
from batchsim.profiler.engine.records import EngineMemoryFacts, EnginePlan, StepResult, StepTiming
from batchsim.profiler.engine.timing import timed_sample
from batchsim.profiler.engine.varlen import varlen_native_gqa

logger = logging.getLogger(__name__)

_DEFAULT_CPU_KV_BYTES = 1 << 30  # CPU pool when no size is given: min(1 GiB, 25% of free RAM)


@dataclass
class _Sequence:
    token_ids: list[int]  # prompt + generated
    num_computed: int = 0  # leading tokens whose K/V are in the cache


@dataclass
class SequenceKV:
    """A sequence lifted out of an engine's pool: its tokens (prompt + generated) and the K/V of
    the first ``num_computed`` of them, ``k``/``v``: ``[num_layers, num_computed, Hkv, D]``.

    What the hybrid policy's CPU path hands to the device engine: the prompt's KV and its first
    generated token, so the next decode on the other engine continues exactly (``import_kv``).
    """

    token_ids: list[int]
    k: torch.Tensor
    v: torch.Tensor

    @property
    def num_computed(self) -> int:
        return int(self.k.shape[1])

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def to(self, device: torch.device, dtype: torch.dtype, non_blocking: bool = False
           ) -> SequenceKV:
        """A copy on device in dtype (always a copy: a CPU-to-CPU hand-off still moves bytes).
        The dtype is converted first, on the source side, so what crosses is the pool's bytes."""
        k, v = self.k.to(dtype), self.v.to(dtype)
        if device.type == "cuda" and self.k.device.type == "cpu":  # DMA needs pinned pages
            k, v = k.pin_memory(), v.pin_memory()
        return SequenceKV(list(self.token_ids), k.to(device, non_blocking=non_blocking, copy=True),
                          v.to(device, non_blocking=non_blocking, copy=True))


def free_memory_bytes(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of the device: ``cuda.mem_get_info`` on CUDA, psutil RAM on CPU."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


class Engine:
    """Paged-KV engine over a transformers model with per-step control and timing.

    Args:
        model: preset name, ``config.json`` path or local checkpoint directory
            (see ``batchsim.profiler.engine.models``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: ``"float32" | "float16" | "bfloat16"``; None uses the model's published dtype.
        num_blocks: KV pool size in blocks. Give this or ``kv_memory_bytes``, not both; with
            neither, CUDA uses ``gpu_memory_utilization`` of the device minus what is in use after
            loading, CPU uses min(1 GiB, 25% of free RAM).
        kv_memory_bytes: KV pool budget in bytes.
        block_size: tokens per KV block.
        seed: seed of the random weights.
        attention_backend: ``"auto" | "reference" | "varlen"`` (see
        ``batchsim.profiler.engine.attention``).
        gpu_memory_utilization: fraction of device memory for weights + KV (default sizing only).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        num_blocks: int | None = None,
        kv_memory_bytes: int | None = None,
        block_size: int = 16,
        seed: int = 0,
        attention_backend: str = "auto",
        gpu_memory_utilization: float = 0.9,
    ) -> None:
        if num_blocks is not None and kv_memory_bytes is not None:
            raise ValueError("give num_blocks or kv_memory_bytes, not both")
        self.device = torch.device(device)
        self.model, self.info = build_model(model, self.device, dtype, seed)
        self.dtype = next(self.model.parameters()).dtype
        self.backend = select_backend(attention_backend, self.device, self.dtype)
        self._native_gqa = self.backend == "varlen" and varlen_native_gqa(self.device)
        self.model.set_attn_implementation(register_paged_attention())
        self._free_after_load, self._total_bytes = free_memory_bytes(self.device)
        if num_blocks is None:
            budget = (
                kv_memory_bytes
                if kv_memory_bytes is not None
                else self._default_kv_budget(gpu_memory_utilization)
            )
            num_blocks = budget // (block_size * self.info.kv_bytes_per_token)
            if num_blocks < 1:
                raise ValueError(
                    f"KV budget of {budget} bytes holds no block of {block_size} tokens "
                    f"({self.info.kv_bytes_per_token} bytes/token): raise it"
                )
        self.kv_cache = PagedKVCache(
            num_layers=self.info.num_layers,
            num_blocks=num_blocks,
            block_size=block_size,
            num_kv_heads=self.info.num_kv_heads,
            head_dim=self.info.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        self._seqs: dict[Hashable, _Sequence] = {}
        logger.info(
            "engine %s on %s (%s, %s attention): %d KV blocks of %d tokens",
            self.info.name,
            self.device,
            self.dtype,
            self.backend,
            num_blocks,
            block_size,
        )

    def _default_kv_budget(self, gpu_memory_utilization: float) -> int:
        if self.device.type == "cuda":
            in_use = self._total_bytes - self._free_after_load
            return int(self._total_bytes * gpu_memory_utilization) - in_use
        return min(_DEFAULT_CPU_KV_BYTES, self._free_after_load // 4)

    # --- sequences -------------------------------------------------------------------------

    def add(self, seq_id: Hashable, prompt_token_ids: Sequence[int]) -> None:
        """Register a sequence; its prompt is computed by later prefill chunks."""
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id!r} is already in the engine: free it first")
        tokens = [int(t) for t in prompt_token_ids]
        if not tokens:
            raise ValueError(f"sequence {seq_id!r} has an empty prompt")
        if len(tokens) > self.info.max_model_len:
            raise ValueError(
                f"sequence {seq_id!r}: {len(tokens)} tokens exceed max_model_len "
                f"{self.info.max_model_len}"
            )
        if min(tokens) < 0 or max(tokens) >= self.info.vocab_size:
            raise ValueError(
                f"sequence {seq_id!r} has token ids outside [0, {self.info.vocab_size})"
            )
        self._seqs[seq_id] = _Sequence(tokens)

    def free(self, seq_id: Hashable) -> list[int]:
        """Drop a sequence and its KV blocks (finish, or recompute preemption); returns its tokens.

        To recompute a preempted sequence, ``add`` it again with the returned tokens and prefill.
        """
        seq = self._seq(seq_id)
        self.kv_cache.free(seq_id)
        del self._seqs[seq_id]
        return seq.token_ids

    def assume_cached(self, seq_id: Hashable, num_tokens: int) -> None:
        """Mark the first ``num_tokens`` tokens of ``seq_id`` as cached without computing them.

        Profiling only: their KV rows hold whatever the pool holds, which costs the same to attend
        over as real K/V, so a decode at context ``c`` can be timed without a ``c``-token prefill.
        Raises OutOfBlocksError (changing nothing) if the blocks are not free.
        """
        seq = self._seq(seq_id)
        if not seq.num_computed <= num_tokens <= len(seq.token_ids):
            raise ValueError(
                f"assume_cached({seq_id!r}, {num_tokens}): must lie between the cached "
                f"count {seq.num_computed} and the known tokens {len(seq.token_ids)}"
            )
        self.kv_cache.reserve(seq_id, num_tokens)
        seq.num_computed = num_tokens

    def export_kv(self, seq_id: Hashable) -> SequenceKV:
        """The sequence's tokens and the K/V of its cached tokens, copied out of the pool (the
        sequence stays; ``free`` it when done). See ``import_kv``."""
        seq = self._seq(seq_id)
        k, v = self.kv_cache.read(seq_id, seq.num_computed)
        return SequenceKV(list(seq.token_ids), k, v)

    def import_kv(self, seq_id: Hashable, kv: SequenceKV) -> None:
        """Register a sequence whose first ``kv.num_computed`` tokens are cached with ``kv``'s
        K/V (exported by another engine of the same model): after a prefill elsewhere, its
        first generated token is the last of ``kv.token_ids`` and the next step decodes it.

        Raises OutOfBlocksError (changing nothing) if the pool cannot hold its tokens.
        """
        if not 0 < kv.num_computed <= len(kv.token_ids):
            raise ValueError(f"import_kv({seq_id!r}): {kv.num_computed} cached tokens of "
                             f"{len(kv.token_ids)} known")
        self.add(seq_id, kv.token_ids)  # checks the id, length and token ids
        try:
            self.kv_cache.reserve(seq_id, kv.num_computed)
            self.kv_cache.write(seq_id, kv.k.to(self.device), kv.v.to(self.device))
        except BaseException:
            self.kv_cache.free(seq_id)
            del self._seqs[seq_id]
            raise
        self._seqs[seq_id].num_computed = kv.num_computed

    def tokens(self, seq_id: Hashable) -> list[int]:
        """Prompt + generated tokens of a sequence (a copy)."""
        return list(self._seq(seq_id).token_ids)

    def num_computed(self, seq_id: Hashable) -> int:
        """Leading tokens of a sequence whose K/V are cached."""
        return self._seq(seq_id).num_computed

    @property
    def seq_ids(self) -> list[Hashable]:
        return list(self._seqs)

    def holds(self, seq_id: Hashable) -> bool:
        """Whether the sequence was added and not freed since (no copy of the ids)."""
        return seq_id in self._seqs

    def _seq(self, seq_id: Hashable) -> _Sequence:
        if seq_id not in self._seqs:
            raise KeyError(f"unknown sequence {seq_id!r}; known: {sorted(map(str, self._seqs))}")
        return self._seqs[seq_id]

    # --- stepping --------------------------------------------------------------------------

    def _plan_entries(self, plan: EnginePlan) -> list[tuple[Hashable, int, int, bool]]:
        """(seq_id, start, num_tokens, samples) per sequence: decodes first, then prefill chunks."""
        entries = []
        for seq_id in plan.decodes:
            seq = self._seq(seq_id)
            if seq.num_computed != len(seq.token_ids) - 1:
                raise ValueError(
                    f"decode of {seq_id!r}: {seq.num_computed} of {len(seq.token_ids)} "
                    "tokens are cached; a decode needs all but the last"
                )
            if len(seq.token_ids) > self.info.max_model_len:
                raise ValueError(
                    f"decode of {seq_id!r}: {len(seq.token_ids)} tokens exceed "
                    f"max_model_len {self.info.max_model_len}; free the sequence"
                )
            entries.append((seq_id, seq.num_computed, 1, True))
        for chunk in plan.prefills:
            seq = self._seq(chunk.seq_id)
            end = chunk.start + chunk.num_tokens
            if chunk.start != seq.num_computed or end > len(seq.token_ids):
                raise ValueError(
                    f"prefill chunk {chunk}: sequence has {seq.num_computed} cached of "
                    f"{len(seq.token_ids)} tokens; start must equal the cached count "
                    "and the chunk must end within the known tokens"
                )
            entries.append((chunk.seq_id, chunk.start, chunk.num_tokens, end == len(seq.token_ids)))
        return entries

    def blocks_needed(self, plan: EnginePlan) -> int:
        """KV blocks the plan would allocate (compare with ``kv_cache.num_free_blocks``)."""
        return sum(
            self.kv_cache.blocks_needed(sid, start + n)
            for sid, start, n, _ in self._plan_entries(plan)
        )

    def step(self, plan: EnginePlan) -> StepResult:
        """Run one packed forward pass for ``plan`` and greedily sample where a sequence ends.

        Raises OutOfBlocksError (changing nothing) if the pool cannot hold the step's tokens.
        """
        t_start = time.perf_counter()
        entries = self._plan_entries(plan)
        need = sum(self.kv_cache.blocks_needed(sid, start + n) for sid, start, n, _ in entries)
        if need > self.kv_cache.num_free_blocks:
            raise OutOfBlocksError(
                f"step needs {need} KV blocks, {self.kv_cache.num_free_blocks} "
                f"of {self.kv_cache.num_blocks} are free: preempt a sequence"
            )
        input_ids: list[int] = []
        q_lens, k_lens, tables, sample_rows = [], [], [], []
        for seq_id, start, n, samples in entries:
            self.kv_cache.reserve(seq_id, start + n)
            input_ids.extend(self._seqs[seq_id].token_ids[start : start + n])
            q_lens.append(n)
            k_lens.append(start + n)
            tables.append(self.kv_cache.block_table(seq_id))
            if samples:
                sample_rows.append(len(input_ids) - 1)
        meta = build_metadata(self.kv_cache, q_lens, k_lens, tables, self.backend, self._native_gqa)
        ids = torch.tensor([input_ids], dtype=torch.int64, device=self.device)  # [1, T]
        # a step without samples still projects one row (negligible) to keep the model's path fixed
        keep = torch.tensor(
            sample_rows or [len(input_ids) - 1], dtype=torch.int64, device=self.device
        )
        t_prep = time.perf_counter()

        def forward_and_sample() -> torch.Tensor:
            out = self.model(
                input_ids=ids,
                position_ids=meta.positions.unsqueeze(0),
                logits_to_keep=keep,
                use_cache=False,
                paged_metadata=meta,
            )
            return out.logits[0].argmax(dim=-1)  # [num_samples]

        _, sampled, gpu_ms = timed_sample(self.device, forward_and_sample)
        t_end = time.perf_counter()

        tokens: dict[Hashable, int] = {}
        samplers = [sid for sid, _, _, samples in entries if samples]
        for seq_id, start, n, _ in entries:
            self._seqs[seq_id].num_computed = start + n
        for seq_id, token in zip(samplers, sampled, strict=True):
            self._seqs[seq_id].token_ids.append(token)
            tokens[seq_id] = token
        num_decode = len(plan.decodes)
        timing = StepTiming(
            wall_ms=(t_end - t_start) * 1e3,
            gpu_ms=gpu_ms,
            prep_ms=(t_prep - t_start) * 1e3,
            num_seqs=len(entries),
            num_prefill_tokens=len(input_ids) - num_decode,
            num_decode_tokens=num_decode,
            kv_tokens_read=sum(k_lens),
        )
        return StepResult(tokens=tokens, timing=timing)

    def step_with_peak_memory(self, plan: EnginePlan) -> StepResult:
        """``step`` that also records peak activation memory (bytes above the pre-step level).

        CUDA only; elsewhere ``peak_activation_bytes`` stays None.
        """
        if self.device.type != "cuda":
            return self.step(plan)
        torch.cuda.synchronize(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        result = self.step(plan)
        peak = torch.cuda.max_memory_allocated(self.device) - base
        return dataclasses.replace(
            result, timing=dataclasses.replace(result.timing, peak_activation_bytes=int(peak))
        )

    # --- facts -----------------------------------------------------------------------------

    def memory_facts(self) -> EngineMemoryFacts:
        """Weight, KV and free-memory facts of this engine."""
        free_now, _ = free_memory_bytes(self.device)
        return EngineMemoryFacts(
            total_bytes=self._total_bytes,
            weight_bytes=self.info.weight_bytes,
            kv_bytes_per_token=self.info.kv_bytes_per_token,
            kv_pool_bytes=self.kv_cache.pool_bytes,
            num_blocks=self.kv_cache.num_blocks,
            block_size=self.kv_cache.block_size,
            free_bytes_after_load=self._free_after_load,
            free_bytes_now=free_now,
        )
