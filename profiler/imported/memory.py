"""Memory facts of an imported profile, per GPU: device memory (and where it came from), weights,
KV bytes per token, and an activation reserve (docs/IMPORT.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchsim.profiler.imported.dtypes import VariantDtypes
from batchsim.profiler.model_arch import ModelArch

GIB = 2**30
# Published memory capacities (vendor datasheets), matched as substrings of meta.yaml's `gpu`
# (the CUDA device name), most specific first. torch reports 1-2% less than the nominal size.
PUBLISHED_GIB: tuple[tuple[str, float], ...] = (
    ("RTX PRO 6000", 96), ("H200", 141), ("H100 NVL", 94), ("H100", 80), ("H800", 80),
    ("H20", 96), ("B200", 180), ("A100-SXM4-80GB", 80), ("A100 80GB", 80),
    ("A100-PCIE-80GB", 80), ("A100", 40), ("A800", 80), ("L40S", 48), ("L40", 48), ("L4", 24),
    ("RTX 6000 Ada", 48), ("RTX A6000", 48), ("A6000", 48), ("RTX 5090", 32), ("RTX 4090", 24),
    ("RTX 3090", 24), ("A10G", 24), ("A10", 24), ("T4", 16), ("V100", 32),
)
CONTEXT_RESERVE_BYTES = GIB  # CUDA context, NCCL buffers, allocator slack (assumed)


def device_memory_bytes(folder: Path, meta: Mapping[str, Any],
                        flag_gb: float | None) -> tuple[int, str]:
    """Device memory and its source: the flag, meta.yaml, the hardware's hardware.yaml next to
    the perf tree, or the published capacity of the GPU named in meta.yaml."""
    if flag_gb is not None:
        return int(flag_gb * GIB), f"--gpu-memory-gb {flag_gb}"
    for key in ("gpu_memory_gib", "memory_total_gib", "gpu_memory_gb"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return int(value * GIB), f"meta.yaml {key}"
    try:
        hw = folder.resolve().parents[2] / "hardware.yaml"
    except IndexError:
        hw = None
    if hw is not None and hw.is_file():
        import yaml

        try:
            spec = (yaml.safe_load(hw.read_text(encoding="utf-8")) or {}).get("spec") or {}
        except (yaml.YAMLError, AttributeError, OSError):
            raise ValueError(f"{hw}: not a readable hardware.yaml") from None
        value = spec.get("memory_total_gib") if isinstance(spec, Mapping) else None
        if isinstance(value, (int, float)) and value > 0:
            return int(value * GIB), f"{hw} spec.memory_total_gib"
    name = str(meta.get("gpu") or "")
    for pattern, gib in PUBLISHED_GIB:
        if pattern.lower() in name.lower():
            return int(gib * GIB), f"published capacity of {pattern} ({gib} GiB), from {name!r}"
    raise ValueError(f"{folder / 'meta.yaml'}: GPU {name!r} has no known memory size: give "
                     "--gpu-memory-gb GB")


def memory_facts(folder: Path, meta: Mapping[str, Any], config: ModelArch, tp: int,
                 dtypes: VariantDtypes, flag_gb: float | None) -> tuple[dict[str, int], str]:
    """The profile's memory block (per GPU) and a sentence saying where each part came from."""
    total, source = device_memory_bytes(folder, meta, flag_gb)
    engine = meta.get("engine_effective") or {}
    tokens = int(engine.get("max_num_batched_tokens") or 2048)
    seqs = int(engine.get("max_num_seqs") or 256)
    qkv = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
    mlp = (config.experts_per_token * config.moe_intermediate_size if config.is_moe
           else config.intermediate_size)
    # peak activations of the profiled engine's largest step: hidden states, qkv, the MLP's
    # gate/up output (sharded by tp), and float32 logits of every sequence
    activations = (tokens * (4 * config.hidden_size + (qkv + 2 * mlp) // tp)
                   * dtypes.activation_bytes
                   + seqs * math.ceil(config.vocab_size / tp) * 4)
    facts = {
        "total_bytes": total,
        "weight_bytes": config.weight_bytes_per_gpu(dtypes.weight_bytes, tp),
        "kv_bytes_per_token": config.kv_bytes_per_token(dtypes.kv_bytes, tp),
        "activation_reserve_bytes": activations + CONTEXT_RESERVE_BYTES,
    }
    how = (f"device memory: {source}; weights and KV from {config.path} per GPU at tp {tp}; "
           f"activation reserve estimated for {tokens} tokens / {seqs} sequences + "
           f"{CONTEXT_RESERVE_BYTES // GIB} GiB context (assumed)")
    return facts, how
