"""A weighted sample sorted once, for every percentile and quantile read from it.

A run's inter-token latencies are ~1.5M weighted values on an hour's trace; the summary
metrics, itl_cdf.csv and the report each read percentiles or quantiles of them, and sorting
them is most of that cost (a stable argsort of the hour's 1.58M takes ~0.1 s: numpy's stable sort
finds the sorted stretches a decode run's growing step times leave, where its quicksort took
twice as long), so one sort serves all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SortedSample:
    """The finite values of positive weight, sorted, with their cumulative weights and mean.
    Percentiles interpolate linearly between samples, as numpy's default and vllm bench do:
    each value counts weight times."""

    __slots__ = ("cum", "mean", "values")

    def __init__(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        values = np.asarray(values, dtype=np.float64)
        w = (np.ones(len(values), dtype=np.int64) if weights is None
             else np.asarray(weights, dtype=np.int64))
        keep = np.isfinite(values) & (w > 0)
        if not keep.all():
            values, w = values[keep], w[keep]
        # the mean over the values in their own order (the figure metrics.json always held)
        self.mean = float(np.average(values, weights=w)) if len(values) else None
        order = np.argsort(values, kind="stable")
        self.values = values[order]
        self.cum = np.cumsum(w[order])

    def __len__(self) -> int:
        return len(self.values)

    def percentiles(self, percents: Sequence[float]) -> list[float]:
        """np.percentile(np.repeat(values, weights), percents) without the repeat."""
        return self.quantiles(np.asarray(percents, dtype=np.float64) / 100).tolist()

    def quantiles(self, probs: np.ndarray) -> np.ndarray:
        """The probs-quantiles (probabilities in [0, 1]), vectorized; empty if the sample is."""
        if not len(self.values):
            return np.zeros(0)
        v, cum = self.values, self.cum
        rank = probs * (cum[-1] - 1)  # position in the virtual repeated, sorted sample
        lo, hi = np.floor(rank), np.ceil(rank)
        v_lo = v[np.searchsorted(cum, lo, side="right")]
        v_hi = v[np.searchsorted(cum, hi, side="right")]
        return v_lo + (v_hi - v_lo) * (rank - lo)


class ItlSampleCache:
    """For the recorders summarize and the report read (the simulator's and a real engine's
    `Recorder`, a cluster's pooled record, a bench client's times): `itl_sample()`, their
    `itl_samples()` in ms as a SortedSample, sorted once and kept until the recording changes
    (`_itl = None`) or a last reader lets it go (keep=False: ~12 MB at a million requests)."""

    _itl: SortedSample | None = None

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Every inter-token latency in seconds, and its weight (how many gaps it stands for)."""
        raise NotImplementedError

    def itl_sample(self, keep: bool = True) -> SortedSample:
        sample = self._itl
        if sample is None:
            values_s, weights = self.itl_samples()
            sample = SortedSample(values_s * 1e3, weights)
        self._itl = sample if keep else None
        return sample
