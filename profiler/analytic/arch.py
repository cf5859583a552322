"""The models an analytic profile supports, and the presets it knows by name.

The config reader is the project's one (profiler/model_arch.py, shared with the importer).
Supported: decoder-only Llama-style models (llama, mistral, qwen2, qwen3: RMSNorm, rotary
positions, gated SiLU MLP, grouped-query attention), their MoE variants (mixtral, qwen2_moe,
qwen3_moe: top-k routed experts, optional shared experts), and GPT-2 (LayerNorm, learned
positions, a plain GELU MLP, fused QKV). Presets are the published configs of a few models
(shared docs, MODELS-AND-TRACES.md), so no hub access is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchsim.profiler.model_arch import ModelArch, config_name, load_config
from batchsim.profiler.model_arch import arch_from_config as _read

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
SUPPORTED = (*LLAMA_LIKE, *MOE, "gpt2")

__all__ = ["PRESETS", "SUPPORTED", "ModelArch", "arch_from_config", "resolve_arch"]


def arch_from_config(cfg: Any, name: str, where: str | None = None, path: str = "") -> ModelArch:
    """A ModelArch of a supported architecture; ValueError naming what is missing or
    unsupported."""
    mt = str(cfg.get("model_type", "") if isinstance(cfg, dict) else "").lower()
    if mt not in SUPPORTED:
        raise ValueError(f"{where or name}: model_type {mt or '(none)'!r} is not supported by "
                         f"the analytic profile; supported: {', '.join(SUPPORTED)}")
    return _read(cfg, name, where, path)


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
    cfg = load_config(path)
    return arch_from_config(cfg, config_name(path), str(path), path=str(path)), cfg
