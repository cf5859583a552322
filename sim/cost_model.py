"""Step-time cost models: the simulator's clock advances by these predictions.

A model is a maximum of linear terms over the step-shape features (policies.base.FEATURES):
    time_s = max_k sum_i coef[k][i] * feature_i
One term is a plain linear model; two capture the launch-bound floor and the compute- or
memory-bound slope that a GPU step shows. Coefficients are non-negative, so predictions grow
monotonically with every feature and extrapolate sanely beyond the measured grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import mul

import numpy as np

from policies.base import FEATURES, StepShape


@dataclass(frozen=True, slots=True)
class CostModel:
    """max over terms of a linear function of the step's features."""

    terms: tuple[tuple[float, ...], ...]  # [num_terms][len(FEATURES)]

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> CostModel:
        raw_terms = data["terms"]
        if not isinstance(raw_terms, list) or not raw_terms:
            raise ValueError("'terms' must be a non-empty list")
        terms = []
        for term in raw_terms:
            if not isinstance(term, Mapping):
                raise ValueError("each term must be an object of feature: coefficient")
            unknown = set(term) - set(FEATURES)
            if unknown:
                raise ValueError(f"unknown features {sorted(unknown)}; known: {list(FEATURES)}")
            coef = tuple(float(term.get(name, 0.0)) for name in FEATURES)
            if any(not np.isfinite(c) or c < 0 for c in coef):
                raise ValueError(f"coefficients must be finite and non-negative, got {coef}")
            terms.append(coef)
        return cls(tuple(terms))

    def to_json(self) -> dict[str, object]:
        return {
            "terms": [
                {name: c for name, c in zip(FEATURES, term, strict=True) if c != 0.0}
                for term in self.terms
            ]
        }

    def predict(self, shape: StepShape) -> float:
        """Seconds for one step of this shape."""
        x = shape.features()
        if len(self.terms) == 1:
            return sum(map(mul, self.terms[0], x))
        return max([sum(map(mul, term, x)) for term in self.terms])

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Seconds for each row of a [N, len(FEATURES)] feature matrix."""
        return np.max(np.asarray(self.terms) @ x.T, axis=0)

    def predict_decode_run(self, shape: StepShape, num_steps: int,
                           stop_s: float = float("inf")) -> list[float]:
        """Durations of up to num_steps decode steps starting at `shape`, each context one token
        longer, stopping after the first step whose cumulative end reaches stop_s.

        Only decode_ctx_tokens changes between repeats (by num_decode_seqs per step), so each
        term is a line in the step index j. When one line is the maximum at both ends of the run
        it is the maximum throughout (their difference is linear), the durations are an
        arithmetic progression and the stopping step has a closed form: no per-token work.
        """
        x = shape.features()
        lines = [(sum(map(mul, term, x)), term[_CTX] * shape.num_decode_seqs)
                 for term in self.terms]
        last = num_steps - 1
        b, s = max(lines)
        if max(lines, key=lambda line: line[0] + line[1] * last) != (b, s) and (
                max(line[0] + line[1] * last for line in lines) > b + s * last):
            return self._crossing_run(lines, num_steps, stop_s)
        n = num_steps if stop_s == float("inf") else min(num_steps, _steps_to_reach(b, s, stop_s))
        return [b + s * j for j in range(n)]

    @staticmethod
    def _crossing_run(lines: list[tuple[float, float]], num_steps: int,
                      stop_s: float) -> list[float]:
        steps = np.arange(num_steps, dtype=np.float64)
        durations = np.max([b + s * steps for b, s in lines], axis=0)
        if stop_s != float("inf"):
            cut = int(np.searchsorted(np.cumsum(durations), stop_s, side="left")) + 1
            durations = durations[:cut]
        return durations.tolist()


def _steps_to_reach(b: float, s: float, stop_s: float) -> int:
    """Smallest m >= 1 with sum_{j<m} (b + s*j) >= stop_s."""

    def total(m: int) -> float:
        return m * b + s * m * (m - 1) / 2

    if s > 0:
        m = math.ceil((-(b - s / 2) + math.sqrt((b - s / 2) ** 2 + 2 * s * stop_s)) / s)
    else:
        m = math.ceil(stop_s / b)
    m = max(m, 1)
    while m > 1 and total(m - 1) >= stop_s:  # float rounding: settle on the exact boundary
        m -= 1
    while total(m) < stop_s:
        m += 1
    return m


_CTX = FEATURES.index("decode_ctx_tokens")


def phase_key(layout: str, phase: str, device: str = "gpu") -> str:
    """Cost model of a step: 'packed.decode', 'padded.prefill', 'cpu.packed.prefill'."""
    key = f"{layout}.{phase}"
    return key if device == "gpu" else f"{device}.{key}"


REQUIRED_MODELS: Sequence[str] = (
    "packed.prefill",
    "packed.decode",
    "packed.mixed",
    "padded.prefill",
    "padded.decode",
)
