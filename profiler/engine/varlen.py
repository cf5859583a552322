"""The varlen kernel path of the paged engine: ``torch.nn.attention.varlen.varlen_attn`` (CUDA).

Everything that prepares the kernel's inputs (gathering each sequence's K/V contiguously through
the block tables, expanding KV heads where the kernel has no GQA, cumulative lengths, the window)
is plain torch and is tested on CPU against the reference attention (the CPU-tested twin rule);
only ``run_varlen`` and the GQA probe call the CUDA kernel.

torch 2.11 has no ``enable_gqa`` / ``block_table`` arguments; 2.13+ has both. The paged
``block_table`` form is not used yet: unverified on our GPU image (torch 2.11).
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from batchsim.profiler.engine.attention import PagedAttentionMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VarlenInputs:
    """The exact arguments of one ``varlen_attn`` call."""

    q: torch.Tensor  # [T, Hq, D]
    k: torch.Tensor  # [sum(k_lens), Hkv or Hq, D]
    v: torch.Tensor  # [sum(k_lens), Hkv or Hq, D]
    cu_seq_q: torch.Tensor  # [N + 1] int32
    cu_seq_k: torch.Tensor  # [N + 1] int32
    max_q: int
    max_k: int
    window_size: tuple[int, int]  # (left, right); (-1, 0) is plain causal
    enable_gqa: bool  # k/v keep Hkv < Hq heads: the kernel maps query heads to KV heads itself


@functools.cache
def varlen_features() -> dict[str, bool]:
    """What this torch's ``varlen_attn`` offers: available, ``enable_gqa``, ``block_table``."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return {"available": False, "enable_gqa": False, "block_table": False}
    params = inspect.signature(varlen_attn).parameters
    return {
        "available": True,
        "enable_gqa": "enable_gqa" in params,
        "block_table": "block_table" in params,
    }


def varlen_native_gqa(device: torch.device) -> bool:
    """Whether ``varlen_attn`` on ``device`` handles GQA (fewer KV heads) itself.

    True when its signature has ``enable_gqa``; otherwise (torch 2.11) probed once with a tiny
    call checked against SDPA, since the FlashAttention kernels underneath accept GQA natively.
    """
    if device.type != "cuda" or not varlen_features()["available"]:
        return False
    if varlen_features()["enable_gqa"]:
        return True
    return _probe_native_gqa(
        device.index if device.index is not None else torch.cuda.current_device()
    )


@functools.cache
def _probe_native_gqa(device_index: int) -> bool:
    from torch.nn.attention.varlen import varlen_attn

    device = torch.device("cuda", device_index)
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(8, 4, 64, device=device, dtype=torch.bfloat16, generator=gen)  # [T, Hq, D]
    k = torch.randn(8, 2, 64, device=device, dtype=torch.bfloat16, generator=gen)  # [T, Hkv, D]
    v = torch.randn(8, 2, 64, device=device, dtype=torch.bfloat16, generator=gen)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32, device=device)
    try:
        out = varlen_attn(q, k, v, cu, cu, 5, 5, window_size=(-1, 0))
    except (RuntimeError, ValueError, TypeError) as exc:
        logger.info("varlen_attn rejects GQA inputs (%s): repeating KV heads", exc)
        return False
    ref = torch.cat(
        [
            F.scaled_dot_product_attention(
                q[a:b].transpose(0, 1),
                k[a:b].transpose(0, 1),
                v[a:b].transpose(0, 1),
                is_causal=True,
                enable_gqa=True,
            ).transpose(0, 1)
            for a, b in ((0, 3), (3, 8))
        ]
    )
    assert isinstance(out, torch.Tensor)
    ok = torch.allclose(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    logger.info(
        "varlen_attn native GQA probe: %s", "ok" if ok else "wrong results, repeating KV heads"
    )
    return ok


def prepare_varlen_inputs(
    q: torch.Tensor,
    k_slots: torch.Tensor,
    v_slots: torch.Tensor,
    meta: PagedAttentionMetadata,
    sliding_window: int | None,
    native_gqa: bool,
) -> VarlenInputs:
    """Gather each sequence's K/V contiguously and, without native GQA, repeat KV heads.

    q: [T, Hq, D]; k_slots, v_slots: [num_slots, Hkv, D]. KV head ``h`` serves query heads
    ``h * g .. (h + 1) * g - 1`` (``g = Hq // Hkv``), as in transformers' ``repeat_kv``.
    """
    k = k_slots[meta.gather_slots]  # [K, Hkv, D]
    v = v_slots[meta.gather_slots]
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and not native_gqa:
        k = k.repeat_interleave(groups, dim=1)  # [K, Hq, D]
        v = v.repeat_interleave(groups, dim=1)
    window = (-1, 0) if sliding_window is None else (sliding_window - 1, 0)
    return VarlenInputs(
        q=q.contiguous(),
        k=k,
        v=v,
        cu_seq_q=meta.cu_seqlens_q,
        cu_seq_k=meta.cu_seqlens_k,
        max_q=meta.max_q,
        max_k=meta.max_k,
        window_size=window,
        enable_gqa=groups > 1 and native_gqa,
    )


def run_varlen(inputs: VarlenInputs, scaling: float | None) -> torch.Tensor:
    """The CUDA-only kernel call: ``varlen_attn`` on prepared inputs; returns [T, Hq, D]."""
    from torch.nn.attention.varlen import varlen_attn

    # torch >= 2.13 needs enable_gqa=True for GQA; on 2.11 (no such argument) native GQA is probed
    extra: dict[str, Any] = (
        {"enable_gqa": True} if inputs.enable_gqa and varlen_features()["enable_gqa"] else {}
    )
    out = varlen_attn(
        inputs.q,
        inputs.k,
        inputs.v,
        inputs.cu_seq_q,
        inputs.cu_seq_k,
        inputs.max_q,
        inputs.max_k,
        scale=scaling,
        window_size=inputs.window_size,
        **extra,
    )
    assert isinstance(out, torch.Tensor)  # no return_aux: a single tensor
    return out
