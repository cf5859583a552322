"""Model presets and model building for the real engine.

A model spec is a preset name (``PRESETS``), a path to a ``config.json``, or a local Hugging Face
checkpoint directory. Presets are built in code from the published configs (no hub access); their
weights are random (seeded), which is enough for profiling because step cost depends on shapes,
not on weight values. A checkpoint directory with weights loads the real weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

logger = logging.getLogger(__name__)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Keys that vary with the transformers version or runtime settings, not with the architecture.
_HASH_IGNORED_KEYS = (
    "transformers_version",
    "_attn_implementation",
    "_attn_implementation_internal",
    "_experts_implementation",
    "dtype",
    "torch_dtype",
    "architectures",
    "_name_or_path",
)


def _rope(theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta}


# fmt: off
# Published configs (docs/MODELS-AND-TRACES.md), one shared block per family.
_QWEN2: dict[str, Any] = dict(
    vocab_size=151936, max_position_embeddings=32768, rope_parameters=_rope(1e6),
    tie_word_embeddings=True, rms_norm_eps=1e-6, use_sliding_window=False,
    bos_token_id=151643, eos_token_id=151645, dtype="bfloat16",
)
_LLAMA_MISTRAL: dict[str, Any] = dict(
    hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, head_dim=128, vocab_size=32000,
    rope_parameters=_rope(1e4), tie_word_embeddings=False, rms_norm_eps=1e-5,
    bos_token_id=1, eos_token_id=2,
)
# Tiny test presets: hidden 64, 2 layers, 4 heads (head_dim 16), 2 KV heads, vocab 512, max
# position 512. initializer_range 0.2 (not 0.02) spreads the logits so greedy argmax is far from
# ties and exact-match tests against HF generate are not decided by float rounding.
_TINY: dict[str, Any] = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=512, max_position_embeddings=512, initializer_range=0.2,
    bos_token_id=1, eos_token_id=2, dtype="float32",
)

_PRESET_BUILDERS: dict[str, Callable[[], PretrainedConfig]] = {
    "qwen2.5-0.5b": lambda: Qwen2Config(
        **_QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2),
    "qwen2-1.5b": lambda: Qwen2Config(
        **_QWEN2, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2),
    "llama-2-7b": lambda: LlamaConfig(
        **_LLAMA_MISTRAL, intermediate_size=11008, num_key_value_heads=32,
        max_position_embeddings=4096, dtype="float16"),
    "mistral-7b": lambda: MistralConfig(
        **_LLAMA_MISTRAL, intermediate_size=14336, num_key_value_heads=8,
        max_position_embeddings=32768, sliding_window=4096, dtype="bfloat16"),
    "distilgpt2": lambda: GPT2Config(
        n_embd=768, n_layer=6, n_head=12, n_inner=3072, vocab_size=50257, n_positions=1024,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        bos_token_id=50256, eos_token_id=50256, dtype="float32"),
    "tiny-qwen2": lambda: Qwen2Config(
        **_TINY, rope_parameters=_rope(1e6), tie_word_embeddings=True, use_sliding_window=False),
    "tiny-llama": lambda: LlamaConfig(
        **_TINY, head_dim=16, rope_parameters=_rope(1e4), tie_word_embeddings=False),
    # a 64-token window: contexts longer than 64 exercise the sliding-window path
    "tiny-mistral": lambda: MistralConfig(
        **_TINY, head_dim=16, rope_parameters=_rope(1e4), tie_word_embeddings=False,
        sliding_window=64),
    "tiny-gpt2": lambda: GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=128, vocab_size=512, n_positions=512,
        initializer_range=0.2, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        dtype="float32"),
}
# fmt: on
PRESETS: tuple[str, ...] = tuple(_PRESET_BUILDERS)


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec resolved to a config, and to weights when the spec points at a checkpoint."""

    name: str
    config: PretrainedConfig
    checkpoint_dir: Path | None  # None: random weights

    @property
    def max_model_len(self) -> int:
        return _max_len(self.config)


@dataclass(frozen=True)
class ModelInfo:
    """Shape and size facts of a built model (what a profile records about its model)."""

    name: str
    family: str  # the config's model_type: qwen2, llama, mistral, gpt2
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_model_len: int  # tokens
    num_params: int
    weight_bytes: int
    dtype: str
    kv_bytes_per_token: int  # 2 (K and V) * layers * kv_heads * head_dim * dtype bytes
    sliding_window: int | None  # tokens; None: full attention
    config_hash: str  # sha256 of the architecture config (sorted JSON)


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve a preset name, a ``config.json`` path or a local checkpoint directory to a config."""
    if spec in _PRESET_BUILDERS:
        return ResolvedModel(spec, _PRESET_BUILDERS[spec](), None)
    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        return ResolvedModel(path.parent.name or path.stem, _config_from_json(path), None)
    if path.is_dir() and (path / "config.json").is_file():
        config = _config_from_json(path / "config.json")
        has_weights = any((path / f).exists() for f in _WEIGHT_FILES)
        return ResolvedModel(path.name, config, path if has_weights else None)
    raise ValueError(
        f"unknown model {spec!r}: use a preset ({', '.join(PRESETS)}), a path to a config.json, "
        "or a local Hugging Face checkpoint directory"
    )


# Families whose engine path is tested token-for-token against generate() (tests/engine).
SUPPORTED_FAMILIES = ("qwen2", "llama", "mistral", "gpt2")


def _config_from_json(path: Path) -> PretrainedConfig:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ValueError(f"{path} has no 'model_type': not a Hugging Face model config")
    model_type = data.pop("model_type")
    if model_type not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"{path}: model_type {model_type!r} is not supported; batchsim's engine runs "
            f"decoder-only models of the families {', '.join(SUPPORTED_FAMILIES)}"
        )
    try:
        config = AutoConfig.for_model(model_type, **data)
        _max_len(config)
    except Exception as e:  # transformers raises several types for a bad field
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a usable {model_type} config ({first})") from None
    return config


def _max_len(config: PretrainedConfig) -> int:
    """The context length a config allows (max_position_embeddings, or GPT-2's n_positions)."""
    value = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(value, int) or value < 2:
        raise ValueError(f"config has no usable max_position_embeddings / n_positions ({value!r})")
    return value


def config_hash(config: PretrainedConfig) -> str:
    """sha256 of the config as JSON with sorted keys, minus version and runtime fields."""
    data = {k: v for k, v in config.to_dict().items() if k not in _HASH_IGNORED_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def parse_dtype(dtype: str | torch.dtype | None, config: PretrainedConfig) -> torch.dtype:
    """``None`` → the config's published dtype; a name like ``"bfloat16"`` → ``torch.bfloat16``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype if dtype is not None else (config.dtype or "float32")
    if isinstance(name, torch.dtype):
        return name
    valid = ("float32", "float16", "bfloat16")
    if name not in valid:
        raise ValueError(f"unsupported dtype {name!r}: choose one of {', '.join(valid)}")
    return getattr(torch, name)


def _fast_construct(
    config: PretrainedConfig, device: torch.device, dtype: torch.dtype
) -> PreTrainedModel:
    """Construct on ``device`` with initialisation switched off (parameters hold garbage)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    return model


# Random values are drawn once into a pool of this many (a prime) and tiled into the parameters:
# drawing ~500 M normals takes 4-6 s on a small CPU, a copy takes a fraction of that. Models of
# fewer parameters than the pool (every test preset) are fully random; bigger ones repeat with a
# period that no weight dimension divides, which is fine because step cost depends on shapes only.
_RANDOM_POOL_SIZE = 1_048_573


def _init_random_weights(model: PreTrainedModel, seed: int, std: float) -> None:
    """Seeded init: matrices ~ N(0, std), norm weights 1, biases 0 (HF's scheme, fast)."""
    params = list(model.named_parameters())  # drops tied duplicates (lm_head tied to the embedding)
    if not params:
        return
    device = params[0][1].device
    gen = torch.Generator(device=device).manual_seed(seed)
    pool = torch.empty(_RANDOM_POOL_SIZE, device=device).normal_(0.0, std, generator=gen)
    pool = torch.cat([pool, pool]).to(params[0][1].dtype)  # any window [o, o + size) is contiguous
    offset = 0
    with torch.no_grad():
        for name, param in params:
            if param.ndim < 2:
                param.fill_(0.0 if name.endswith("bias") else 1.0)  # norm scales 1, biases 0
                continue
            flat = param.view(-1)
            for start in range(0, flat.numel(), _RANDOM_POOL_SIZE):
                n = min(_RANDOM_POOL_SIZE, flat.numel() - start)
                o = offset % _RANDOM_POOL_SIZE
                flat[start : start + n].copy_(pool[o : o + n])  # casts if dtypes are mixed
                offset += n


def build_model(
    spec: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, ModelInfo]:
    """Build a model in eval mode and describe it.

    Presets and config-only specs get seeded random weights (same seed → same weights);
    checkpoint directories load their weights with ``from_pretrained``. ``dtype=None`` uses the
    config's published dtype.
    """
    resolved = resolve_model(spec)
    config = resolved.config
    torch_dtype = parse_dtype(dtype, config)
    device = torch.device(device)
    chash = config_hash(config)
    model: PreTrainedModel
    if resolved.checkpoint_dir is not None:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.checkpoint_dir, dtype=torch_dtype, local_files_only=True
        )
        torch.nn.Module.to(model, device)  # in place (HF's decorated .to confuses type checkers)
    else:
        model = _fast_construct(config, device, torch_dtype)
        _init_random_weights(model, seed, std=getattr(config, "initializer_range", 0.02))
    model.eval()
    return model, model_info(resolved.name, model, chash)


def kv_heads_and_dim(cfg: PretrainedConfig) -> tuple[int, int]:
    """(KV heads, head dim) of a config: GQA configs name their KV heads, others have one per
    query head."""
    num_heads = cfg.num_attention_heads
    num_kv_heads = getattr(cfg, "num_key_value_heads", None) or num_heads
    return num_kv_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads


def kv_bytes_per_token(cfg: PretrainedConfig, dtype_bytes: int) -> int:
    """K and V bytes of one token over all layers."""
    num_kv_heads, head_dim = kv_heads_and_dim(cfg)
    return 2 * cfg.num_hidden_layers * num_kv_heads * head_dim * dtype_bytes


def model_info(name: str, model: PreTrainedModel, chash: str | None = None) -> ModelInfo:
    """Collect the shape and size facts of a built model."""
    cfg = model.config
    num_layers = cfg.num_hidden_layers
    num_heads = cfg.num_attention_heads
    num_kv_heads, head_dim = kv_heads_and_dim(cfg)
    params = list(model.parameters())
    dtype = next(iter(params)).dtype
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    max_len = _max_len(cfg)
    return ModelInfo(
        name=name,
        family=cfg.model_type,
        num_layers=num_layers,
        hidden_size=cfg.hidden_size,
        num_attention_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        vocab_size=cfg.vocab_size,
        max_model_len=max_len,
        num_params=sum(p.numel() for p in params),
        weight_bytes=sum(p.numel() * p.element_size() for p in params),
        dtype=str(dtype).removeprefix("torch."),
        kv_bytes_per_token=kv_bytes_per_token(cfg, dtype_bytes),
        sliding_window=getattr(cfg, "sliding_window", None),
        config_hash=chash or config_hash(cfg),
    )
