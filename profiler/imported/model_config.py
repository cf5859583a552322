"""Model facts from a Hugging Face config.json: layers, attention geometry, experts, memory.

Memory per GPU under tensor parallelism N: weights / N (embeddings, projections and experts are
sharded; the few replicated norm weights are ignored), KV heads split N ways (replicated when
fewer than N), so KV bytes per token per GPU = 2 * layers * ceil(kv_heads / N) * head_dim * bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "bf16": 2, "fp16": 2, "fp32": 4,
                "fp8": 1, "int8": 1}


@dataclass(frozen=True)
class ModelConfig:
    """The parts of a model's config the step composition and memory facts need."""

    path: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_model_len: int
    num_experts: int  # 0 for a dense model
    experts_per_token: int
    moe_intermediate_size: int
    moe_layers: int  # layers whose MLP is the expert block
    raw: Mapping[str, Any]

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def num_params(self) -> int:
        """Parameters: embeddings (+ untied lm_head), attention, MLP or experts + router, norms."""
        h, hd = self.hidden_size, self.head_dim
        attn = h * hd * (self.num_heads * 2 + self.num_kv_heads * 2)  # q, k, v, o projections
        dense_mlp = 3 * h * self.intermediate_size
        moe_mlp = self.num_experts * 3 * h * self.moe_intermediate_size + h * self.num_experts
        layers = (self.num_layers * (attn + 2 * h) + (self.num_layers - self.moe_layers)
                  * dense_mlp + self.moe_layers * moe_mlp)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return layers + embed + h

    def weight_bytes_per_gpu(self, dtype_bytes: int, tp: int) -> int:
        return self.num_params() * dtype_bytes // tp

    def kv_bytes_per_token_per_gpu(self, dtype_bytes: int, tp: int) -> int:
        kv_heads = math.ceil(self.num_kv_heads / tp)
        return 2 * self.num_layers * kv_heads * self.head_dim * dtype_bytes

    def expected_active_experts(self, num_tokens: float) -> float:
        """Distinct experts that num_tokens tokens activate under top-k routing, each token's k
        experts uniformly spread: E * (1 - (1 - k/E)^n)."""
        e, k = self.num_experts, self.experts_per_token
        return e * (1.0 - (1.0 - k / e) ** num_tokens) if e else 0.0


def dtype_bytes(name: str) -> int:
    if name not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {name!r}; known: {sorted(_DTYPE_BYTES)}")
    return _DTYPE_BYTES[name]


@dataclass(frozen=True)
class VariantDtypes:
    """Bytes per element of an LLMServingSim variant folder name: '<weights>[-kv<kv dtype>]'
    ('bf16', 'fp8', 'bf16-kvfp8'). Activations (what an all-reduce moves) stay 16-bit unless the
    weights are float32."""

    weight_bytes: int
    kv_bytes: int
    activation_bytes: int

    @classmethod
    def parse(cls, variant: str) -> VariantDtypes:
        weights, *rest = variant.split("-")
        w = dtype_bytes(weights)
        kv = next((dtype_bytes(p[2:]) for p in rest if p.startswith("kv")), w)
        return cls(w, kv, 4 if w == 4 else 2)


def read_config(path: Path) -> ModelConfig:
    """Read and check a config.json."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read model config ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a model config (a JSON object)")
    text = raw.get("text_config")
    cfg: dict[str, Any] = text if isinstance(text, dict) else raw

    def need(key: str, *alts: str) -> int:
        for k in (key, *alts):
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        raise ValueError(f"{path}: missing or invalid {key!r} (a positive integer)")

    def opt(key: str, default: int, *alts: str) -> int:
        for k in (key, *alts):
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                return v
        return default

    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise ValueError(f"{path}: missing 'model_type'")
    layers = need("num_hidden_layers")
    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    kv_heads = opt("num_key_value_heads", heads)
    head_dim = opt("head_dim", hidden // heads) or hidden // heads
    experts = opt("num_experts", 0, "num_local_experts", "n_routed_experts")
    top_k = opt("num_experts_per_tok", 0, "moe_topk")
    if experts and not 0 < top_k <= experts:
        raise ValueError(f"{path}: num_experts_per_tok {top_k} must be in 1..{experts}")
    moe_layers = _moe_layers(cfg, layers) if experts else 0
    return ModelConfig(
        path=str(path), model_type=model_type, num_layers=layers, hidden_size=hidden,
        num_heads=heads, num_kv_heads=kv_heads or heads, head_dim=head_dim,
        intermediate_size=opt("intermediate_size", 0), vocab_size=need("vocab_size"),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_model_len=opt("max_position_embeddings", 0) or 4096,
        num_experts=experts, experts_per_token=top_k,
        moe_intermediate_size=opt("moe_intermediate_size", 0) or opt("intermediate_size", 0),
        moe_layers=moe_layers, raw=raw,
    )


def _moe_layers(cfg: Mapping[str, Any], layers: int) -> int:
    """Layers with an expert MLP: Qwen-MoE's decoder_sparse_step and mlp_only_layers, else all."""
    step = cfg.get("decoder_sparse_step", 1) or 1
    dense_only = set(cfg.get("mlp_only_layers") or [])
    first_dense = int(cfg.get("first_k_dense_replace", 0) or 0)
    return sum(1 for i in range(layers)
               if i not in dense_only and (i + 1) % int(step) == 0 and i >= first_dense)
