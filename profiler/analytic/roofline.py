"""An analytic roofline profile: the fallback used until a measured profile exists.

Each step costs a fixed host overhead plus the larger of its compute time (FLOPs at an assumed
fraction of the device's published peak) and its memory time (weights + KV bytes at an assumed
fraction of published bandwidth). Every number below is an assumption or a published figure,
written into the profile so anyone can check it; the file says "source": "analytic" and every
run that uses it says so too. Run `python -m batchsim.profiler.analytic.roofline --out FILE` to
regenerate.
No torch here: the simulator side may import this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batchsim.sim.cost_model import REQUIRED_MODELS
from batchsim.sim.profile import SCHEMA, SCHEMA_VERSION


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    total_bytes: int
    peak_flops: float  # dense bf16 FLOP/s, published
    peak_bandwidth: float  # bytes/s, published
    flops_efficiency: float  # assumed achievable fraction of peak_flops
    bandwidth_efficiency: float  # assumed achievable fraction of peak_bandwidth
    launch_s: float  # assumed host cost per kernel launch (eager PyTorch)
    kernels_per_layer: int  # assumed kernel launches per decoder layer (eager transformers)
    base_overhead_s: float  # assumed per-step cost outside the layers (inputs, sampling, sync)
    per_seq_s: float  # assumed host bookkeeping per sequence in a step


# NVIDIA H100 SXM5 80 GB: 989 TFLOP/s dense BF16 and 3.35 TB/s HBM3 (NVIDIA H100 datasheet).
H100_SXM = DeviceSpec(
    name="NVIDIA H100 80GB HBM3 (analytic roofline)",
    total_bytes=80 * 2**30,
    peak_flops=989e12,
    peak_bandwidth=3.35e12,
    flops_efficiency=0.5,
    bandwidth_efficiency=0.8,
    launch_s=8e-6,
    kernels_per_layer=35,
    base_overhead_s=1e-3,
    per_seq_s=20e-6,
)

# Qwen/Qwen2.5-0.5B-Instruct config.json (see docs/MODELS-AND-TRACES in shared docs).
QWEN25_05B: dict[str, Any] = {
    "name": "qwen2.5-0.5b",
    "family": "qwen2",
    "num_layers": 24,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_kv_heads": 2,
    "head_dim": 64,
    "vocab_size": 151936,
    "max_model_len": 32768,
    "tie_word_embeddings": True,
    "qkv_bias": True,
}


def num_params(m: dict[str, Any]) -> tuple[int, int]:
    """(total, non-embedding) parameters of a Llama/Qwen2-style decoder."""
    h, kv = m["hidden_size"], m["num_kv_heads"] * m["head_dim"]
    q = m["num_attention_heads"] * m["head_dim"]
    bias = (q + 2 * kv) if m.get("qkv_bias") else 0
    layer = h * q + 2 * h * kv + q * h + bias + 3 * h * m["intermediate_size"] + 2 * h
    body = m["num_layers"] * layer + h  # + final norm
    embed = m["vocab_size"] * h
    head = 0 if m.get("tie_word_embeddings") else embed
    return body + embed + head, body


def analytic_profile(m: dict[str, Any], dev: DeviceSpec, dtype_bytes: int = 2) -> dict[str, Any]:
    total, body = num_params(m)
    weight_bytes = total * dtype_bytes
    kv_bytes_per_token = 2 * m["num_layers"] * m["num_kv_heads"] * m["head_dim"] * dtype_bytes
    flops_rate = dev.peak_flops * dev.flops_efficiency
    bytes_rate = dev.peak_bandwidth * dev.bandwidth_efficiency
    overhead = dev.base_overhead_s + m["num_layers"] * dev.kernels_per_layer * dev.launch_s
    attn_flops_per_pair = 4 * m["num_attention_heads"] * m["head_dim"] * m["num_layers"]
    compute = {  # FLOPs / rate: linear layers per token, LM head per sampled sequence, attention
        "const": overhead,
        "num_seqs": dev.per_seq_s + 2 * m["hidden_size"] * m["vocab_size"] / flops_rate,
        "num_tokens": 2 * body / flops_rate,
        "prefill_attn_pairs": attn_flops_per_pair / flops_rate,
        "decode_ctx_tokens": attn_flops_per_pair / flops_rate,
    }
    memory = {  # bytes / rate: all weights once per step, KV written and read
        "const": overhead + weight_bytes / bytes_rate,
        "num_seqs": dev.per_seq_s,
        "num_prefill_tokens": kv_bytes_per_token / bytes_rate,
        "decode_ctx_tokens": kv_bytes_per_token / bytes_rate,
    }
    model = {"terms": [compute, memory], "cv": None}
    config_hash = hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()
    # Activations of the largest step kept free: fp32 logits of 256 sequences plus MLP
    # intermediates of 8192 tokens, rounded up to 1 GiB.
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "source": "analytic",
        "complete": True,
        "fingerprint": {
            "device": dev.name,
            "device_type": "cuda",
            "driver": None,
            "torch": None,
            "transformers": None,
            "dtype": "bfloat16" if dtype_bytes == 2 else f"{dtype_bytes}-byte",
            "model": m["name"],
            "config_hash": config_hash,
            "created": dt.date(2026, 11, 23).isoformat(),
            "host": None,
        },
        "model": {**m, "num_params": total},
        "memory": {
            "total_bytes": dev.total_bytes,
            "weight_bytes": weight_bytes,
            "kv_bytes_per_token": kv_bytes_per_token,
            "activation_reserve_bytes": 2**30,
        },
        "cost_models": {key: model for key in REQUIRED_MODELS},
        "assumptions": asdict(dev),
        "points": [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    profile = analytic_profile(QWEN25_05B, H100_SXM)
    args.out.write_text(json.dumps(profile, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
