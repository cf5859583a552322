"""Validation warms its paged engines exactly as profiling does (prefill, decode and mixed
steps), so the two time engines in the same state; before, validation skipped the mixed steps."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from batchsim.profiler.engine.paged_engine import Engine
from batchsim.profiler.profiling.engines import ProfilingEngines
from batchsim.profiler.real.validate import EngineSpec, ValidationEngines


def _record_steps(monkeypatch) -> list[tuple[int, int]]:
    """(prefill chunks, decodes) of every paged-engine step from now on."""
    steps: list[tuple[int, int]] = []
    step = Engine.step

    def recording(self, plan):
        steps.append((len(plan.prefills), len(plan.decodes)))
        return step(self, plan)

    monkeypatch.setattr(Engine, "step", recording)
    return steps


def test_validation_and_profiling_warm_up_the_same_steps(monkeypatch):
    steps = _record_steps(monkeypatch)
    # a pool smaller than the warm-up needs: build makes room for it
    engines = ValidationEngines.build(EngineSpec("tiny-qwen2", "cpu", "float32", 1, 0),
                                      packed_blocks=2, block_size=16, padded=False)
    validation = list(steps)
    assert engines.paged is not None and not engines.paged.seq_ids  # warm-up left nothing
    kinds = {("mixed" if p and d else "prefill" if p else "decode") for p, d in validation}
    assert kinds == {"prefill", "decode", "mixed"}
    steps.clear()
    profiling = ProfilingEngines("tiny-qwen2", "cpu", "float32", seed=0, memory_cap_bytes=64 << 20)
    profiling.size_paged_pool([])  # a small pool, not the default share of RAM
    assert profiling.paged is not None  # built (and warmed) on first use
    profiling.close()
    assert steps == validation
