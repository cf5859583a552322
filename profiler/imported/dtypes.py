"""Bytes per element of the dtypes an LLMServingSim variant folder names ('bf16', 'fp8',
'bf16-kvfp8')."""

from __future__ import annotations

from dataclasses import dataclass

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "bf16": 2, "fp16": 2, "fp32": 4,
                "fp8": 1, "int8": 1}


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
