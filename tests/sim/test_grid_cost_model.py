"""Grid cost models: multilinear tables, monotone beyond the grid, fast-forward equals stepping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsim.policies.base import StepShape
from batchsim.sim.grid_cost_model import GridCostModel, GridTerm, monotone_tail
from batchsim.sim.profile import ProfileError, load_profile

# decode: 1 ms + 0.1 ms per sequence (1D), attention 0.01 ms per token of mean context per seq
SEQ = GridTerm(("num_decode_seqs",), ((1.0, 11.0),), (1.1e-3, 2.1e-3))
ATTN = GridTerm(("num_decode_seqs", "decode_ctx_mean"), ((1.0, 3.0), (0.0, 100.0, 200.0)),
                (0.0, 1e-3, 3e-3, 0.0, 3e-3, 9e-3))
MODEL = GridCostModel((SEQ, ATTN))


def test_values_worked_by_hand() -> None:
    """At 2 sequences of mean context 150: 1.2 ms + attention halfway between (1 seq: 1 -> 3 ms,
    3 seqs: 3 -> 9 ms at 100 -> 200 tokens) = (2 + 6) / 2 = 4 ms: 5.2 ms."""
    assert MODEL.predict(StepShape(2, 0, 2, 0, 300)) == pytest.approx(5.2e-3)


def test_clamped_below_and_monotone_beyond() -> None:
    """Below the first knot the first value holds; beyond the last the last segment continues,
    and monotone_tail stops a falling last segment from extrapolating downwards."""
    assert SEQ([0.0]) == pytest.approx(1.1e-3)
    assert SEQ([21.0]) == pytest.approx(3.1e-3)
    assert list(monotone_tail(np.array([1.0, 3.0, 2.0]))) == [1.0, 3.0, 3.0]


def test_predict_matches_vectorised_and_json_round_trip() -> None:
    shapes = [StepShape(b, 0, b, 0, b * c) for b in (1, 2, 3, 7) for c in (5, 50, 150, 400)]
    scalar = [MODEL.predict(s) for s in shapes]
    assert MODEL.predict_shapes(shapes) == pytest.approx(scalar)
    again = GridCostModel.from_json(json.loads(json.dumps(MODEL.to_json())))
    assert [again.predict(s) for s in shapes] == pytest.approx(scalar)
    assert [MODEL.scaled(2.0).predict(s) for s in shapes] == pytest.approx(
        [2 * t for t in scalar])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 400), st.integers(1, 500), st.floats(0.0, 2.0))
def test_decode_run_equals_stepping(batch: int, ctx: int, steps: int, stop_scale: float) -> None:
    """A fast-forwarded run gives each step's own prediction (context one token longer per step)
    and stops after the first step that reaches stop_s."""
    shape = StepShape(batch, 0, batch, 0, batch * ctx)
    stepped = [MODEL.predict(shape._replace(decode_ctx_tokens=shape.decode_ctx_tokens + j * batch))
               for j in range(steps)]
    assert MODEL.decode_run_array(shape, steps) == pytest.approx(stepped)
    stop = sum(stepped) * stop_scale
    run = MODEL.predict_decode_run(shape, steps, stop)
    ends = np.cumsum(stepped)
    expected = steps if stop >= ends[-1] else int(np.searchsorted(ends, stop)) + 1
    assert len(run) == expected
    assert run == pytest.approx(stepped[:expected])


def test_profile_refuses_a_broken_grid(tmp_path: Path) -> None:
    """A grid with the wrong number of values is refused naming the file and the cost model."""
    doc = json.loads((Path(__file__).resolve().parents[2] / "profiles"
                      / "tiny-qwen2-cpu.json").read_text())
    broken = MODEL.to_json()
    broken["grid_terms"][0]["values_s"] = [1.0]  # type: ignore[index]
    doc["cost_models"]["packed.decode"] = broken
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=r"p\.json.*packed\.decode.*values"):
        load_profile(path)


def test_four_coordinate_term_matches_vectorised() -> None:
    """The unrolled four-coordinate path agrees with the vectorised one inside, below and beyond
    the grid, through StepShape coordinates (prefill prefix read from the causal pairs)."""
    rng = np.random.default_rng(3)
    knots = ((0.0, 16.0, 64.0), (0.0, 512.0), (1.0, 4.0, 8.0), (16.0, 256.0, 1024.0))
    values = monotone_tail(rng.uniform(1e-4, 1e-3, (3, 2, 3, 3)).cumsum(axis=3))
    term = GridTerm(("num_prefill_tokens", "prefill_prefix", "num_decode_seqs",
                     "decode_ctx_mean"), knots, tuple(values.ravel()))
    model = GridCostModel((term,))
    shapes = [StepShape(int(b) + 1, int(n), int(b), int(n) * int(p) + int(n) * (int(n) + 1) // 2,
                        int(b) * int(c))
              for n, p, b, c in rng.uniform((1, 0, 1, 1), (100, 900, 12, 2000), (200, 4))]
    assert [model.predict(s) for s in shapes] == pytest.approx(list(model.predict_shapes(shapes)))
