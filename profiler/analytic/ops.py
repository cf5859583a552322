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
reads its context's K and V (2*kv_heads*head_dim elements per token). MoE: T tokens routed top-k
over E experts touch E*(1-(1-k/E)^T) distinct experts on average (each expert is missed by a
token with probability 1-k/E, independently), whose weights are read once; FLOPs are those of
T*k token-expert products. All-reduce (ring): 2(tp-1)/tp * bytes / link + 2(tp-1) hops.

Times come from the kernel-class models in calibration.py. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from batchsim.policies.base import StepShape
from batchsim.profiler.analytic.arch import ModelArch

KernelClass = Literal["gemm", "moe", "attention", "norm", "activation", "rope", "embedding",
                      "sampler", "allreduce"]
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
    kv_bytes: float = 0.0  # attention: K and V the decodes read (the bandwidth-bound part)


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


def gemm(name: str, tokens: int, k: int, n: int, dtype_bytes: int, count: int = 1) -> Op:
    return Op(name, "gemm", 2.0 * tokens * k * n, float(k * n + tokens * (k + n)) * dtype_bytes,
              count, tokens=tokens)


def step_ops(arch: ModelArch, shape: StepShape, tp: int = 1, dtype_bytes: int = 2) -> list[Op]:
    """Every operation of one step of this shape on one of tp GPUs."""
    t = shape.num_prefill_tokens + shape.num_decode_seqs
    s = shape.num_seqs
    h, L, b = arch.hidden_size, arch.num_layers, dtype_bytes
    q, kv = arch.q_size // tp, max(arch.head_dim, arch.kv_size // tp)
    heads = max(1, arch.num_heads // tp)
    ops = [Op("embedding", "embedding", 0.0, 2.0 * t * h * b, tokens=t)]
    # vLLM fuses the residual add into the norm: read x and residual, write both
    ops.append(Op("layernorm", "norm", 0.0, 4.0 * t * h * b, 2 * L, tokens=t))
    ops.append(gemm("qkv_proj", t, h, q + 2 * kv, b, L))
    if arch.model_type == "qwen3" or arch.model_type == "qwen3_moe":
        ops.append(Op("qk_norm", "norm", 0.0, 2.0 * t * (q + kv) * b, L, tokens=t))
    if not arch.learned_positions:
        ops.append(Op("rotary_emb", "rope", 0.0, 2.0 * t * (q + kv) * b, L, tokens=t))
    attn_flops = 4.0 * heads * arch.head_dim * (shape.prefill_attn_pairs + shape.decode_ctx_tokens)
    # Decodes read their context's K and V once per KV head; a chunk's keys are walked once per
    # query head (measured: prefill attention time follows query heads, decode time KV heads).
    prefill_bytes = (2.0 * q * prefill_kv_tokens(shape) + 2.0 * t * q) * b
    decode_bytes = 2.0 * kv * shape.decode_ctx_tokens * b
    ops.append(Op("attention", "attention", attn_flops, prefill_bytes, L, tokens=t, seqs=s,
                  kv_bytes=decode_bytes))
    ops.append(gemm("o_proj", t, q, h, b, L))
    inter = arch.intermediate_size
    if arch.is_moe:
        e, k = arch.num_experts, arch.experts_per_token
        active = expected_experts(e, k, t)
        mats = 3 if arch.gated_mlp else 2
        ops.append(gemm("router", t, h, e, b, L))
        ops.append(Op("moe", "moe", 2.0 * t * k * mats * h * inter / tp,
                      (active * mats * h * inter / tp + 2.0 * t * k * h) * b, L, tokens=t))
        if arch.shared_expert_size:
            ops += _dense_mlp(t, h, arch.shared_expert_size // tp, arch.gated_mlp, b, L, "shared_")
    else:
        ops += _dense_mlp(t, h, inter // tp, arch.gated_mlp, b, L)
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
