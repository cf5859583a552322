"""Paged attention plugged into unmodified transformers models through ``AttentionInterface``.

A step packs every scheduled sequence into one row (``input_ids [1, T]``). Sequence ``i``
contributes ``q_lens[i]`` new tokens and, after this step, holds ``k_lens[i]`` tokens of context;
its new tokens sit at absolute positions ``k_lens[i] - q_lens[i] .. k_lens[i] - 1`` and query ``j``
at position ``p`` attends to keys ``0..p`` (bottom-right causal alignment), or to
``p - window + 1 .. p`` with a sliding window.

The attention function writes the step's K/V into the pool at ``slot_mapping`` and then runs one of:

- ``reference``: per sequence, gather its K/V through ``gather_slots`` and call
  ``F.scaled_dot_product_attention`` (CPU and GPU);
- ``varlen``: gather every sequence's K/V contiguously, expand KV heads where the kernel has no
  GQA support, and call ``torch.nn.attention.varlen.varlen_attn`` (CUDA, fp16/bf16; see
  ``batchsim.profiler.engine.varlen``, whose input preparation is tested on CPU against the
  reference).

Per-step metadata (``PagedAttentionMetadata``) reaches the function as the ``paged_metadata``
keyword argument of ``model(...)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F

from batchsim.profiler.engine.kv_cache import PagedKVCache
from batchsim.profiler.engine.varlen import prepare_varlen_inputs, run_varlen, varlen_features

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "batchsim_paged"
AttentionBackend = Literal["reference", "varlen"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "varlen")


@dataclass
class PagedAttentionMetadata:
    """Everything the attention function needs for one packed step (built once, read per layer)."""

    kv_cache: PagedKVCache
    backend: AttentionBackend
    q_lens: list[int]  # new tokens per sequence
    k_lens: list[int]  # context per sequence after this step (cached + new)
    positions: torch.Tensor  # [T] int64, absolute position of each new token
    slot_mapping: torch.Tensor  # [T] int64, pool slot each new token's K/V is written to
    gather_slots: torch.Tensor  # [sum(k_lens)] int64, slots of each sequence's context, in order
    cu_seqlens_q: torch.Tensor  # [N + 1] int32
    cu_seqlens_k: torch.Tensor  # [N + 1] int32
    native_gqa: bool = False  # varlen: the kernel takes fewer KV heads than query heads
    _masks: dict[tuple[int, int | None], torch.Tensor | None] = field(
        default_factory=dict, repr=False
    )

    @property
    def max_q(self) -> int:
        return max(self.q_lens)

    @property
    def max_k(self) -> int:
        return max(self.k_lens)


def build_metadata(
    kv_cache: PagedKVCache,
    q_lens: list[int],
    k_lens: list[int],
    block_tables: list[list[int]],
    backend: AttentionBackend = "reference",
    native_gqa: bool = False,
) -> PagedAttentionMetadata:
    """Build a step's positions, slot mapping, gather slots and cumulative lengths.

    Tensors live on the pool's device. Vectorised (no per-token Python loop, no host sync): the
    per-step cost stays flat as batches grow.
    """
    if not (len(q_lens) == len(k_lens) == len(block_tables)) or not q_lens:
        raise ValueError(
            f"need one q_len, k_len and block table per sequence, got "
            f"{len(q_lens)}, {len(k_lens)}, {len(block_tables)}"
        )
    bs = kv_cache.block_size
    for ql, kl, bt in zip(q_lens, k_lens, block_tables, strict=True):
        assert 0 < ql <= kl <= len(bt) * bs, (ql, kl, len(bt), bs)
    device = kv_cache.k_pool.device
    n, t, k = len(q_lens), sum(q_lens), sum(k_lens)
    max_blocks = max(len(bt) for bt in block_tables)
    # tables: [N, max_blocks], rows padded with 0 (never read: positions stay below k_len)
    tables = torch.tensor(
        [bt + [0] * (max_blocks - len(bt)) for bt in block_tables], dtype=torch.int64, device=device
    )
    q_lens_t = torch.tensor(q_lens, dtype=torch.int64, device=device)
    k_lens_t = torch.tensor(k_lens, dtype=torch.int64, device=device)
    cu_q = F.pad(q_lens_t.cumsum(0), (1, 0))  # [N + 1]
    cu_k = F.pad(k_lens_t.cumsum(0), (1, 0))
    seq_idx = torch.arange(n, device=device)

    # new tokens: position = (k_len - q_len) + index within the sequence's chunk
    q_seq = seq_idx.repeat_interleave(q_lens_t, output_size=t)  # [T]
    q_offset = torch.arange(t, device=device) - cu_q[:-1][q_seq]
    positions = (k_lens_t - q_lens_t)[q_seq] + q_offset
    slot_mapping = tables[q_seq, positions // bs] * bs + positions % bs

    # context tokens 0..k_len-1 of every sequence, sequence after sequence
    k_seq = seq_idx.repeat_interleave(k_lens_t, output_size=k)  # [K]
    k_pos = torch.arange(k, device=device) - cu_k[:-1][k_seq]
    gather_slots = tables[k_seq, k_pos // bs] * bs + k_pos % bs
    return PagedAttentionMetadata(
        kv_cache=kv_cache,
        backend=backend,
        q_lens=list(q_lens),
        k_lens=list(k_lens),
        positions=positions,
        slot_mapping=slot_mapping,
        gather_slots=gather_slots,
        cu_seqlens_q=cu_q.to(torch.int32),
        cu_seqlens_k=cu_k.to(torch.int32),
        native_gqa=native_gqa,
    )


def causal_mask(
    q_len: int, k_len: int, sliding_window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Bool mask ``[q_len, k_len]`` (True = attend), bottom-right aligned; None: no masking."""
    windowed = sliding_window is not None and k_len > sliding_window
    if q_len == 1 and not windowed:
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    mask = k_pos <= q_pos
    if sliding_window is not None and windowed:
        mask &= k_pos > q_pos - sliding_window
    return mask


def reference_attention(
    q: torch.Tensor,
    k_slots: torch.Tensor,
    v_slots: torch.Tensor,
    meta: PagedAttentionMetadata,
    scaling: float | None,
    sliding_window: int | None,
) -> torch.Tensor:
    """Packed queries against each sequence's paged context, one SDPA per sequence.

    q: [T, Hq, D]; k_slots, v_slots: [num_slots, Hkv, D]; returns [T, Hq, D].
    """
    out = torch.empty_like(q)
    gqa = q.shape[1] != k_slots.shape[1]
    qs = ks = 0
    for i, (ql, kl) in enumerate(zip(meta.q_lens, meta.k_lens, strict=True)):
        slots = meta.gather_slots[ks : ks + kl]
        k = k_slots[slots].transpose(0, 1)  # [Hkv, kl, D]
        v = v_slots[slots].transpose(0, 1)
        qi = q[qs : qs + ql].transpose(0, 1)  # [Hq, ql, D]
        key = (i, sliding_window)
        if key not in meta._masks:
            meta._masks[key] = causal_mask(ql, kl, sliding_window, q.device)
        o = F.scaled_dot_product_attention(
            qi, k, v, attn_mask=meta._masks[key], scale=scaling, enable_gqa=gqa
        )
        out[qs : qs + ql] = o.transpose(0, 1)
        qs += ql
        ks += kl
    return out


def paged_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    paged_metadata: PagedAttentionMetadata | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: store this step's K/V in the pool, attend over the context.

    query: [1, Hq, T, D], key/value: [1, Hkv, T, D] (after RoPE); returns ([1, T, Hq, D], None).
    """
    if paged_metadata is None:
        raise ValueError(
            f"attention {ATTN_IMPLEMENTATION!r} needs paged_metadata: "
            "run the model through profiler.engine.Engine"
        )
    meta = paged_metadata
    k_slots, v_slots = meta.kv_cache.layer_slots(cast(int, module.layer_idx))
    # key[0]: [Hkv, T, D] -> [T, Hkv, D], one row per slot
    k_slots.index_copy_(0, meta.slot_mapping, key[0].transpose(0, 1).to(k_slots.dtype))
    v_slots.index_copy_(0, meta.slot_mapping, value[0].transpose(0, 1).to(v_slots.dtype))
    q = query[0].transpose(0, 1)  # [T, Hq, D]
    if meta.backend == "varlen":
        inputs = prepare_varlen_inputs(q, k_slots, v_slots, meta, sliding_window, meta.native_gqa)
        out = run_varlen(inputs, scaling)
    else:
        out = reference_attention(q, k_slots, v_slots, meta, scaling, sliding_window)
    return out.unsqueeze(0), None


def register_paged_attention() -> str:
    """Register the paged attention function with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention_forward)
    return ATTN_IMPLEMENTATION


def select_backend(requested: str, device: torch.device, dtype: torch.dtype) -> AttentionBackend:
    """Resolve ``auto``: varlen on CUDA with fp16/bf16 when torch has it, else the reference."""
    if requested not in BACKENDS:
        raise ValueError(
            f"unknown attention backend {requested!r}: choose one of {', '.join(BACKENDS)}"
        )
    varlen_ok = (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and varlen_features()["available"]
    )
    if requested == "varlen" and not varlen_ok:
        raise ValueError(
            "attention backend 'varlen' needs CUDA, fp16/bf16 and a torch with "
            "torch.nn.attention.varlen; use 'reference' or 'auto'"
        )
    if requested == "auto":
        return "varlen" if varlen_ok else "reference"
    return cast(AttentionBackend, requested)  # checked against BACKENDS above
