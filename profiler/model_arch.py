"""A model's architecture read from a Hugging Face config.json: one torch-free reader for the
profile importer (profiler/imported/) and the analytic builder (profiler/analytic/).

Read: layers, attention geometry (query and KV heads, head size), MLP width, vocabulary, context
length, and for MoE models the routed experts (count, top-k, expert width, the layers that have
them, an optional shared expert). Llama-style configs (a `text_config` block is read in place of
the top level) and GPT-2's own key names (n_embd, n_head, ...) are understood.

Memory per GPU under tensor parallelism N: weights / N (embeddings, projections and experts are
sharded; the few replicated norm weights are ignored), KV heads split N ways (replicated when
fewer than N), so KV bytes per token per GPU = 2 * layers * ceil(kv_heads / N) * head_dim * bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelArch:
    """The parts of a model's config the step costs and memory facts need."""

    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (0 when every layer is an expert layer)
    vocab_size: int
    max_model_len: int
    tie_word_embeddings: bool
    gated_mlp: bool = True  # gate + up projections (SiLU-and-mul); GPT-2: one up projection
    qkv_bias: bool = False
    num_experts: int = 0  # routed experts per MoE layer (0 = dense)
    experts_per_token: int = 0
    moe_intermediate_size: int = 0  # one expert's MLP width
    moe_layers: int = 0  # layers whose MLP is the expert block
    shared_expert_size: int = 0  # intermediate size of an always-on shared expert (0 = none)
    learned_positions: bool = False
    path: str = ""  # the config file read ("" for a preset)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_params(self, moe: bool) -> int:
        """Weights of one decoder layer (norm weights included), with the expert MLP or not."""
        h = self.hidden_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        attn += (self.q_size + 2 * self.kv_size) if self.qkv_bias else 0
        mats = 3 if self.gated_mlp else 2
        if moe:
            mlp = self.num_experts * mats * h * self.moe_intermediate_size + h * self.num_experts
            mlp += mats * h * self.shared_expert_size
        else:
            mlp = mats * h * self.intermediate_size
        return attn + mlp + 2 * h

    def num_params(self) -> int:
        """Parameters: embeddings (+ untied lm_head, + learned positions), every layer's
        attention and MLP or experts + router, norms."""
        h = self.hidden_size
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        pos = self.max_model_len * h if self.learned_positions else 0
        layers = (self.moe_layers * self.layer_params(True)
                  + (self.num_layers - self.moe_layers) * self.layer_params(False))
        return layers + embed + pos + h

    def weight_bytes_per_gpu(self, dtype_bytes: int, tp: int) -> int:
        return self.num_params() * dtype_bytes // tp

    def kv_heads_per_gpu(self, tp: int) -> int:
        return math.ceil(self.num_kv_heads / tp)

    def kv_bytes_per_token(self, dtype_bytes: int, tp: int = 1) -> int:
        """KV bytes per token on one GPU: K and V of every layer, KV heads split over tp
        (replicated when there are fewer KV heads than GPUs)."""
        return 2 * self.num_layers * self.kv_heads_per_gpu(tp) * self.head_dim * dtype_bytes

    def expected_active_experts(self, num_tokens: float) -> float:
        """Distinct experts that num_tokens tokens activate under top-k routing, each token's k
        experts uniformly spread: E * (1 - (1 - k/E)^n)."""
        e, k = self.num_experts, self.experts_per_token
        return e * (1.0 - (1.0 - k / e) ** num_tokens) if e and num_tokens > 0 else 0.0


def read_config(path: Path) -> ModelArch:
    """Read and check a config.json file; named after its folder when it is `config.json`,
    else after the file."""
    return arch_from_config(load_config(path), config_name(path), str(path), path=str(path))


def load_config(path: Path) -> Any:
    """The JSON of a config file; ValueError naming the file when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read model config ({getattr(e, 'strerror', e)})") \
            from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def config_name(path: Path) -> str:
    return path.parent.name if path.name == "config.json" else path.stem


def arch_from_config(raw: Any, name: str, where: str | None = None, path: str = "") -> ModelArch:
    """A ModelArch from a config dict; ValueError naming `where` (the file, else the model) and
    the missing or invalid key."""
    where = where or name
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: not a model config (a JSON object)")
    text = raw.get("text_config")
    cfg: dict[str, Any] = text if isinstance(text, dict) else raw

    def need(key: str, *alts: str) -> int:
        for k in (key, *alts):
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        raise ValueError(f"{where}: missing or invalid {key!r} (a positive integer)")

    def opt(key: str, default: int, *alts: str) -> int:
        for k in (key, *alts):
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                return v
        return default

    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise ValueError(f"{where}: missing 'model_type'")
    model_type = model_type.lower()
    if model_type == "gpt2":  # its own key names; LayerNorm, learned positions, plain GELU MLP
        h, heads = need("n_embd"), need("n_head")
        return ModelArch(
            name=name, model_type=model_type, num_layers=need("n_layer"), hidden_size=h,
            num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
            intermediate_size=opt("n_inner", 4 * h) or 4 * h, vocab_size=need("vocab_size"),
            max_model_len=need("n_positions"), tie_word_embeddings=True, gated_mlp=False,
            qkv_bias=True, learned_positions=True, path=path, raw=raw)
    layers = need("num_hidden_layers")
    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    kv_heads = opt("num_key_value_heads", heads) or heads
    head_dim = opt("head_dim", hidden // heads) or hidden // heads
    experts = opt("num_experts", 0, "num_local_experts", "n_routed_experts")
    top_k = opt("num_experts_per_tok", 0, "moe_topk")
    if experts and not 0 < top_k <= experts:
        raise ValueError(f"{where}: num_experts_per_tok {top_k} must be in 1..{experts}")
    bias = cfg.get("attention_bias", model_type == "qwen2")
    return ModelArch(
        name=name, model_type=model_type, num_layers=layers, hidden_size=hidden,
        num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        intermediate_size=opt("intermediate_size", 0) if experts else need("intermediate_size"),
        vocab_size=need("vocab_size"), max_model_len=opt("max_position_embeddings", 0) or 4096,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bool(bias), num_experts=experts, experts_per_token=top_k if experts else 0,
        moe_intermediate_size=(opt("moe_intermediate_size", 0) or opt("intermediate_size", 0))
        if experts else 0,
        moe_layers=_moe_layers(cfg, layers) if experts else 0,
        shared_expert_size=opt("shared_expert_intermediate_size", 0) if experts else 0,
        path=path, raw=raw,
    )


def _moe_layers(cfg: Mapping[str, Any], layers: int) -> int:
    """Layers with an expert MLP: Qwen-MoE's decoder_sparse_step and mlp_only_layers, DeepSeek's
    first_k_dense_replace, else all."""
    step = cfg.get("decoder_sparse_step", 1) or 1
    dense_only = set(cfg.get("mlp_only_layers") or [])
    first_dense = int(cfg.get("first_k_dense_replace", 0) or 0)
    return sum(1 for i in range(layers)
               if i not in dense_only and (i + 1) % int(step) == 0 and i >= first_dense)
