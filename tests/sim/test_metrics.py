"""Metric definitions: percentiles, inter-token latencies, goodput."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsim.sim.metrics import parse_goodput, weighted_percentiles
from tests.sim.test_timelines import run


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3, allow_nan=False), st.integers(1, 20)),
                min_size=1, max_size=30))
def test_weighted_percentiles_equal_numpy_on_the_repeated_samples(pairs):
    values = np.array([v for v, _ in pairs])
    weights = np.array([w for _, w in pairs])
    got = weighted_percentiles(values, weights, (0.0, 50.0, 90.0, 99.0, 100.0))
    want = np.percentile(np.repeat(values, weights), [0, 50, 90, 99, 100])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.5, 1.0, 1.0 + 2**-40, 2.0, 3.0, 3.5]),
                          st.integers(0, 5)), min_size=1, max_size=40))
def test_a_sorted_sample_is_the_repeated_sample_in_any_order_of_ties(pairs):
    """Heavy ties and zero weights: percentiles and quantiles of SortedSample are numpy's on
    the repeated values, and the same whatever order equal values had."""
    from batchsim.sim.samples import SortedSample

    values = np.array([v for v, _ in pairs])
    weights = np.array([w for _, w in pairs])
    repeated = np.repeat(values, weights)
    sample = SortedSample(values, weights)
    reordered = SortedSample(values[::-1], weights[::-1])
    if not len(repeated):
        assert sample.mean is None and len(sample) == 0 and len(sample.quantiles(PROBS)) == 0
        return
    assert sample.percentiles((0.0, 50.0, 99.0)) == reordered.percentiles((0.0, 50.0, 99.0))
    np.testing.assert_allclose(sample.percentiles((0.0, 50.0, 99.0, 100.0)),
                               np.percentile(repeated, [0, 50, 99, 100]), rtol=1e-12)
    assert (sample.quantiles(PROBS) == reordered.quantiles(PROBS)).all()
    np.testing.assert_allclose(sample.quantiles(PROBS), np.quantile(repeated, PROBS), rtol=1e-12)
    assert sample.mean == pytest.approx(repeated.mean())


PROBS = np.linspace(0.0, 1.0, 41)


def test_itl_counts_every_gap_of_every_request_once():
    """Static batch of 2 (hand costs): decode steps of 5 ms; A has 3 tokens, B 2 -> 3 ITLs."""
    _, _, metrics = run("static", [(0.0, 10, 3), (0.0, 5, 2)], knobs={"max_batch_size": "2"})
    assert metrics["itl_ms"]["mean"] == pytest.approx(5.0)
    _, _, metrics = run("continuous", [(0.0, 4, 1)])
    assert metrics["itl_ms"]["mean"] is None and metrics["tpot_ms"]["mean"] is None


def test_throughput_and_goodput():
    """A finishes at 25 ms, B at 30 ms; duration 30 ms from the first arrival."""
    _, _, m = run("continuous", [(0.0, 10, 3), (0.012, 5, 2)])
    assert m["duration_s"] == pytest.approx(0.030)
    assert m["request_throughput"] == pytest.approx(2 / 0.030)
    assert m["output_token_throughput"] == pytest.approx(5 / 0.030)
    assert m["total_token_throughput"] == pytest.approx(20 / 0.030)
    assert m["gpu_busy_fraction"] == pytest.approx(1.0)


def test_goodput_counts_requests_within_every_slo():
    from batchsim.policies.registry import get_policy, make_config
    from batchsim.sim.run import Prepared, RunSpec, simulate
    from tests.conftest import fake_profile, make_workload

    profile = fake_profile()
    pol = get_policy("continuous")(make_config("continuous", {}), profile.memory, 10**5)
    spec = RunSpec(policy="continuous", goodput={"ttft_ms": 12.0, "e2el_ms": 30.0})
    prep = Prepared(spec, profile, pol, make_workload([(0.0, 10, 3), (0.012, 5, 2)]), set())
    m = simulate(prep).metrics
    # A: TTFT 10, E2EL 25 -> good; B: TTFT 13 -> misses the TTFT SLO.
    assert m["goodput"]["good_requests"] == 1


def test_metrics_keys_are_the_documented_ones():
    _, _, m = run("continuous", [(0.0, 10, 3)])
    expected = ["num_requests", "completed", "rejected", "duration_s", "request_throughput",
                "output_token_throughput", "total_token_throughput", "ttft_ms", "tpot_ms",
                "itl_ms", "e2el_ms", "queue_ms", "gpu_busy_fraction", "prefill_time_share",
                "mean_batch_size", "max_kv_utilization", "preemptions", "profile_source"]
    assert list(m) == expected
    assert list(m["ttft_ms"]) == ["mean", "median", "p90", "p95", "p99"]


@pytest.mark.parametrize("bad", [["ttft"], ["ttfx:5"], ["ttft:abc"], ["e2el:-1"]])
def test_bad_goodput_specs(bad):
    with pytest.raises(ValueError, match="goodput"):
        parse_goodput(bad)


def test_the_itl_sample_is_sorted_once_until_its_last_reader():
    rec = _recorded()
    first = rec.itl_sample()
    assert rec.itl_sample() is first  # the metrics and itl_cdf.csv share it
    values_s, weights = rec.itl_samples()
    assert first.mean == pytest.approx(np.average(values_s * 1e3, weights=weights))
    assert rec.itl_sample(keep=False) is first and rec._itl is None  # the last reader
    assert rec.itl_sample() is not first


def _recorded():
    from batchsim.sim.run import RunSpec, prepare, simulate
    from batchsim.sim.workload.synthetic import SyntheticSpec

    out = simulate(prepare(RunSpec(policy="continuous", synthetic=SyntheticSpec(
        num_requests=40, request_rate=20.0, input_len=100, output_len=20), seed=1)))
    return out.recorder
