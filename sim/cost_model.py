"""Step-time cost models: the simulator's clock advances by these predictions.

A model is a maximum of linear terms over the step-shape features (policies.base.FEATURES):
    time_s = max_k sum_i coef[k][i] * feature_i
One term is a plain linear model; two capture the launch-bound floor and the compute- or
memory-bound slope that a GPU step shows. Coefficients are non-negative, so predictions grow
monotonically with every feature and extrapolate sanely beyond the measured grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
            coef = tuple(float(term.get(name, 0.0)) for name in FEATURES)  # type: ignore[arg-type]
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
        return max(sum(c * v for c, v in zip(term, x)) for term in self.terms)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Seconds for each row of a [N, len(FEATURES)] feature matrix."""
        return np.max(np.asarray(self.terms) @ x.T, axis=0)

    def predict_decode_run(self, shape: StepShape, num_steps: int) -> np.ndarray:
        """Durations of num_steps decode steps starting at `shape`, each context one token longer.

        Only decode_ctx_tokens changes between repeats (by num_decode_seqs per step), so each
        term is linear in the step index: no per-token work.
        """
        x = shape.features()
        steps = np.arange(num_steps, dtype=np.float64)
        ctx_index = FEATURES.index("decode_ctx_tokens")
        out = np.full(num_steps, -np.inf)
        for term in self.terms:
            base = sum(c * v for c, v in zip(term, x))
            slope = term[ctx_index] * shape.num_decode_seqs
            np.maximum(out, base + slope * steps, out=out)
        return out


def phase_key(layout: str, phase: str, device: str = "gpu") -> str:
    """Name of the cost model for a step: 'packed.decode', 'padded.prefill', 'cpu.packed.prefill'."""
    key = f"{layout}.{phase}"
    return key if device == "gpu" else f"{device}.{key}"


REQUIRED_MODELS: Sequence[str] = (
    "packed.prefill",
    "packed.decode",
    "packed.mixed",
    "padded.prefill",
    "padded.decode",
)
