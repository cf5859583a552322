"""Fit step-time cost models to measured grid points, choosing the model by cross-validation.

numpy + scipy only: the simulator side may refit a profile's raw points without torch.

Each cost-model key has a few physically shaped candidates (prefill: const + tokens + causal
attention pairs; decode: const + sequences + KV tokens read; ...), each either one linear term,
``max(floor, linear)`` (a GPU step is launch-bound, flat, until the batch is large enough to be
compute- or memory-bound) or linear plus a non-decreasing piecewise-linear curve in the batch
(sequences or tokens) with knots at the measured batch values: matrix-product libraries switch
kernels with the batch, so cost is often neither linear nor convex in it (on one CPU thread a
0.5B model's decode costs about twice as much at batch 2 as at batch 1, then little more up to
batch 32). Coefficients are non-negative, so every fitted model is monotone
non-decreasing in every feature and extrapolates sanely beyond the grid. The fit minimises
relative squared error (rows weighted by 1/y), because short and long steps matter equally to a
latency prediction. The candidate with the lowest k-fold cross-validated MAPE on held-out points
wins; ties go to the simpler candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from batchsim.policies.base import FEATURES, StepShape
from batchsim.sim.cost_model import CostModel, Curve, curve_basis

# A candidate must beat a simpler one by this much CV MAPE (absolute) to be chosen.
SIMPLER_MARGIN = 0.002
# A curve has at most this many knots (quantiles of the measured values beyond it).
MAX_KNOTS = 12


@dataclass(frozen=True)
class Candidate:
    """A model form: the features of its linear term, optionally under a constant floor."""

    name: str
    features: tuple[str, ...]
    floor: bool = False  # time = max(floor_const, linear)
    curve: str | None = None  # time = linear + curve(feature), knots at measured values

    def __post_init__(self) -> None:
        unknown = [f for f in (*self.features, self.curve or "const") if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown features {unknown}; known: {list(FEATURES)}")
        if self.curve is not None and (self.floor or self.curve in self.features
                                       or self.curve == "decode_ctx_tokens"):
            raise ValueError(f"{self.name}: a curve goes with neither a floor, nor its feature "
                             "in the linear part, nor decode_ctx_tokens")

    def params_for(self, x: np.ndarray) -> int:
        """Parameters when fitted to feature matrix x (a curve has one slope per segment)."""
        if self.curve is None:
            return len(self.features) + int(self.floor)
        return len(self.features) + len(_knots(x[:, FEATURES.index(self.curve)])) - 1


def _forms(base: Sequence[tuple[str, tuple[str, ...]]],
           curves: Sequence[tuple[str, tuple[str, ...], str]] = ()) -> tuple[Candidate, ...]:
    out = [Candidate(name, feats) for name, feats in base]
    out += [Candidate(f"max(floor, {name})", feats, floor=True) for name, feats in base]
    out += [Candidate(name, feats, curve=feature) for name, feats, feature in curves]
    return tuple(out)


def _knots(values: np.ndarray) -> np.ndarray:
    """Knots of a curve over these measured values: the distinct values, or MAX_KNOTS of them
    at evenly spaced ranks (always the smallest and the largest)."""
    distinct = np.unique(values)
    if len(distinct) <= MAX_KNOTS:
        return distinct
    return distinct[np.round(np.linspace(0, len(distinct) - 1, MAX_KNOTS)).astype(int)]


_PREFILL = _forms(
    [
        ("const+tokens+attn", ("const", "num_tokens", "prefill_attn_pairs")),
        ("const+seqs+tokens+attn", ("const", "num_seqs", "num_tokens", "prefill_attn_pairs")),
    ],
    [("const+curve(tokens)+attn", ("const", "prefill_attn_pairs"), "num_tokens")],
)
_DECODE = _forms(
    [
        ("const+seqs+ctx", ("const", "num_decode_seqs", "decode_ctx_tokens")),
    ],
    [("const+curve(seqs)+ctx", ("const", "decode_ctx_tokens"), "num_decode_seqs")],
)
_MIXED = _forms(
    [
        (
            "const+tokens+attn+ctx",
            ("const", "num_tokens", "prefill_attn_pairs", "decode_ctx_tokens"),
        ),
        (
            "const+tokens+attn+seqs+ctx",
            ("const", "num_tokens", "prefill_attn_pairs", "num_decode_seqs", "decode_ctx_tokens"),
        ),
    ]
)


def candidates_for(key: str) -> tuple[Candidate, ...]:
    """Candidate model forms for a cost-model key ('packed.prefill', 'cpu.packed.prefill', ...)."""
    phase = key.rsplit(".", 1)[-1]
    forms = {"prefill": _PREFILL, "decode": _DECODE, "mixed": _MIXED}
    if phase not in forms:
        raise KeyError(f"no candidates for cost model {key!r}; phases: {sorted(forms)}")
    return forms[phase]


@dataclass(frozen=True)
class FitResult:
    """A chosen model with its cross-validated error and the domain it was measured on."""

    model: CostModel
    candidate: str
    cv: dict[str, Any]  # mape, max_ape, folds, n_points, candidate, train_mape
    domain: dict[str, list[float]]  # feature -> [min, max] over measured points

    def to_json(self) -> dict[str, Any]:
        return {**self.model.to_json(), "cv": self.cv, "domain": self.domain}


def feature_matrix(shapes: Sequence[StepShape]) -> np.ndarray:
    """[N, len(FEATURES)] features of the shapes."""
    return np.array([s.features() for s in shapes], dtype=np.float64).reshape(-1, len(FEATURES))


def fit_candidate(x: np.ndarray, y: np.ndarray, cand: Candidate) -> CostModel:
    """Least relative squared error fit of one candidate with non-negative coefficients."""
    assert x.shape[0] == y.shape[0] > 0 and np.all(y > 0), (x.shape, y.shape, y.min(initial=0))
    if cand.curve is not None:
        return _fit_curve(x, y, cand)
    cols = [FEATURES.index(f) for f in cand.features]
    xs = x[:, cols]
    scale = np.max(np.abs(xs), axis=0)
    scale[scale == 0] = 1.0  # an all-zero column gets coefficient 0 either way
    xs = xs / scale
    w = _linear_nnls(xs, y)
    floor = 0.0
    if cand.floor:
        floor, w = _fit_floor(xs, y, w)
    terms = [_term(cols, w / scale)]
    if cand.floor and floor > 0:
        terms.append(_term([FEATURES.index("const")], np.array([floor])))
    return CostModel(tuple(terms))


def _fit_curve(x: np.ndarray, y: np.ndarray, cand: Candidate) -> CostModel:
    """Linear part plus curve: NNLS over the linear columns and the curve's segment columns
    (non-negative slopes make the curve non-decreasing)."""
    assert cand.curve is not None
    cols = [FEATURES.index(f) for f in cand.features]
    f = FEATURES.index(cand.curve)
    knots = _knots(x[:, f])
    if len(knots) < 2:  # one measured value: the curve is not identifiable, a slope is
        return fit_candidate(x, y, Candidate(cand.name, (*cand.features, cand.curve)))
    xs = np.concatenate([x[:, cols], curve_basis(x[:, f], knots)], axis=1)
    scale = np.max(np.abs(xs), axis=0)
    scale[scale == 0] = 1.0
    w = _linear_nnls(xs / scale, y) / scale
    slopes = tuple(max(float(v), 0.0) for v in w[len(cols):])
    curve = Curve(f, tuple(float(k) for k in knots), slopes)
    return CostModel((_term(cols, w[: len(cols)]),), curve)


def _term(cols: Sequence[int], coefs: np.ndarray) -> tuple[float, ...]:
    term = [0.0] * len(FEATURES)
    for c, v in zip(cols, coefs, strict=True):
        term[c] = max(float(v), 0.0)
    return tuple(term)


def _linear_nnls(xs: np.ndarray, y: np.ndarray) -> np.ndarray:
    # rows scaled by 1/y: minimise sum ((x.w - y) / y)^2 with w >= 0
    w, _ = nnls(xs / y[:, None], np.ones_like(y), maxiter=50 * xs.shape[1] + 100)
    return w


def _rel_sse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(((pred - y) / y) ** 2))


def _fit_floor(xs: np.ndarray, y: np.ndarray, w_lin: np.ndarray) -> tuple[float, np.ndarray]:
    """Fit max(floor, xs.w): try floor sets of the smallest steps, refine the best jointly."""
    best = (_rel_sse(xs @ w_lin, y), 0.0, w_lin)
    order = np.argsort(y)
    n = len(y)
    for m in sorted({round(q * n) for q in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)} - {0}):
        if n - m < xs.shape[1]:
            continue
        low, high = order[:m], order[m:]
        floor = float(np.sum(1 / y[low]) / np.sum(1 / y[low] ** 2))  # relative-LS constant
        w = _linear_nnls(xs[high], y[high])
        err = _rel_sse(np.maximum(floor, xs @ w), y)
        if err < best[0] - 1e-12:
            best = (err, floor, w)
    if best[1] == 0.0:  # no floor helps: the plain linear fit
        return 0.0, w_lin
    return _refine(xs, y, best[1], best[2])


def _refine(xs: np.ndarray, y: np.ndarray, floor: float, w: np.ndarray) -> tuple[float, np.ndarray]:
    def resid(p: np.ndarray) -> np.ndarray:
        return (np.maximum(p[0], xs @ p[1:]) - y) / y

    p0 = np.concatenate([[floor], w])
    ub = np.full_like(p0, np.inf)
    # least_squares needs a strictly feasible start
    res = least_squares(resid, np.maximum(p0, 1e-15), bounds=(np.zeros_like(p0), ub), method="trf")
    if _rel_sse(np.maximum(res.x[0], xs @ res.x[1:]), y) <= _rel_sse(np.maximum(floor, xs @ w), y):
        return float(res.x[0]), res.x[1:]
    return floor, w


def _ape(model: CostModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(model.predict_features(x) - y) / y


def cross_validate(
    x: np.ndarray, y: np.ndarray, cand: Candidate, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Held-out absolute percentage error of every point, and the number of folds used.

    Each point's error comes from the model fit on the other folds only. With fewer points than
    folds it becomes leave-one-out.
    """
    n = len(y)
    k = min(folds, n)
    if k < 2:
        return np.full(n, np.nan), k
    perm = np.random.default_rng(seed).permutation(n)
    ape = np.empty(n)
    for fold in np.array_split(perm, k):
        train = np.setdiff1d(perm, fold)
        model = fit_candidate(x[train], y[train], cand)
        ape[fold] = _ape(model, x[fold], y[fold])
    return ape, k


def fit_key(
    key: str,
    shapes: Sequence[StepShape],
    times_s: Sequence[float],
    folds: int = 5,
    seed: int = 0,
    candidates: Sequence[Candidate] | None = None,
) -> FitResult:
    """Fit every candidate for `key`, pick the best by CV MAPE, refit it on all points."""
    x = feature_matrix(shapes)
    y = np.asarray(times_s, dtype=np.float64)
    if len(y) == 0:
        raise ValueError(f"no measured points for cost model {key!r}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(f"{key}: step times must be positive and finite")
    cands = list(candidates) if candidates is not None else list(candidates_for(key))
    scored = []
    for i, cand in enumerate(cands):
        params = cand.params_for(x)
        if params > len(y):  # not identifiable: more parameters than points
            continue
        ape, k = cross_validate(x, y, cand, folds, seed)
        mape = float(np.mean(ape)) if k >= 2 else float("inf")
        scored.append((mape, params, i, cand, ape, k))
    if not scored:  # fewer points than any candidate has parameters: the simplest one
        cand = min(cands, key=lambda c: c.params_for(x))
        scored = [(float("inf"), cand.params_for(x), 0, cand, np.full(len(y), np.nan), 0)]
    best_mape = min(s[0] for s in scored)
    # simplest candidate within SIMPLER_MARGIN of the best
    chosen = min((s for s in scored if s[0] <= best_mape + SIMPLER_MARGIN), key=lambda s: s[1:3])
    _, _, _, cand, ape, k = chosen
    model = fit_candidate(x, y, cand)
    finite = bool(np.all(np.isfinite(ape)))
    cv = {
        "mape": float(np.mean(ape)) if finite else None,
        "max_ape": float(np.max(ape)) if finite else None,
        "folds": k,
        "n_points": len(y),
        "candidate": cand.name,
        "train_mape": float(np.mean(_ape(model, x, y))),
    }
    domain = {f: [float(x[:, j].min()), float(x[:, j].max())] for j, f in enumerate(FEATURES)}
    return FitResult(model=model, candidate=cand.name, cv=cv, domain=domain)


def fit_points(
    points: Sequence[Mapping[str, Any]], folds: int = 5, seed: int = 0
) -> dict[str, FitResult]:
    """Fit every cost-model key present in a profile's raw `points` list."""
    by_key: dict[str, tuple[list[StepShape], list[float]]] = {}
    for p in points:
        shapes, times = by_key.setdefault(str(p["model"]), ([], []))
        shapes.append(shape_of(p))
        times.append(float(p["time_s"]))
    return {key: fit_key(key, s, t, folds, seed) for key, (s, t) in sorted(by_key.items())}


def shape_of(point: Mapping[str, Any]) -> StepShape:
    """The StepShape stored in a raw point record."""
    return StepShape(
        num_seqs=int(point["num_seqs"]),
        num_prefill_tokens=int(point["num_prefill_tokens"]),
        num_decode_seqs=int(point["num_decode_seqs"]),
        prefill_attn_pairs=int(point["prefill_attn_pairs"]),
        decode_ctx_tokens=int(point["decode_ctx_tokens"]),
    )


def fit_copy(num_bytes: Sequence[float], times_s: Sequence[float]) -> dict[str, float]:
    """CPU->GPU copy: time = latency_s + bytes / bytes_per_s, non-negative, relative error."""
    b = np.asarray(num_bytes, dtype=np.float64)
    y = np.asarray(times_s, dtype=np.float64)
    if len(y) < 2 or np.any(y <= 0):
        raise ValueError("kv copy fit needs at least two positive timings")
    x = np.stack([np.ones_like(b), b / b.max()], axis=1)
    w = _linear_nnls(x, y)
    slope = max(w[1] / b.max(), 1e-18)  # a zero slope would mean infinite bandwidth
    return {
        "bytes_per_s": float(1 / slope),
        "latency_s": float(w[0]),
        "mape": float(np.mean(np.abs(x @ w - y) / y)),
    }
