"""Cost models: a run of decode steps in closed form equals the steps one by one."""

from __future__ import annotations

import pytest

from batchsim.policies.base import StepShape
from batchsim.sim.cost_model import CostModel

MODELS = {
    "linear": {"terms": [{"const": 2e-3, "num_decode_seqs": 1e-5, "decode_ctx_tokens": 3e-8}]},
    "floor": {"terms": [{"const": 1e-4, "num_decode_seqs": 1e-5, "decode_ctx_tokens": 4e-7},
                        {"const": 6e-3}]},
    "curve": {"terms": [{"const": 2e-3, "decode_ctx_tokens": 3e-8}],
              "curve": {"feature": "num_decode_seqs", "knots": [1, 2, 8, 32],
                        "slopes": [4e-3, 1e-4, 2e-5]}},
}


def step_by_step(model: CostModel, shape: StepShape, n: int, stop_s: float) -> list[float]:
    out, total = [], 0.0
    for j in range(n):
        b = shape.num_decode_seqs
        d = model.predict(shape._replace(decode_ctx_tokens=shape.decode_ctx_tokens + b * j))
        out.append(d)
        total += d
        if total >= stop_s:
            break
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 3, 40])
@pytest.mark.parametrize("stop_s", [float("inf"), 0.05, 0.3141])
def test_decode_run_matches_single_steps(name: str, batch: int, stop_s: float) -> None:
    model = CostModel.from_json(MODELS[name])
    shape = StepShape(batch, 0, batch, 0, batch * 700)
    fast = model.predict_decode_run(shape, 500, stop_s)
    slow = step_by_step(model, shape, 500, stop_s)
    assert len(fast) == len(slow)
    assert fast == pytest.approx(slow, rel=1e-9)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 3, 40])
def test_decode_run_array_is_the_run_without_a_stop(name: str, batch: int) -> None:
    model = CostModel.from_json(MODELS[name])
    shape = StepShape(batch, 0, batch, 0, batch * 700)
    assert model.decode_run_array(shape, 500).tolist() == pytest.approx(
        step_by_step(model, shape, 500, float("inf")), rel=1e-9)
