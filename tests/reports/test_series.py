"""Reductions from result tables to plotted points, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from batchsim.reports.series import decimate, quantile_cdf, token_rate, waiting_count


def test_cdf_quantiles_match_numpy_and_pass_through_the_metrics_percentiles():
    values = np.random.default_rng(0).lognormal(size=1001)
    x, p = quantile_cdf(np.append(values, np.nan))  # NaN (unfinished) is ignored
    assert np.allclose(x, np.quantile(values, p))
    assert x[p == 0.99][0] == pytest.approx(np.percentile(values, 99))


def test_weighted_cdf_equals_the_cdf_of_repeated_values():
    values, weights = np.array([3.0, 1.0, 2.0]), np.array([2, 5, 1])
    x, p = quantile_cdf(values, weights)
    assert np.allclose(x, np.quantile(np.repeat(values, weights), p))


def test_decimate_keeps_spikes_and_the_point_budget():
    y = np.zeros(100_000)
    y[12_345] = 50.0
    y[99_999] = -1.0
    keep = decimate(y, 1_000)
    assert len(keep) <= 1_001 and 12_345 in keep and 99_999 in keep
    assert np.all(np.diff(keep) > 0)
    assert np.array_equal(decimate(y[:10], 1_000), np.arange(10))


def test_token_rate_spreads_each_request_and_keeps_the_total():
    # one request: first token at 1 s, 10 more tokens until 3 s (5 tok/s); bins of 1 s
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    rate = token_rate(np.array([1.0]), np.array([3.0]), np.array([11]), edges)
    assert np.allclose(rate, [0.0, 1.0 + 5.0, 5.0, 0.0])
    rng = np.random.default_rng(1)
    first = rng.uniform(0, 50, 300)
    finish = first + rng.uniform(0, 5, 300)
    out = rng.integers(1, 40, 300)
    edges = np.linspace(0, 60, 121)
    assert (token_rate(first, finish, out, edges) * np.diff(edges)).sum() == pytest.approx(
        out.sum())


def test_waiting_count_counts_arrived_but_not_started():
    arrival = np.array([0.0, 1.0, 2.0])
    leave = np.array([0.5, 3.0, np.nan])  # the third never started
    t = np.array([0.0, 0.7, 1.5, 2.5, 3.5])
    assert waiting_count(arrival, leave, t).tolist() == [1, 0, 1, 2, 1]
