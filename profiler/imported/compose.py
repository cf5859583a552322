"""Compose a whole vLLM step's time from LLMServingSim's per-layer tables (docs/IMPORT.md).

    step(shape) = once(T) + L * layer(T) + L_mlp * mlp(T) + L * attention(...)
                  + L_moe * moe(T, E(T)) + lm_head(S) + sampler(S) + 2 * L * allreduce(T)

T = tokens in the step, S = sequences, L = layers (L_moe of them with an expert MLP, L_mlp the
others); once = embedding + final_layernorm; layer = the other dense ops (layernorm twice);
mlp = gate_up_proj + act_fn + down_proj; attention by (prefill chunk, prefill KV, decodes, decode
KV) with the skew correction; E(T) = expected distinct experts; allreduce = ring all-reduce of
T * hidden * dtype bytes over N GPUs (0 at N = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsim.policies.base import StepShape
from batchsim.profiler.imported.skew import SkewFit
from batchsim.profiler.imported.tables import (
    NestedTable,
    Table,
    by_layer,
    interp1,
    nested,
    read_table,
    tp_folder,
)
from batchsim.profiler.model_arch import ModelArch

ONCE_OPS = ("embedding", "final_layernorm")  # the prologue and the head's norm: once per step
MLP_OPS = ("gate_up_proj", "act_fn", "down_proj")  # the dense MLP: layers without experts
TWICE_OPS = ("layernorm",)  # before attention and before the MLP


@dataclass(frozen=True)
class Link:
    """The GPU-to-GPU link of the ring all-reduce (an assumption unless measured)."""

    bytes_per_s: float
    latency_s_per_hop: float

    def __post_init__(self) -> None:
        if not self.bytes_per_s > 0 or self.latency_s_per_hop < 0:
            raise ValueError("link bandwidth must be positive and its latency non-negative")

    def allreduce_s(self, num_bytes: float, tp: int) -> float:
        """Ring all-reduce: 2(N-1) steps, each moving bytes/N and paying one hop's latency."""
        if tp <= 1:
            return 0.0
        return 2 * (tp - 1) / tp * num_bytes / self.bytes_per_s + 2 * (tp - 1) * \
            self.latency_s_per_hop


class StepComposer:
    """Step times of one model at one tensor-parallel degree, from one perf folder."""

    def __init__(self, folder: Path, meta: Mapping[str, Any], config: ModelArch, tp: int,
                 link: Link, dtype_bytes: int, decode_spread: float = 1.0,
                 skew_buckets: bool = False) -> None:
        if not 0.0 <= decode_spread <= 1.0:
            raise ValueError(f"--decode-spread must be in [0, 1], got {decode_spread}")
        self.config, self.tp, self.link, self.dtype_bytes = config, tp, link, dtype_bytes
        self.decode_spread = decode_spread
        self.skew_buckets = skew_buckets
        sub = tp_folder(folder, meta, tp)
        self.tables: list[Table] = []
        dense = self._read(sub / "dense.csv")
        per_seq = self._read(sub / "per_sequence.csv")
        attention = self._read(sub / "attention.csv")
        self.dense = by_layer(dense, "tokens")
        self.per_sequence = by_layer(per_seq, "sequences")
        if not self.per_sequence:
            raise ValueError(f"{per_seq.path}: no lm_head / sampler rows")
        self.moe_source: str | None = None
        self.moe: NestedTable | None = None
        self.moe_scaled = False  # tp1's table divided by tp (no tpN table was measured)
        if config.is_moe:
            path = sub / "moe.csv"
            if not path.exists() and (folder / "tp1" / "moe.csv").exists():
                # LLMServingSim's profiler measures the expert block once, at tp1; under TP
                # vLLM shards every expert's intermediate dimension, so each GPU does 1/tp
                path = folder / "tp1" / "moe.csv"
                self.moe_scaled = tp > 1
            self.moe = nested(self._read(path), ("activated_experts", "tokens"))
            self.moe_source = str(path)
        # attention: prefill-only steps (no decodes) and steps with decodes, nested outer-first
        rows = attention.rows
        pre = Table(attention.path, [r for r in rows if r["n_decode"] == 0], attention.sha256)
        dec = Table(attention.path, [r for r in rows if r["n_decode"] > 0], attention.sha256)
        if not pre.rows or not dec.rows:
            raise ValueError(f"{attention.path}: needs rows with and without decodes")
        self.attn_prefill = nested(pre, ("prefill_chunk", "kv_prefill"))
        self.attn_decode = nested(dec, ("prefill_chunk", "n_decode", "kv_prefill", "kv_decode"))
        self.skew = SkewFit.load(folder, meta, tp, self._read)
        mlp_layers = config.num_layers - config.moe_layers
        self.counts = {op: (1 if op in ONCE_OPS else 2 * config.num_layers if op in TWICE_OPS
                            else mlp_layers if op in MLP_OPS else config.num_layers)
                       for op in self.dense}

    def _read(self, path: Path) -> Table:
        table = read_table(path)
        self.tables.append(table)
        return table

    # -- the parts ------------------------------------------------------------------------------

    def attention(self, prefill_chunk: float, kv_prefill: float, n_decode: float,
                  kv_mean: float, kv_min: float, kv_max: float) -> float:
        """One layer's attention, seconds, with the skew correction for mixed decode lengths:
        t = t(mean) + alpha * (t(max) - t(mean)) when decodes differ in length; alpha is the
        pooled fit (meta.yaml's alpha_default), or with skew_buckets the bucket table's, which
        jumps between neighbouring buckets (docs/IMPORT.md)."""
        if n_decode <= 0:
            return self.attn_prefill((prefill_chunk, kv_prefill)) if prefill_chunk > 0 else 0.0
        t_mean = self.attn_decode((prefill_chunk, n_decode, kv_prefill, kv_mean))
        if n_decode <= 1 or kv_max <= kv_mean:
            return t_mean
        skew_rate = (kv_mean - kv_min) / (kv_max - kv_min) if kv_max > kv_min else 0.5
        alpha = (self.skew.alpha(prefill_chunk, n_decode, skew_rate, kv_max, kv_prefill)
                 if self.skew_buckets else self.skew.alpha_default)
        t_max = self.attn_decode((prefill_chunk, n_decode, kv_prefill, kv_max))
        return t_mean + alpha * (t_max - t_mean) if t_max > t_mean else t_mean

    def breakdown(self, shape: StepShape) -> dict[str, float]:
        """Seconds per component of one step of this shape (summing to compose(shape))."""
        tokens = shape.num_prefill_tokens + shape.num_decode_seqs
        seqs = shape.num_seqs
        cfg = self.config
        once = layers = 0.0
        for op, (keys, values) in self.dense.items():
            t = interp1(keys, values, max(tokens, 1)) * self.counts[op]
            once, layers = (once + t, layers) if op in ONCE_OPS else (once, layers + t)
        per_seq = sum(interp1(k, v, max(seqs, 1)) for k, v in self.per_sequence.values())
        n = shape.num_prefill_tokens
        prefix = max(0.0, shape.prefill_attn_pairs / n - (n + 1) / 2) if n else 0.0
        nd = shape.num_decode_seqs
        mean = shape.decode_ctx_tokens / nd if nd else 0.0
        spread = self.decode_spread * mean
        attn = self.attention(n, prefix, nd, mean, mean - spread, mean + spread)
        moe = 0.0
        if self.moe is not None:
            experts = cfg.expected_active_experts(tokens)
            moe = self.moe((experts, max(tokens, 1))) * cfg.moe_layers
            if self.moe_scaled:
                moe /= self.tp
        ar = self.link.allreduce_s(tokens * cfg.hidden_size * self.dtype_bytes, self.tp)
        return {"once": once, "layers": layers, "per_sequence": per_seq,
                "attention": attn * cfg.num_layers, "moe": moe,
                "allreduce": 2 * cfg.num_layers * ar}

    def compose(self, shape: StepShape) -> float:
        """Seconds of one step of this shape."""
        return sum(self.breakdown(shape).values())
