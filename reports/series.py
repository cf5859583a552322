"""Result tables → the few numbers a figure needs.

A 200,000-request run has 200k requests and ~190k steps; shipping them raw into a page makes a
slow, 20 MB file. Everything here reduces a column to what the eye can use: a CDF as a few hundred
quantiles, a per-step series cut to at most `max_points` points (keeping each bucket's extremes, so
spikes survive), rates in time bins. Pure numpy: no plotting, no I/O.
"""

from __future__ import annotations

import numpy as np

from batchsim.sim.samples import SortedSample

# Probability grid of a CDF: every half percent, then finer in the tail where p99 lives.
CDF_PROBS = np.unique(np.concatenate((np.linspace(0.0, 0.99, 199), np.linspace(0.99, 1.0, 21))))

# Per-step series above this many points are decimated (the page says so).
MAX_POINTS = 50_000


def quantile_cdf(values: np.ndarray, weights: np.ndarray | None = None,
                 probs: np.ndarray = CDF_PROBS) -> tuple[np.ndarray, np.ndarray]:
    """(x, p): the p-quantiles of the finite values (weighted: each value counts weight times).

    Quantiles interpolate linearly between samples, as np.quantile and sim.metrics do, so the
    curve passes through the p50/p99 printed in metrics.json. Empty input gives empty arrays.
    """
    return sample_cdf(SortedSample(values, weights), probs)


def sample_cdf(sample: SortedSample, probs: np.ndarray = CDF_PROBS) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """quantile_cdf of a sample sorted already."""
    if not len(sample):
        return np.zeros(0), np.zeros(0)
    return sample.quantiles(probs), probs.copy()


def decimate(y: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most max_points samples of y: each bucket's minimum and maximum, in order.

    Plain striding would drop the rare long prefill step that a timeline is read for; keeping
    both extremes of every bucket keeps the envelope of the series.
    """
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    size = int(np.ceil(n / (max_points // 2)))
    num = n // size
    body = np.asarray(y[: num * size]).reshape(num, size)
    base = np.arange(num) * size
    picks = np.concatenate((base + body.argmin(axis=1), base + body.argmax(axis=1)))
    if num * size < n:  # the ragged tail: keep its last point
        picks = np.append(picks, n - 1)
    return np.unique(picks)


def bin_edges(t0: float, t1: float, max_bins: int = 400) -> np.ndarray:
    """Equal time bins over [t0, t1] (at least one bin, even for an empty span)."""
    num = max(1, max_bins)
    return np.linspace(t0, t1 if t1 > t0 else t0 + 1.0, num + 1)


def event_rate(times: np.ndarray, edges: np.ndarray,
               weights: np.ndarray | None = None) -> np.ndarray:
    """Events (or weighted events) per second in each bin."""
    keep = np.isfinite(times)
    counts, _ = np.histogram(times[keep], bins=edges,
                             weights=None if weights is None else weights[keep])
    return counts / np.diff(edges)


def token_rate(first_token_s: np.ndarray, finish_s: np.ndarray, output_tokens: np.ndarray,
               edges: np.ndarray) -> np.ndarray:
    """Output tokens per second in each bin, each request's tokens spread evenly over its decode.

    Request i produces one token at first_token_s and out-1 more at a constant rate until
    finish_s. The cumulative count at time t is then a sum of ramps, evaluated at every bin edge
    from sorted cumulative sums (O((N + B) log N), no N×B matrix); binning its differences gives
    the rate. Exact in total; within a request it smooths over the real step-by-step timing.
    """
    # Each per-request array is dropped once used (`del`): at a million requests each is 8 MB,
    # and a report's peak memory is this function's.
    ok = np.isfinite(first_token_s) & np.isfinite(finish_s)
    start, end = first_token_s[ok], finish_s[ok]
    rest = (output_tokens[ok] - 1).astype(np.float64)
    del ok
    span = end - start
    slope = np.divide(rest, span, out=np.zeros_like(rest), where=span > 0)
    # instantaneous requests (span 0) put their remaining tokens at the first token's time
    jump = np.where(span > 0, 1.0, 1.0 + rest)
    del rest, span

    def ramp_sum(points: np.ndarray, rates: np.ndarray, t: np.ndarray) -> np.ndarray:
        """sum_j rates_j * max(0, t - points_j) for every t."""
        order = np.argsort(points)
        p, r = points[order], rates[order]
        del order
        k = np.searchsorted(p, t, side="right")
        crp = np.concatenate(([0.0], np.cumsum(r * p)))
        del p
        cr = np.concatenate(([0.0], np.cumsum(r)))
        return t * cr[k] - crp[k]

    order = np.argsort(start)
    cjump = np.concatenate(([0.0], np.cumsum(jump[order])))
    del jump
    # tokens strictly before each edge: a token on an edge belongs to the bin it starts
    steps = cjump[np.searchsorted(start[order], edges, side="left")]
    del order, cjump
    total = steps + ramp_sum(start, slope, edges) - ramp_sum(end, slope, edges)
    return np.diff(total) / np.diff(edges)


def waiting_count(arrival_s: np.ndarray, leave_s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Requests waiting at each time t: arrived at or before t and not yet left (leave_s > t).

    leave_s is when the request's first prefill started (NaN: never, it waits to the end).
    """
    arrived = np.searchsorted(np.sort(arrival_s), t, side="right")
    left_times = np.sort(leave_s[np.isfinite(leave_s)])
    left = np.searchsorted(left_times, t, side="right")
    return arrived - left
