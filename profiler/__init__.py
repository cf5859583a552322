"""Real inference engines for measuring step costs (PyTorch + transformers).

- ``batchsim.profiler.engine.models``: model presets and seeded random-weight building
  (``build_model``).
- ``batchsim.profiler.engine.kv_cache``: paged KV pool, block allocator, block tables.
- ``batchsim.profiler.engine.attention``: the paged attention function plugged into transformers
  models.
- ``batchsim.profiler.engine.varlen``: its CUDA ``varlen_attn`` path (inputs prepared and
  CPU-tested).
- ``batchsim.profiler.engine.paged_engine``: ``Engine``, the paged engine stepped by
  ``EnginePlan``s.
- ``batchsim.profiler.engine.static_engine``: ``StaticEngine``, padded static batching on
  transformers' own path.
- ``batchsim.profiler.engine.records``: torch-free records (plans, ``StepTiming``) shared with the
  simulator.
- ``batchsim.profiler.engine.bench``: ``python -m batchsim.profiler.engine.bench``, build + prefill
  + decode timing.

Importing this package does not import torch: names are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Engine": "batchsim.profiler.engine.paged_engine",
    "StaticEngine": "batchsim.profiler.engine.static_engine",
    "build_model": "batchsim.profiler.engine.models",
    "resolve_model": "batchsim.profiler.engine.models",
    "ModelInfo": "batchsim.profiler.engine.models",
    "PRESETS": "batchsim.profiler.engine.models",
    "EnginePlan": "batchsim.profiler.engine.records",
    "EngineChunk": "batchsim.profiler.engine.records",
    "StepResult": "batchsim.profiler.engine.records",
    "StepTiming": "batchsim.profiler.engine.records",
    "EngineMemoryFacts": "batchsim.profiler.engine.records",
    "OutOfBlocksError": "batchsim.profiler.engine.kv_cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'profiler' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
