"""Step-time jitter: the spread of a measured step around the cost model's prediction.

A cost model predicts the median time of a step shape (the profiler times every grid point
several times and keeps the median). Real steps scatter around it: on the development CPU the
repeats of one shape have a coefficient of variation near 10% and a 99th percentile 1.2-1.25x
the median. Pricing every step at the median leaves inter-token-latency tails too short and the
mean step time slightly low (the scatter is skewed to the right).

With jitter on, GPU step k costs prediction x f_k, where f_k is drawn from the profile's own
repeats: every sample of every grid point of that cost model divided by its point's median (an
empirical distribution with median 1). The draws are u_k ~ U(0, 1) from one seeded stream
indexed by the step number, mapped through that distribution's quantiles, so a run is
reproducible and a fast-forwarded run of decode steps draws exactly what stepping one by one
would. Steps are independent: this models the fast scatter between consecutive steps, not a
machine whose speed drifts over minutes.

The CPU path of the hybrid policy is priced without jitter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

_CHUNK = 4096
_SEED_SALT = 0x6A177E5  # keeps the jitter stream apart from the workload's stream of the same seed


def repeat_ratios(points: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per cost model key, the sorted ratios sample / median of every raw point's repeats.
    Points without samples (analytic profiles, old files) contribute nothing."""
    by_key: dict[str, list[np.ndarray]] = {}
    for p in points:
        samples = np.asarray(p.get("samples_s") or (), dtype=np.float64)
        samples = samples[np.isfinite(samples) & (samples > 0)]
        if len(samples) < 3:
            continue
        by_key.setdefault(str(p["model"]), []).append(samples / np.median(samples))
    return {key: np.sort(np.concatenate(parts)) for key, parts in by_key.items()}


class StepJitter:
    """Multiplicative factors for GPU steps, drawn from the profile's repeat ratios."""

    def __init__(self, ratios: Mapping[str, np.ndarray], seed: int) -> None:
        if not ratios:
            raise ValueError("no repeat samples to draw jitter from")
        self.ratios = dict(ratios)
        self._pooled = np.sort(np.concatenate(list(self.ratios.values())))
        self._rng = np.random.default_rng([seed, _SEED_SALT])
        self._base = 0  # step number of self._u[0]
        self._u = np.empty(0)
        self.step = 0  # the next GPU step's number

    def take(self, key: str, n: int) -> np.ndarray:
        """Factors for the next n GPU steps of cost model `key`; does not advance the stream
        (call `advance` with the number of steps that ran)."""
        end = self.step + n
        while self._base + len(self._u) < end:  # draw in fixed chunks: same stream however read
            keep = self._u[self.step - self._base:]
            self._base = self.step
            self._u = np.concatenate((keep, self._rng.random(_CHUNK)))
        u = self._u[self.step - self._base:end - self._base]
        table = self.ratios.get(key, self._pooled)
        return table[(u * len(table)).astype(np.int64)]

    def advance(self, n: int) -> None:
        self.step += n

    def summary(self) -> dict[str, Any]:
        """What the run's config.json records about the jitter it drew from."""
        return {key: {"samples": len(r), "p50": _q(r, 0.5), "p90": _q(r, 0.9), "p99": _q(r, 0.99),
                      "mean": round(float(r.mean()), 4)}
                for key, r in sorted(self.ratios.items())}


def _q(r: np.ndarray, q: float) -> float:
    return round(float(np.quantile(r, q)), 4)
