"""Real inference engines for measuring step costs (PyTorch + transformers).

- ``profiler.models``: model presets and seeded random-weight building (``build_model``).
- ``profiler.kv_cache``: paged KV pool, block allocator, block tables.
- ``profiler.attention``: the paged attention function plugged into transformers models.
- ``profiler.engine_varlen``: its CUDA ``varlen_attn`` path (inputs prepared and CPU-tested).
- ``profiler.engine``: ``Engine``, the paged engine stepped by ``EnginePlan``s.
- ``profiler.static_engine``: ``StaticEngine``, padded static batching on transformers' own path.
- ``profiler.engine_types``: torch-free records (plans, ``StepTiming``) shared with the simulator.
- ``profiler.engine_bench``: ``python -m profiler.engine_bench``, build + prefill + decode timing.

Importing this package does not import torch: names are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Engine": "profiler.engine",
    "StaticEngine": "profiler.static_engine",
    "build_model": "profiler.models",
    "resolve_model": "profiler.models",
    "ModelInfo": "profiler.models",
    "PRESETS": "profiler.models",
    "EnginePlan": "profiler.engine_types",
    "PrefillChunk": "profiler.engine_types",
    "StepResult": "profiler.engine_types",
    "StepTiming": "profiler.engine_types",
    "EngineMemoryFacts": "profiler.engine_types",
    "OutOfBlocksError": "profiler.kv_cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'profiler' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
