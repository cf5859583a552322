"""Model presets, spec resolution and seeded random-weight building."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.engine.models import PRESETS, build_model, config_hash, resolve_model  # noqa: E402

# (preset, layers, hidden, heads, kv heads, head_dim, vocab, max_len, kv bytes/token in bf16)
PUBLISHED = [
    ("qwen2.5-0.5b", 24, 896, 14, 2, 64, 151936, 32768, 12 * 1024),
    ("qwen2-1.5b", 28, 1536, 12, 2, 128, 151936, 32768, 28 * 1024),
    ("llama-2-7b", 32, 4096, 32, 32, 128, 32000, 4096, 512 * 1024),
    ("mistral-7b", 32, 4096, 32, 8, 128, 32000, 32768, 128 * 1024),
    ("distilgpt2", 6, 768, 12, 12, 64, 50257, 1024, 2 * 6 * 12 * 64 * 2),
]


@pytest.mark.parametrize("row", PUBLISHED, ids=[r[0] for r in PUBLISHED])
def test_presets_carry_published_shapes(row: tuple) -> None:
    """Preset configs carry the published numbers (checked on the config; no weights built)."""
    name, layers, hidden, heads, kv_heads, head_dim, vocab, max_len, kv_bytes = row
    cfg = resolve_model(name).config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (
        layers,
        hidden,
        heads,
    )
    assert getattr(cfg, "num_key_value_heads", heads) == kv_heads
    assert (getattr(cfg, "head_dim", None) or hidden // heads) == head_dim
    assert (cfg.vocab_size, cfg.max_position_embeddings) == (vocab, max_len)
    assert 2 * layers * kv_heads * head_dim * 2 == kv_bytes


def test_qwen_preset_details() -> None:
    """Qwen2.5-0.5B: tied embeddings, rope theta 1e6, rms eps 1e-6, bf16; Mistral: window 4096."""
    cfg = resolve_model("qwen2.5-0.5b").config
    assert cfg.tie_word_embeddings and cfg.rms_norm_eps == 1e-6
    assert cfg.rope_parameters["rope_theta"] == 1e6 and cfg.dtype in ("bfloat16", torch.bfloat16)
    assert resolve_model("mistral-7b").config.sliding_window == 4096
    assert resolve_model("distilgpt2").config.activation_function == "gelu_new"


@pytest.mark.parametrize("name", [p for p in PRESETS if p.startswith("tiny-")])
def test_tiny_presets_build_and_describe(name: str) -> None:
    """Tiny presets build in eval mode with the documented shapes and a consistent ModelInfo."""
    model, info = build_model(name, "cpu", "float32", seed=0)
    assert not model.training
    assert (info.num_layers, info.hidden_size, info.num_attention_heads, info.head_dim) == (
        2,
        64,
        4,
        16,
    )
    assert info.vocab_size == 512 and info.max_model_len == 512
    assert info.kv_bytes_per_token == 2 * 2 * info.num_kv_heads * 16 * 4
    assert info.num_params == sum(p.numel() for p in model.parameters())
    assert info.weight_bytes == 4 * info.num_params and len(info.config_hash) == 64


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    """Weights are a function of the seed."""
    a, _ = build_model("tiny-llama", seed=1)
    b, _ = build_model("tiny-llama", seed=1)
    c, _ = build_model("tiny-llama", seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    norm = sa["model.layers.0.input_layernorm.weight"]
    assert torch.equal(norm, torch.ones_like(norm))


def test_config_json_and_checkpoint_specs(tmp_path: Path) -> None:
    """A config.json path builds random weights; a checkpoint directory loads its real weights."""
    model, info = build_model("tiny-qwen2", seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    loaded, loaded_info = build_model(str(tmp_path / "ckpt"), dtype="float32")
    assert loaded_info.name == "ckpt" and loaded_info.config_hash == info.config_hash
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())

    (tmp_path / "cfg").mkdir()
    cfg_file = tmp_path / "cfg" / "config.json"
    cfg_file.write_text(json.dumps(resolve_model("tiny-gpt2").config.to_dict()))
    _, gpt_info = build_model(str(cfg_file))
    assert gpt_info.family == "gpt2" and gpt_info.num_layers == 2
    assert (
        resolve_model(str(tmp_path / "cfg")).checkpoint_dir is None
    )  # config only: random weights


def test_bad_specs_list_the_choices(tmp_path: Path) -> None:
    """Unknown specs and dtypes raise ValueError naming what is valid."""
    with pytest.raises(ValueError, match=r"qwen2\.5-0\.5b, qwen2-1\.5b"):
        resolve_model("gpt-5")
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        build_model("tiny-qwen2", dtype="int8")
    bad = tmp_path / "config.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="model_type"):
        resolve_model(str(bad))


def test_config_hash_ignores_runtime_fields() -> None:
    """The hash identifies the architecture, not the dtype or transformers version."""
    cfg = resolve_model("tiny-qwen2").config
    h = config_hash(cfg)
    cfg.dtype = "bfloat16"
    assert config_hash(cfg) == h
    cfg.hidden_size = 128
    assert config_hash(cfg) != h
