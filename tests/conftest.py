"""Shared test helpers: a fake profile whose step costs can be worked out by hand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from batchsim.policies.kv import MemoryFacts
from batchsim.policies.request import Request
from batchsim.sim.cost_model import REQUIRED_MODELS, CostModel
from batchsim.sim.profile import Profile
from batchsim.sim.workload.workload import Workload

# 1 ms per prefill token, 5 ms per decode step; a mixed step costs both.
HAND_COSTS: dict[str, list[dict[str, float]]] = {
    "packed.prefill": [{"num_prefill_tokens": 1e-3}],
    "packed.decode": [{"const": 5e-3}],
    "packed.mixed": [{"const": 5e-3, "num_prefill_tokens": 1e-3}],
    "padded.prefill": [{"num_prefill_tokens": 1e-3}],
    "padded.decode": [{"const": 5e-3}],
}


def fake_profile(
    kv_tokens: int = 1_000_000,
    max_model_len: int = 100_000,
    costs: Mapping[str, list[dict[str, float]]] = HAND_COSTS,
    kv_copy: dict[str, float] | None = None,
    jitter_ratios: Mapping[str, np.ndarray] | None = None,
) -> Profile:
    """A profile with hand-set costs and room for kv_tokens tokens at 90% utilization.

    costs may add optional models (cpu.packed.prefill); kv_copy: {bytes_per_s, latency_s},
    with 1 KV byte per token."""
    memory = MemoryFacts(total_bytes=int(np.ceil(kv_tokens / 0.9)) + 1, weight_bytes=0,
                         kv_bytes_per_token=1)
    models = {k: CostModel.from_json({"terms": costs[k]})
              for k in (*REQUIRED_MODELS, *(k for k in costs if k not in REQUIRED_MODELS))}
    return Profile(
        path="<fake>",
        source="analytic",
        fingerprint={"device": "fake"},
        model={"name": "fake", "max_model_len": max_model_len},
        memory=memory,
        cost_models=models,
        cv={},
        kv_copy=kv_copy,
        digest="fake",
        jitter_ratios=dict(jitter_ratios or {}),
    )


def make_workload(rows: Sequence[tuple[float, int, int]], priorities: Sequence[int] | None = None
                  ) -> Workload:
    """rows: (arrival_s, input_tokens, output_tokens), any order."""
    arr = np.array([r[0] for r in rows], dtype=float)
    order = np.argsort(arr, kind="stable")
    pri = np.array(priorities if priorities is not None else [0] * len(rows), dtype=np.int64)
    return Workload(
        arrival_s=arr[order],
        input_tokens=np.array([rows[i][1] for i in order], dtype=np.int64),
        output_tokens=np.array([rows[i][2] for i in order], dtype=np.int64),
        priority=pri[order],
        ids=[f"r{i}" for i in order],
        source="test",
    )


def by_id(requests: Sequence[Request]) -> dict[str, Request]:
    return {r.id: r for r in requests}


@pytest.fixture
def hand_profile() -> Profile:
    return fake_profile()
