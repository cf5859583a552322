"""The operations of one step, with their FLOPs and bytes on one GPU, and their time.

A step of shape S (sim StepShape: T tokens = prefill tokens + decodes, num_seqs sequences,
causal attention pairs of the prefill chunks, context tokens the decodes read) runs, on each of
the `tp` GPUs:

    embedding(T) + L x [norm, QKV GEMM, (q/k norm), rope, attention, O GEMM, all-reduce, norm,
                        MLP: gate+up GEMM, activation, down GEMM | MoE experts, all-reduce]
    + final norm(T) + LM head GEMM(num_seqs) + sampler(num_seqs)

A GEMM of T tokens by a (K, N) weight does 2*T*K*N FLOPs and moves (K*N + T*K + T*N) elements;
under tensor parallelism N (column-parallel: QKV, gate+up, LM head) or K (row-parallel: O, down)
is split over tp. Attention: 4*heads*head_dim FLOPs per query-key pair (QK^T and PV); a decode
reads its context's K and V (2*kv_heads*head_dim elements per token); attention_op says how
vLLM's two attention kernels walk them. MoE: T tokens routed top-k
over E experts touch E*(1-(1-k/E)^T) distinct experts on average (each expert is missed by a
token with probability 1-k/E, independently), whose weights are read once; FLOPs are those of
T*k token-expert products. All-reduce (ring): 2(tp-1)/tp * bytes / link + 2(tp-1) hops.

Times come from the kernel-class models in calibration.py. No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from batchsim.policies.base import StepShape
from batchsim.profiler.model_arch import ModelArch

KernelClass = Literal["gemm", "moe", "attention", "decode_attention", "norm", "activation",
                      "rope", "embedding", "sampler", "allreduce"]
# Memory-bound kernels: time = fixed + bytes / achieved bandwidth.
MEMORY_BOUND: tuple[KernelClass, ...] = ("norm", "activation", "rope", "embedding", "sampler")


@dataclass(frozen=True)
class Op:
    name: str
    kind: KernelClass
    flops: float
    bytes: float
    count: int = 1  # how many times per step (the layer count for per-layer ops)
    tokens: int = 0  # rows of a GEMM (for size-dependent efficiency)
    seqs: int = 0  # sequences in an attention kernel
    kv_bytes: float = 0.0  # attention: K and V the decodes read, once per KV head
    padded_flops: float = 0.0  # attention: FLOPs of the query tiles as the kernel runs them
    walk_flops: float = 0.0  # attention: padded FLOPs of the longest single tile


def expected_experts(num_experts: int, top_k: int, tokens: int) -> float:
    """Distinct experts that `tokens` tokens activate on average under uniform top-k routing."""
    if tokens <= 0 or num_experts <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def prefill_kv_tokens(shape: StepShape) -> float:
    """Cached + own tokens the prefill chunks of a step attend to, summed over chunks. A chunk of
    c tokens after p cached ones has c*p + c(c+1)/2 causal pairs, so p + c = pairs/c + (c-1)/2;
    for several chunks the mean chunk stands in for each (the shape keeps only sums)."""
    chunks = shape.num_seqs - shape.num_decode_seqs
    if chunks <= 0 or shape.num_prefill_tokens <= 0:
        return 0.0
    c = shape.num_prefill_tokens / chunks
    return shape.prefill_attn_pairs / c + chunks * (c - 1) / 2


# Query rows one thread block of the varlen attention kernel (FlashAttention) handles: a chunk of
# c tokens is ceil(c / 64) tiles per query head and a decode is one (mostly empty) tile. 64 makes
# the two regimes of the measured PRO 6000 tables agree on one efficiency: a few tiles each
# walking a long context (one SM each) and thousands of tiles sharing all SMs.
ATTN_Q_TILE = 64


def attention_op(arch: ModelArch, shape: StepShape, heads: int, kv_heads: int, b: int,
                 count: int) -> Op:
    """One layer's attention on one GPU. A step of decodes only runs vLLM's decode kernel
    ("decode_attention": split over the context, the query heads of a KV group share its K/V
    reads, so it streams each decode's context once per KV head). A step with a prefill chunk
    runs the varlen kernel for everything ("attention"): query tiles of ATTN_Q_TILE rows per
    query head, each walking its keys; a decode is a tile of one real row that still walks its
    whole context, and reads its K/V once per query head (measured: mixed steps of Llama-3.1-8B
    with 8 KV heads and Qwen3-30B-A3B with 4 cost the same)."""
    d, q_tile = arch.head_dim, ATTN_Q_TILE
    per_pair = 4.0 * heads * d  # QK^T and PV, 2 FLOPs per multiply-add each
    ctx = float(shape.decode_ctx_tokens)
    flops = per_pair * (shape.prefill_attn_pairs + ctx)
    kv_per_token = 2.0 * kv_heads * d * b  # K and V of one token, one layer
    kv_bytes = kv_per_token * ctx
    nd = shape.num_decode_seqs
    chunks = shape.num_seqs - nd
    if shape.num_prefill_tokens <= 0 or chunks <= 0:
        return Op("attention", "decode_attention", flops, kv_bytes, count, tokens=nd, seqs=nd,
                  kv_bytes=kv_bytes)
    c = shape.num_prefill_tokens / chunks  # the mean chunk stands in for each
    keys = prefill_kv_tokens(shape) / chunks  # keys the mean chunk's last row sees
    prefix = max(0.0, keys - c)
    tiles = math.ceil(c / q_tile)
    # tile i walks the prefix and the chunk's first min(c, 64(i+1)) keys
    walked = tiles * prefix + q_tile * (tiles - 1) * tiles / 2 + c
    tile_flops = 4.0 * d * q_tile  # per key walked by one tile of one head
    padded = heads * tile_flops * (chunks * walked + ctx)
    longest = max(keys, ctx / nd if nd else 0.0)
    byts = (chunks * keys * kv_per_token  # the chunks' K/V, shared in cache by their tiles
            + 2.0 * shape.num_prefill_tokens * heads * d * b  # queries in, outputs out
            + kv_per_token * heads / kv_heads * ctx)  # decodes' K/V once per query head
    return Op("attention", "attention", flops, byts, count, tokens=shape.num_prefill_tokens + nd,
              seqs=shape.num_seqs, kv_bytes=kv_bytes, padded_flops=padded,
              walk_flops=tile_flops * longest)


def gemm(name: str, tokens: int, k: int, n: int, dtype_bytes: int, count: int = 1) -> Op:
    return Op(name, "gemm", 2.0 * tokens * k * n, float(k * n + tokens * (k + n)) * dtype_bytes,
              count, tokens=tokens)


def step_ops(arch: ModelArch, shape: StepShape, tp: int = 1, dtype_bytes: int = 2) -> list[Op]:
    """Every operation of one step of this shape on one of tp GPUs."""
    t = shape.num_prefill_tokens + shape.num_decode_seqs
    s = shape.num_seqs
    h, L, b = arch.hidden_size, arch.num_layers, dtype_bytes
    q, kv = arch.q_size // tp, arch.kv_heads_per_gpu(tp) * arch.head_dim
    heads = max(1, arch.num_heads // tp)
    ops = [Op("embedding", "embedding", 0.0, 2.0 * t * h * b, tokens=t)]
    # vLLM fuses the residual add into the norm: read x and residual, write both
    ops.append(Op("layernorm", "norm", 0.0, 4.0 * t * h * b, 2 * L, tokens=t))
    ops.append(gemm("qkv_proj", t, h, q + 2 * kv, b, L))
    if arch.model_type == "qwen3" or arch.model_type == "qwen3_moe":
        ops.append(Op("qk_norm", "norm", 0.0, 2.0 * t * (q + kv) * b, L, tokens=t))
    if not arch.learned_positions:
        ops.append(Op("rotary_emb", "rope", 0.0, 2.0 * t * (q + kv) * b, L, tokens=t))
    ops.append(attention_op(arch, shape, heads, kv // arch.head_dim, b, L))
    ops.append(gemm("o_proj", t, q, h, b, L))
    moe_layers = arch.moe_layers if arch.is_moe else 0
    if moe_layers:
        e, k = arch.num_experts, arch.experts_per_token
        active = expected_experts(e, k, t)
        mats = 3 if arch.gated_mlp else 2
        inter = arch.moe_intermediate_size
        ops.append(gemm("router", t, h, e, b, moe_layers))
        ops.append(Op("moe", "moe", 2.0 * t * k * mats * h * inter / tp,
                      (active * mats * h * inter / tp + 2.0 * t * k * h) * b, moe_layers,
                      tokens=t))
        if arch.shared_expert_size:
            ops += _dense_mlp(t, h, arch.shared_expert_size // tp, arch.gated_mlp, b, moe_layers,
                              "shared_")
    if moe_layers < L:  # dense layers (all of them in a dense model)
        ops += _dense_mlp(t, h, arch.intermediate_size // tp, arch.gated_mlp, b, L - moe_layers)
    if tp > 1:
        ring = 2.0 * (tp - 1) / tp * t * h * b
        ops.append(Op("allreduce", "allreduce", 0.0, ring, 2 * L, tokens=tp))
    ops.append(Op("final_layernorm", "norm", 0.0, 2.0 * t * h * b, tokens=t))
    if s:
        ops.append(gemm("lm_head", s, h, arch.vocab_size // tp, b))
        ops.append(Op("sampler", "sampler", 0.0, 4.0 * s * arch.vocab_size, tokens=s))
    return ops


def _dense_mlp(t: int, h: int, inter: int, gated: bool, b: int, count: int,
               prefix: str = "") -> list[Op]:
    up = 2 * inter if gated else inter
    return [gemm(f"{prefix}gate_up_proj", t, h, up, b, count),
            Op(f"{prefix}act_fn", "activation", 0.0, float(t * (up + inter)) * b, count,
               tokens=t),
            gemm(f"{prefix}down_proj", t, inter, h, b, count)]
