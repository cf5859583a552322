"""A model's architecture as the analytic cost model needs it, read from a Hugging Face config.

Torch-free: a config is plain JSON. Supported: decoder-only Llama-style models (llama, mistral,
qwen2, qwen3: RMSNorm, rotary positions, gated SiLU MLP, grouped-query attention), their MoE
variants (mixtral, qwen2_moe, qwen3_moe: top-k routed experts, optional shared experts), and
GPT-2 (LayerNorm, learned positions, a plain GELU MLP, fused QKV). Presets are the published
configs of a few models (shared docs, MODELS-AND-TRACES.md), so no hub access is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
SUPPORTED = (*LLAMA_LIKE, *MOE, "gpt2")


@dataclass(frozen=True)
class ModelArch:
    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (per expert for MoE: moe_intermediate_size)
    vocab_size: int
    max_model_len: int
    tie_word_embeddings: bool
    gated_mlp: bool = True  # gate + up projections (SiLU-and-mul); GPT-2: one up projection
    qkv_bias: bool = False
    num_experts: int = 0  # routed experts per MoE layer (0 = dense)
    experts_per_token: int = 0
    shared_expert_size: int = 0  # intermediate size of an always-on shared expert (0 = none)
    learned_positions: bool = False

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_params(self) -> int:
        """Weights of one decoder layer (norm weights included)."""
        h = self.hidden_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        attn += (self.q_size + 2 * self.kv_size) if self.qkv_bias else 0
        mlp_mats = 3 if self.gated_mlp else 2
        if self.is_moe:
            mlp = self.num_experts * mlp_mats * h * self.intermediate_size + h * self.num_experts
            mlp += mlp_mats * h * self.shared_expert_size
        else:
            mlp = mlp_mats * h * self.intermediate_size
        return attn + mlp + 2 * h

    def num_params(self) -> int:
        h = self.hidden_size
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else embed
        pos = self.max_model_len * h if self.learned_positions else 0
        return self.num_layers * self.layer_params() + embed + head + pos + h

    def kv_bytes_per_token(self, dtype_bytes: int, tp: int = 1) -> int:
        """KV bytes per token on one GPU: K and V of every layer, kv heads split over tp
        (replicated when there are fewer kv heads than GPUs)."""
        kv_heads = max(1, self.num_kv_heads // tp)
        return 2 * self.num_layers * kv_heads * self.head_dim * dtype_bytes


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def arch_from_config(cfg: dict[str, Any], name: str) -> ModelArch:
    """A ModelArch from a config.json dict; ValueError naming what is missing or unsupported."""
    mt = str(cfg.get("model_type", "")).lower()
    if mt not in SUPPORTED:
        raise ValueError(f"{name}: model_type {mt or '(none)'!r} is not supported by the analytic "
                         f"profile; supported: {', '.join(SUPPORTED)}")
    try:
        if mt == "gpt2":
            h = int(cfg["n_embd"])
            heads = int(cfg["n_head"])
            return ModelArch(
                name=name, model_type=mt, num_layers=int(cfg["n_layer"]), hidden_size=h,
                num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
                intermediate_size=int(_get(cfg, "n_inner", default=4 * h)),
                vocab_size=int(cfg["vocab_size"]), max_model_len=int(cfg["n_positions"]),
                tie_word_embeddings=True, gated_mlp=False, qkv_bias=True,
                learned_positions=True)
        h = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        head_dim = int(_get(cfg, "head_dim", default=h // heads))
        experts = int(_get(cfg, "num_local_experts", "num_experts", default=0)) if mt in MOE else 0
        inter = int(_get(cfg, "moe_intermediate_size", "intermediate_size")) if experts \
            else int(cfg["intermediate_size"])
        return ModelArch(
            name=name, model_type=mt, num_layers=int(cfg["num_hidden_layers"]), hidden_size=h,
            num_heads=heads, num_kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)),
            head_dim=head_dim, intermediate_size=inter, vocab_size=int(cfg["vocab_size"]),
            max_model_len=int(_get(cfg, "max_position_embeddings", default=4096)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=bool(_get(cfg, "attention_bias", default=mt == "qwen2")),
            num_experts=experts,
            experts_per_token=int(_get(cfg, "num_experts_per_tok", default=2)) if experts else 0,
            shared_expert_size=int(_get(cfg, "shared_expert_intermediate_size", default=0)),
        )
    except KeyError as e:
        raise ValueError(f"{name}: config has no {e.args[0]!r}, which a {mt} model needs") from None
    except (TypeError, ValueError):
        raise ValueError(f"{name}: config values must be numbers") from None


# Published configs (shared docs MODELS-AND-TRACES.md; Llama-3.1-8B from its config.json).
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=151936, max_position_embeddings=32768,
                         tie_word_embeddings=True),
    "qwen2-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960,
                       num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                       vocab_size=151936, max_position_embeddings=32768,
                       tie_word_embeddings=True),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32000, max_position_embeddings=4096),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, max_position_embeddings=32768),
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         vocab_size=128256, max_position_embeddings=131072),
    "distilgpt2": dict(model_type="gpt2", n_embd=768, n_head=12, n_layer=6, vocab_size=50257,
                       n_positions=1024),
}


def resolve_arch(spec: str) -> tuple[ModelArch, dict[str, Any]]:
    """A preset name, a config.json path or a directory holding one -> (arch, raw config)."""
    if spec in PRESETS:
        cfg = PRESETS[spec]
        return arch_from_config(cfg, spec), cfg
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"unknown model {spec!r}: give a preset ({', '.join(sorted(PRESETS))}), "
                         "a config.json or a directory holding one")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the config ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a model config is a JSON object")
    name = path.parent.name if path.name == "config.json" else path.stem
    return arch_from_config(cfg, name), cfg
