"""Step-time cost models: the simulator's clock advances by these predictions.

A model is a maximum of linear terms over the step-shape features (policies.base.FEATURES),
plus an optional piecewise-linear curve in one feature:
    time_s = max_k sum_i coef[k][i] * feature_i  +  curve(feature_f)
One term is a plain linear model; two capture the launch-bound floor and the compute- or
memory-bound slope that a GPU step shows. The curve captures costs that do not grow linearly in
the batch (a CPU matrix product that is twice as slow at batch 2 as at batch 1 and then nearly
flat; kernels whose cost steps with tile counts): it is zero up to its first knot, then rises
along its segments, the last one continuing beyond the last knot. Coefficients and slopes are
non-negative, so predictions grow monotonically with every feature and extrapolate sanely beyond
the measured grid. The curve's feature must not be decode_ctx_tokens, the one feature that changes
along a run of decode steps, so decode runs keep their closed form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import mul

import numpy as np

from batchsim.policies.base import FEATURES, StepShape


@dataclass(frozen=True, slots=True)
class Curve:
    """Non-decreasing piecewise-linear function of one feature: 0 up to knots[0], slope[j]
    between knots[j] and knots[j + 1], the last slope continuing beyond knots[-1]."""

    feature: int  # index into FEATURES
    knots: tuple[float, ...]  # strictly increasing, at least two
    slopes: tuple[float, ...]  # len(knots) - 1, non-negative

    def __call__(self, x: float) -> float:
        knots, total = self.knots, 0.0
        if x <= knots[0]:
            return 0.0
        last = len(self.slopes) - 1
        for j, slope in enumerate(self.slopes):
            if j < last and x >= knots[j + 1]:
                total += slope * (knots[j + 1] - knots[j])
            else:
                return total + slope * (x - knots[j])
        return total

    def of_features(self, x: np.ndarray) -> np.ndarray:
        """The curve at every row of a [N, len(FEATURES)] feature matrix."""
        return curve_basis(x[:, self.feature], self.knots) @ np.asarray(self.slopes)

    @classmethod
    def from_json(cls, data: object) -> Curve:
        if not isinstance(data, Mapping):
            raise ValueError("'curve' must be an object {feature, knots, slopes}")
        feature = data.get("feature")
        if feature not in FEATURES or feature == "decode_ctx_tokens":
            allowed = [f for f in FEATURES if f != "decode_ctx_tokens"]
            raise ValueError(f"curve feature must be one of {allowed}, got {feature!r}")
        try:
            knots = tuple(float(k) for k in data["knots"])
            slopes = tuple(float(v) for v in data["slopes"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("curve needs numeric lists 'knots' and 'slopes'") from None
        if len(knots) < 2 or any(b <= a for a, b in pairwise(knots)):
            raise ValueError(f"curve knots must be at least two, strictly increasing: {knots}")
        if len(slopes) != len(knots) - 1:
            raise ValueError(f"curve has {len(knots)} knots and {len(slopes)} slopes; "
                             "it needs one slope fewer than knots")
        if any(not math.isfinite(v) or v < 0 for v in (*knots, *slopes)):
            raise ValueError("curve knots and slopes must be finite and slopes non-negative")
        return cls(FEATURES.index(feature), knots, slopes)

    def to_json(self) -> dict[str, object]:
        return {"feature": FEATURES[self.feature], "knots": list(self.knots),
                "slopes": list(self.slopes)}


def curve_basis(values: np.ndarray, knots: Sequence[float] | np.ndarray) -> np.ndarray:
    """[N, len(knots) - 1] segment lengths covered by each value: curve(v) = basis(v) @ slopes."""
    v = np.asarray(values, dtype=np.float64)[:, None]
    lo = np.asarray(knots[:-1], dtype=np.float64)[None, :]
    width = np.diff(np.asarray(knots, dtype=np.float64))[None, :]
    width[0, -1] = np.inf  # the last segment continues beyond the last knot
    return np.clip(v - lo, 0.0, width)


@dataclass(frozen=True, slots=True)
class CostModel:
    """max over terms of a linear function of the step's features, plus an optional curve."""

    terms: tuple[tuple[float, ...], ...]  # [num_terms][len(FEATURES)]
    curve: Curve | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> CostModel:
        curve = Curve.from_json(data["curve"]) if data.get("curve") is not None else None
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
        return cls(tuple(terms), curve)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "terms": [
                {name: c for name, c in zip(FEATURES, term, strict=True) if c != 0.0}
                for term in self.terms
            ]
        }
        if self.curve is not None:
            out["curve"] = self.curve.to_json()
        return out

    def predict(self, shape: StepShape) -> float:
        """Seconds for one step of this shape."""
        x = shape.features()
        if len(self.terms) == 1:
            t = sum(map(mul, self.terms[0], x))
        else:
            t = max([sum(map(mul, term, x)) for term in self.terms])
        if self.curve is not None:
            t += self.curve(x[self.curve.feature])
        return t

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Seconds for each row of a [N, len(FEATURES)] feature matrix."""
        t = np.max(np.asarray(self.terms) @ x.T, axis=0)
        if self.curve is not None:
            t = t + self.curve.of_features(x)
        return t

    def predict_decode_run(self, shape: StepShape, num_steps: int,
                           stop_s: float = float("inf")) -> list[float]:
        """Durations of up to num_steps decode steps starting at `shape`, each context one token
        longer, stopping after the first step whose cumulative end reaches stop_s.

        Only decode_ctx_tokens changes between repeats (by num_decode_seqs per step), so each
        term is a line in the step index j. When one line is the maximum at both ends of the run
        it is the maximum throughout (their difference is linear), the durations are an
        arithmetic progression and the stopping step has a closed form: no per-token work.
        """
        if len(self.terms) == 1 and self.curve is None:  # one line: the closed form
            term = self.terms[0]
            b, s = sum(map(mul, term, shape.features())), term[_CTX] * shape.num_decode_seqs
            if stop_s != float("inf"):
                num_steps = min(num_steps, _steps_to_reach(b, s, stop_s))
            return _progression(b, s, num_steps)
        lines = self._run_lines(shape)
        last = num_steps - 1
        b, s = max(lines)
        if max(lines, key=lambda line: line[0] + line[1] * last) != (b, s) and (
                max(line[0] + line[1] * last for line in lines) > b + s * last):
            durations = _run_array(lines, num_steps)
            if stop_s != float("inf"):
                cut = int(np.searchsorted(np.cumsum(durations), stop_s, side="left")) + 1
                durations = durations[:cut]
            return durations.tolist()
        n = num_steps if stop_s == float("inf") else min(num_steps, _steps_to_reach(b, s, stop_s))
        return _progression(b, s, n)

    def decode_run_array(self, shape: StepShape, num_steps: int) -> np.ndarray:
        """The durations predict_decode_run gives for num_steps steps with no stop, as an array
        (for the simulator's jittered runs, which need them all to multiply)."""
        return _run_array(self._run_lines(shape), num_steps)

    def _run_lines(self, shape: StepShape) -> list[tuple[float, float]]:
        """Each term along a run of decode steps from `shape`: (duration at step 0, growth per
        step); the curve's feature does not change along the run, so it only lifts them."""
        x = shape.features()
        lift = self.curve(x[self.curve.feature]) if self.curve is not None else 0.0
        return [(sum(map(mul, term, x)) + lift, term[_CTX] * shape.num_decode_seqs)
                for term in self.terms]


def _progression(b: float, s: float, n: int) -> list[float]:
    """[b + s*j for j < n]; numpy (the same two float operations per step) for long runs."""
    if n > 32:
        return (b + s * np.arange(n, dtype=np.float64)).tolist()
    return [b + s * j for j in range(n)]


def _run_array(lines: list[tuple[float, float]], num_steps: int) -> np.ndarray:
    """Durations of num_steps steps: at step j the largest of b + s*j over the lines."""
    steps = np.arange(num_steps, dtype=np.float64)
    if len(lines) == 1:
        b, s = lines[0]
        return b + s * steps
    return np.max([b + s * steps for b, s in lines], axis=0)


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
