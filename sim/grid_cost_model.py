"""Grid cost models: step time as a sum of small tables, each interpolated multilinearly.

For profiles whose step time is composed from measured per-operator tables (an imported
LLMServingSim profile, profiler/imported/), whose shape no max-of-linear form follows closely:

    time_s = sum over terms of  table_t(coordinate_1, ..., coordinate_d)      (d = 1..4)

Each table holds values on a product grid of knots; between knots it is multilinear, below the
first knot of an axis it is the first knot's value, beyond the last it continues the last
segment with a non-negative slope, so predictions never fall as a step grows past the grid.
The coordinates are functions of the step shape (COORDINATES); only `decode_ctx_mean` changes
along a run of decode steps (one token per step), so a run's durations are one vectorised
evaluation, and the cut at stop_s a cumulative sum.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, product

import numpy as np

from batchsim.policies.base import StepShape


def _prefill_prefix(s: StepShape) -> float:
    """Cached tokens before the step's prefill chunk, read from its causal pairs as if it were one
    chunk: pairs = n * (prefix + (n + 1) / 2). Several fresh prompts give 0."""
    n = s.num_prefill_tokens
    return max(0.0, s.prefill_attn_pairs / n - (n + 1) / 2) if n else 0.0


def _decode_ctx_mean(s: StepShape) -> float:
    return s.decode_ctx_tokens / s.num_decode_seqs if s.num_decode_seqs else 0.0


COORDINATES: dict[str, Callable[[StepShape], float]] = {
    "num_tokens": lambda s: float(s.num_prefill_tokens + s.num_decode_seqs),
    "num_seqs": lambda s: float(s.num_seqs),
    "num_prefill_tokens": lambda s: float(s.num_prefill_tokens),
    "num_decode_seqs": lambda s: float(s.num_decode_seqs),
    "prefill_prefix": _prefill_prefix,
    "decode_ctx_mean": _decode_ctx_mean,
}
_RUN_COORDINATE = "decode_ctx_mean"  # the one that changes along a run of decode steps


@dataclass(frozen=True)
class GridTerm:
    """One table: values[i1, ..., id] at knots[0][i1], ..., knots[d-1][id] (row-major)."""

    coordinates: tuple[str, ...]
    knots: tuple[tuple[float, ...], ...]
    values: tuple[float, ...]  # seconds, flattened row-major
    _strides: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _index: tuple[int, ...] = field(init=False, repr=False, compare=False)  # into COORDINATES
    _array: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.coordinates) <= 4 or len(self.knots) != len(self.coordinates):
            raise ValueError("a grid term needs 1-4 coordinates, one knot list each")
        unknown = [c for c in self.coordinates if c not in COORDINATES]
        if unknown:
            raise ValueError(f"unknown grid coordinates {unknown}; known: {list(COORDINATES)}")
        for axis in self.knots:
            if not axis or any(b <= a for a, b in pairwise(axis)):
                raise ValueError(f"grid knots must be non-empty and strictly increasing: {axis}")
        size = math.prod(len(axis) for axis in self.knots)
        if len(self.values) != size:
            raise ValueError(f"grid term has {len(self.values)} values for {size} knots")
        if any(not math.isfinite(v) or v < 0 for v in self.values):
            raise ValueError("grid values must be finite and non-negative")
        strides, stride = [], 1
        for axis in reversed(self.knots):
            strides.append(stride)
            stride *= len(axis)
        object.__setattr__(self, "_strides", tuple(reversed(strides)))
        names = list(COORDINATES)
        object.__setattr__(self, "_index", tuple(names.index(c) for c in self.coordinates))
        object.__setattr__(self, "_array", np.asarray(self.values, dtype=np.float64).reshape(
            [len(axis) for axis in self.knots]))

    def __call__(self, point: Sequence[float]) -> float:
        """The table at one point (one value per coordinate). Called once per simulated step:
        unrolled for one and two coordinates, a corner loop beyond."""
        v = self.values
        if len(self.knots) == 1:
            i, t = _bracket(self.knots[0], point[0])
            a = v[i]
            return max(a + t * (v[i + 1] - a), 0.0) if t else a
        if len(self.knots) == 2:
            i, t = _bracket(self.knots[0], point[0])
            j, u = _bracket(self.knots[1], point[1])
            s0 = self._strides[0]
            base = i * s0 + j
            a = v[base]
            b = v[base + 1] if u else a
            lo = a + u * (b - a)
            if not t:
                return max(lo, 0.0)
            c = v[base + s0]
            d = v[base + s0 + 1] if u else c
            return max(lo + t * (c + u * (d - c) - lo), 0.0)
        if len(self.knots) == 4:
            return self._call4(point)
        offsets, ts = [0], []
        for axis, stride, x in zip(self.knots, self._strides, point, strict=True):
            i, t = _bracket(axis, x)
            offsets = [o + i * stride for o in offsets]
            if t != 0.0:
                offsets += [o + stride for o in offsets]
                ts.append(t)
        vals = [v[o] for o in offsets]
        for t in reversed(ts):  # fold the axes back, last added first
            half = len(vals) // 2
            vals = [a + t * (b - a) for a, b in zip(vals[:half], vals[half:], strict=True)]
        return max(vals[0], 0.0)

    def _call4(self, point: Sequence[float]) -> float:
        """Four coordinates unrolled: 16 corners, folded one axis at a time."""
        k0, k1, k2, k3 = self.knots
        i0, t0 = _bracket(k0, point[0])
        i1, t1 = _bracket(k1, point[1])
        i2, t2 = _bracket(k2, point[2])
        i3, t3 = _bracket(k3, point[3])
        s0, s1, s2, _ = self._strides
        # a single-knot axis has no upper corner: step 0 reads the same value (t is 0 there)
        d0, d1, d2, d3 = (s0 if len(k0) > 1 else 0, s1 if len(k1) > 1 else 0,
                          s2 if len(k2) > 1 else 0, 1 if len(k3) > 1 else 0)
        v = self.values
        b = i0 * s0 + i1 * s1 + i2 * s2 + i3
        out = []
        for o0 in (b, b + d0):
            for o1 in (o0, o0 + d1):
                lo = v[o1] + t3 * (v[o1 + d3] - v[o1])
                hi = v[o1 + d2] + t3 * (v[o1 + d2 + d3] - v[o1 + d2])
                out.append(lo + t2 * (hi - lo))
        lo = out[0] + t1 * (out[1] - out[0])
        hi = out[2] + t1 * (out[3] - out[2])
        return max(lo + t0 * (hi - lo), 0.0)

    def along_last(self, point: Sequence[float], num_steps: int) -> np.ndarray:
        """The table at point, point + (0, .., 1), ..., point + (0, .., num_steps - 1): the
        other axes blend one row of the last axis, which np.interp then walks (a run of decode
        steps, whose mean context grows by one token per step)."""
        row = np.zeros(len(self.knots[-1]))
        corners: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
        for axis, x in zip(self.knots[:-1], point[:-1], strict=True):
            i, t = _bracket(axis, x)
            corners = [((*idx, i), w) for idx, w in corners] if t == 0.0 else [
                c for idx, w in corners for c in (((*idx, i), w * (1 - t)),
                                                  ((*idx, i + 1), w * t))]
        for idx, w in corners:
            row += w * self._array[idx]
        knots = self.knots[-1]
        ctx = point[-1] + np.arange(num_steps, dtype=np.float64)
        out = np.interp(ctx, knots, row)
        if len(knots) > 1 and ctx[-1] > knots[-1]:  # the last segment continues
            slope = (row[-1] - row[-2]) / (knots[-1] - knots[-2])
            beyond = ctx > knots[-1]
            out[beyond] = row[-1] + slope * (ctx[beyond] - knots[-1])
        return np.maximum(out, 0.0)

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        """The table at every row of a [N, d] array of points."""
        out = np.zeros(points.shape[0])
        index, weight = [], []
        for j, axis in enumerate(self.knots):
            i, t = _bracket_array(np.asarray(axis), points[:, j])
            index.append(i)
            weight.append(t)
        for bits in product((0, 1), repeat=len(self.knots)):
            w = np.ones(points.shape[0])
            idx = []
            for b, i, t, axis in zip(bits, index, weight, self.knots, strict=True):
                w = w * (t if b else 1.0 - t)
                idx.append(np.minimum(i + b, len(axis) - 1))
            out += w * self._array[tuple(idx)]
        return np.maximum(out, 0.0)

    def to_json(self) -> dict[str, object]:
        return {"coordinates": list(self.coordinates), "knots": [list(a) for a in self.knots],
                "values_s": list(self.values)}

    @classmethod
    def from_json(cls, data: object) -> GridTerm:
        if not isinstance(data, Mapping):
            raise ValueError("a grid term must be an object {coordinates, knots, values_s}")
        try:
            coords = tuple(str(c) for c in data["coordinates"])
            knots = tuple(tuple(float(k) for k in axis) for axis in data["knots"])
            values = tuple(float(v) for v in data["values_s"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("a grid term needs lists 'coordinates', 'knots', 'values_s'") from None
        return cls(coords, knots, values)


def _bracket(axis: Sequence[float], x: float) -> tuple[int, float]:
    """(i, t): x sits at axis[i] + t * (axis[i + 1] - axis[i]). Clamped below the first knot;
    beyond the last, the last segment continues (t > 1); tables built with monotone_tail
    never decrease there."""
    n = len(axis)
    if n == 1 or x <= axis[0]:
        return 0, 0.0
    i = bisect_right(axis, x) - 1
    if i >= n - 1:
        i = n - 2
    t = (x - axis[i]) / (axis[i + 1] - axis[i])
    return i, t


def _bracket_array(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(axis) == 1:
        return np.zeros(len(x), dtype=np.int64), np.zeros(len(x))
    i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
    t = np.where(x <= axis[0], 0.0, (x - axis[i]) / (axis[i + 1] - axis[i]))
    return i, t


def monotone_tail(values: np.ndarray) -> np.ndarray:
    """Values with the last segment of every axis made non-decreasing (the last knot's value
    raised to the one before it where it falls), so linear extrapolation never decreases."""
    out = np.array(values, dtype=np.float64)
    for axis in range(out.ndim):
        if out.shape[axis] < 2:
            continue
        last: list[slice | int] = [slice(None)] * out.ndim
        prev: list[slice | int] = [slice(None)] * out.ndim
        last[axis], prev[axis] = -1, -2
        out[tuple(last)] = np.maximum(out[tuple(last)], out[tuple(prev)])
    return out


@dataclass(frozen=True)
class GridCostModel:
    """Sum of grid terms (see the module docstring). Same interface as sim.cost_model.CostModel:
    predict, predict_decode_run, decode_run_array (plus predict_shapes and scaled)."""

    grid_terms: tuple[GridTerm, ...]

    def __post_init__(self) -> None:
        if not self.grid_terms:
            raise ValueError("a grid cost model needs at least one term")

    def predict(self, shape: StepShape) -> float:
        """Seconds for one step of this shape."""
        npt, nds = shape.num_prefill_tokens, shape.num_decode_seqs
        # in COORDINATES order (a test checks they agree)
        coords = (npt + nds, shape.num_seqs, npt, nds,
                  max(0.0, shape.prefill_attn_pairs / npt - (npt + 1) / 2) if npt else 0.0,
                  shape.decode_ctx_tokens / nds if nds else 0.0)
        total = 0.0
        for term in self.grid_terms:
            total += term([coords[i] for i in term._index])
        return total

    def predict_shapes(self, shapes: Sequence[StepShape]) -> np.ndarray:
        """Seconds for each shape (vectorised)."""
        out = np.zeros(len(shapes))
        for term in self.grid_terms:
            pts = np.array([[COORDINATES[c](s) for c in term.coordinates] for s in shapes],
                           dtype=np.float64).reshape(len(shapes), len(term.coordinates))
            out += term.evaluate(pts)
        return out

    def decode_run_array(self, shape: StepShape, num_steps: int) -> np.ndarray:
        """Durations of num_steps decode steps from `shape`, each context one token longer."""
        base = 0.0
        out = np.zeros(num_steps)
        for term in self.grid_terms:
            point = [COORDINATES[c](shape) for c in term.coordinates]
            if _RUN_COORDINATE not in term.coordinates:
                base += term(point)
            elif term.coordinates[-1] == _RUN_COORDINATE:
                out += term.along_last(point, num_steps)
            else:
                pts = np.tile(np.asarray(point, dtype=np.float64), (num_steps, 1))
                pts[:, term.coordinates.index(_RUN_COORDINATE)] += np.arange(num_steps)
                out += term.evaluate(pts)
        return out + base

    def predict_decode_run(self, shape: StepShape, num_steps: int,
                           stop_s: float = float("inf")) -> list[float]:
        """Durations of up to num_steps decode steps, stopping after the first step whose
        cumulative end reaches stop_s (as CostModel.predict_decode_run)."""
        if num_steps <= 4:  # a few steps: scalar predictions beat numpy's per-call cost
            nds, ctx = shape.num_decode_seqs, shape.decode_ctx_tokens
            out: list[float] = []
            end = 0.0
            for j in range(num_steps):
                d = self.predict(shape._replace(decode_ctx_tokens=ctx + j * nds))
                out.append(d)
                end += d
                if end >= stop_s:
                    break
            return out
        durations = self.decode_run_array(shape, num_steps)
        if stop_s != float("inf"):
            cut = int(np.searchsorted(np.cumsum(durations), stop_s, side="left")) + 1
            durations = durations[:cut]
        return durations.tolist()

    def scaled(self, factor: float) -> GridCostModel:
        """The same model with every time multiplied by factor (a slower or faster machine)."""
        return GridCostModel(tuple(GridTerm(t.coordinates, t.knots,
                                            tuple(v * factor for v in t.values))
                                   for t in self.grid_terms))

    def to_json(self) -> dict[str, object]:
        return {"kind": "grid", "grid_terms": [t.to_json() for t in self.grid_terms]}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> GridCostModel:
        raw = data.get("grid_terms")
        if not isinstance(raw, list) or not raw:
            raise ValueError("'grid_terms' must be a non-empty list")
        return cls(tuple(GridTerm.from_json(t) for t in raw))
