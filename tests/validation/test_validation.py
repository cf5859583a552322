"""The torch-free half of validation: workloads per load, capacity, the comparison table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from batchsim.sim.run import simulate
from batchsim.sim.validation.plan import (
    METRIC_NAMES,
    ValidationSpec,
    WorkloadSpec,
    at_rate,
    base_workload,
    compare,
    error_summary,
    estimate_capacity,
    parse_loads,
    plan_validation,
    prepare_point,
    relative_error,
    simulate_point,
    validation_table,
    write_validation,
)
from tests.conftest import fake_profile


def _spec(**workload: int) -> ValidationSpec:
    return ValidationSpec(policy="static", profile="<fake>", knobs={"max_batch_size": 4},
                          workload=WorkloadSpec(**workload), step_jitter=False)


def test_load_levels_replay_the_same_requests_at_scaled_rates():
    """Every load level has the same lengths; arrivals are the base pattern divided by rate."""
    base = base_workload(WorkloadSpec(num_requests=400, range_ratio=0.5), seed=1)
    mean_gap = float(np.diff(base.arrival_s).mean())
    assert mean_gap == pytest.approx(1.0, rel=0.15)  # base: 1 req/s on average
    fast = at_rate(base, 4.0)
    assert np.array_equal(fast.input_tokens, base.input_tokens)
    assert np.allclose(fast.arrival_s, base.arrival_s / 4.0)
    assert np.all(at_rate(base, math.inf).arrival_s == 0)


def test_a_trace_is_rescaled_to_one_request_per_second(tmp_path):
    """A trace's own arrival pattern is kept, its mean rate normalised to 1 req/s."""
    trace = tmp_path / "t.jsonl"
    rows = [(0.0, 10, 2), (1.0, 12, 3), (4.0, 8, 1)]
    trace.write_text("".join(json.dumps({"arrival_s": a, "input_tokens": i, "output_tokens": o})
                             + "\n" for a, i, o in rows))
    base = base_workload(WorkloadSpec(trace=str(trace)), seed=0)
    assert base.arrival_s.tolist() == [0.0, 0.5, 2.0]
    assert base.input_tokens.tolist() == [10, 12, 8]


def test_capacity_is_throughput_with_everything_at_t0():
    """4 requests of 10 + 3 tokens, batch 4, 1 ms/prefill token, 5 ms/decode: 40 + 2*5 ms."""
    capacity = estimate_capacity(_spec(num_requests=4, input_len=10, output_len=3),
                                 fake_profile(), base_workload(
                                     WorkloadSpec(num_requests=4, input_len=10, output_len=3), 0))
    assert capacity.makespan_s == pytest.approx(0.050)
    assert capacity.request_rate == pytest.approx(80.0)


def test_plan_simulates_each_load_at_its_fraction_of_capacity():
    spec = ValidationSpec(policy="continuous", profile="<fake>", loads=(0.5, 0.9),
                          workload=WorkloadSpec(num_requests=30, input_len=20, output_len=5),
                          step_jitter=False)
    plan = plan_validation(spec, fake_profile())
    assert [p.load for p in plan.points] == [0.5, 0.9]
    for p in plan.points:
        assert p.request_rate == pytest.approx(p.load * plan.capacity.request_rate)
        assert p.sim.metrics["completed"] == 30
    assert plan.predicted_s == pytest.approx(sum(p.predicted_s for p in plan.points))


@pytest.mark.parametrize(("real", "sim", "err"), [
    (10.0, 12.0, 0.2), (10.0, 8.0, -0.2), (0.0, 0.0, 0.0), (0.0, 1.0, None), (None, 1.0, None),
])
def test_relative_error_is_signed_sim_minus_real(real, sim, err):
    assert relative_error(real, sim) == (pytest.approx(err) if err is not None else None)


def _metrics(scale: float) -> dict:
    dist = {"mean": 10 * scale, "median": 9 * scale, "p90": 12 * scale, "p95": 13 * scale,
            "p99": 15 * scale}
    return {"request_throughput": 2.0 * scale, "output_token_throughput": 64 * scale,
            **{f"{d}_ms": dist for d in ("ttft", "tpot", "itl", "e2el", "queue")},
            "gpu_busy_fraction": 0.5, "mean_batch_size": 3.0, "preemptions": 0}


def test_comparison_and_mape_across_points():
    """Errors of +10% and -30% give a MAPE of 20% and a median absolute error of 20%."""
    points = [compare(_metrics(1.0), _metrics(1.1)), compare(_metrics(1.0), _metrics(0.7))]
    assert points[0]["e2el_ms.p99"]["rel_error"] == pytest.approx(0.1)
    summary = error_summary(points)
    assert summary["request_throughput"]["mape"] == pytest.approx(0.2)
    assert summary["request_throughput"]["median_abs_error"] == pytest.approx(0.2)
    assert summary["preemptions"] == {"mape": 0.0, "median_abs_error": 0.0, "max_abs_error": 0.0,
                                      "num_points": 2}
    table = validation_table([{"load": 0.5, "request_rate": 1.0, "comparison": points[0]},
                              {"load": 0.8, "request_rate": 1.6, "comparison": points[1]}],
                             summary)
    assert len(table) == 3 * len(METRIC_NAMES)
    assert table[table["load"] == "all"]["mape"].notna().all()


@pytest.mark.parametrize("text", ["", "a,b", ","])
def test_bad_loads(text):
    with pytest.raises(ValueError, match="--loads"):
        parse_loads(text)


def test_loads_out_of_range_are_refused():
    with pytest.raises(ValueError, match="fractions of capacity"):
        ValidationSpec(policy="static", profile="p", loads=(0.0, 0.5))


def test_write_validation_leaves_nothing_when_interrupted(tmp_path):
    """A failure while assembling the folder (here: in the report) leaves no folder behind."""
    out = tmp_path / "val"
    doc = {"points": [], "errors": error_summary([])}

    def broken_report(_folder):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_validation(out, doc, {}, {}, report=broken_report)
    assert list(tmp_path.iterdir()) == []


def test_scaled_profile_multiplies_every_step_cost():
    """The drift diagnostic's profile predicts exactly k times every step of the original."""
    from batchsim.policies.base import StepShape
    from batchsim.sim.profile import load_profile
    from batchsim.sim.validation.plan import scaled_profile

    profile = load_profile(Path(__file__).resolve().parents[2] / "profiles"
                           / "tiny-qwen2-cpu.json")
    slow = scaled_profile(profile, 1.25)
    shape = StepShape(5, 40, 4, 900, 300)
    for key in ("packed.prefill", "packed.decode", "packed.mixed", "padded.decode"):
        layout, phase = key.split(".")
        assert slow.cost_model(layout, phase).predict(shape) == pytest.approx(
            1.25 * profile.cost_model(layout, phase).predict(shape))


def test_with_jitter_the_simulated_side_is_the_mean_of_its_draws():
    """The simulated metrics are the model's expected value: the mean over jitter_replicas
    draws, each a different seed of the jitter stream; the tables are the first draw's."""
    profile = fake_profile(jitter_ratios={"padded.decode": np.array([0.5, 1.0, 2.0])})
    spec = ValidationSpec(policy="static", profile="<fake>", knobs={"max_batch_size": 4},
                          workload=WorkloadSpec(num_requests=30, input_len=20, output_len=5),
                          jitter_replicas=3)
    base = base_workload(spec.workload, spec.seed)
    point = simulate_point(spec, profile, base, 20.0)
    draws = [simulate(prepare_point(spec, profile, base, 20.0), jitter_seed_offset=k)
             for k in range(3)]
    e2el = [d.metrics["e2el_ms"]["mean"] for d in draws]
    assert len(set(e2el)) == 3  # the draws differ
    assert point.metrics["e2el_ms"]["mean"] == pytest.approx(np.mean(e2el))
    assert point.steps.equals(draws[0].steps)
    assert point.config["step_jitter"]["replicas"] == 3
    with pytest.raises(ValueError, match="has none"):  # no repeats to draw from
        simulate_point(spec, fake_profile(), base, 20.0)
