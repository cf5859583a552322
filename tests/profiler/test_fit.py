"""Cost-model fitting: recovery, model choice, monotone extrapolation, held-out CV error."""

from __future__ import annotations

import sys
from itertools import pairwise

import numpy as np
import pytest

from batchsim.policies.base import FEATURES, StepShape, chunk_attn_pairs
from batchsim.profiler.profiling.fit import (
    Candidate,
    cross_validate,
    feature_matrix,
    fit_copy,
    fit_key,
    fit_points,
)


def prefill_shapes() -> list[StepShape]:
    return [
        StepShape(b, b * n, 0, b * chunk_attn_pairs(0, n), 0)
        for b in (1, 2, 4, 8)
        for n in (16, 32, 64, 128, 256)
    ]


def decode_shapes() -> list[StepShape]:
    return [StepShape(b, 0, b, 0, b * c) for b in (1, 2, 4, 8, 16, 32, 64) for c in (32, 128, 512)]


def col(x: np.ndarray, feature: str) -> np.ndarray:
    return x[:, FEATURES.index(feature)]


def test_recovers_known_prefill_coefficients_with_noise() -> None:
    """A linear prefill model with 1% noise is recovered to within a few percent."""
    rng = np.random.default_rng(1)
    shapes = prefill_shapes()
    truth = {"const": 2e-3, "num_tokens": 5e-5, "prefill_attn_pairs": 2e-7}
    y = np.array([sum(truth[f] * s.features()[FEATURES.index(f)] for f in truth) for s in shapes])
    y *= 1 + rng.normal(0, 0.01, len(y))
    res = fit_key("packed.prefill", shapes, y)
    assert res.cv["mape"] < 0.03
    terms = res.model.terms
    main = max(terms, key=lambda t: t[FEATURES.index("num_tokens")])
    for f, v in truth.items():
        assert main[FEATURES.index(f)] == pytest.approx(v, rel=0.15), f


def test_picks_two_term_model_when_data_has_a_floor() -> None:
    """Launch-bound data (flat, then linear) selects max(floor, linear)."""
    shapes = decode_shapes()
    x = feature_matrix(shapes)
    lin = 1e-4 * col(x, "num_decode_seqs") + 2e-8 * col(x, "decode_ctx_tokens")
    y = np.maximum(1.5e-3, 2e-4 + lin)
    y *= 1 + np.random.default_rng(2).normal(0, 0.005, len(y))
    res = fit_key("packed.decode", shapes, y)
    assert res.candidate.startswith("max(floor"), res.cv
    assert len(res.model.terms) == 2
    assert res.cv["mape"] < 0.02


def test_picks_linear_model_without_a_floor() -> None:
    """Purely linear data keeps the simpler one-term model."""
    shapes = decode_shapes()
    x = feature_matrix(shapes)
    y = 1e-3 + 1e-4 * col(x, "num_decode_seqs") + 2e-8 * col(x, "decode_ctx_tokens")
    res = fit_key("packed.decode", shapes, y)
    assert not res.candidate.startswith("max(floor"), res.cv
    assert res.cv["mape"] < 1e-6


def test_extrapolation_is_monotone_and_sane() -> None:
    """Beyond the grid predictions never decrease with any feature; 4x batch < 10x time."""
    rng = np.random.default_rng(3)
    shapes = decode_shapes()
    x = feature_matrix(shapes)
    # noisy, slightly concave data: an unconstrained fit could go negative somewhere
    y = 3e-3 + 5e-5 * np.sqrt(col(x, "num_decode_seqs")) + 1e-9 * col(x, "decode_ctx_tokens")
    y *= 1 + rng.normal(0, 0.05, len(y))
    model = fit_key("packed.decode", shapes, y).model
    assert all(c >= 0 for term in model.terms for c in term)
    big = StepShape(64, 0, 64, 0, 64 * 512)
    bigger = StepShape(256, 0, 256, 0, 256 * 512)
    assert model.predict(big) <= model.predict(bigger) < 10 * model.predict(big)
    base = np.array(big.features())
    for j in range(1, len(FEATURES)):
        x2 = base.copy()
        x2[j] *= 8
        assert model.predict_features(x2[None])[0] >= model.predict_features(base[None])[0]


def test_cv_error_is_measured_on_held_out_points_only() -> None:
    """Leave-one-out of a constant model: each point's error uses the others' fit only."""
    cand = Candidate("const", ("const",))
    y = np.array([1.0, 1.0, 1.0, 2.0])
    x = np.ones((4, len(FEATURES)))
    ape, k = cross_validate(x, y, cand, folds=4, seed=0)
    assert k == 4
    # relative-LS constant of the other three points: sum(1/y)/sum(1/y^2)
    for i in range(4):
        others = np.delete(y, i)
        c = np.sum(1 / others) / np.sum(1 / others**2)
        assert ape[i] == pytest.approx(abs(c - y[i]) / y[i])
    # in-sample the outlier would be partly fitted; held out it is not
    assert ape[3] == pytest.approx(0.5)


def test_cv_record_fields_and_domain() -> None:
    """fit_key records cv {mape, max_ape, folds, n_points, candidate} and each feature's range."""
    shapes = prefill_shapes()
    y = np.array([1e-3 + 1e-5 * s.num_tokens for s in shapes])
    res = fit_key("padded.prefill", shapes, y, folds=5, seed=7)
    assert set(res.cv) >= {"mape", "max_ape", "folds", "n_points", "candidate"}
    assert res.cv["folds"] == 5 and res.cv["n_points"] == len(shapes)
    assert res.domain["num_tokens"] == [16.0, 2048.0]
    assert res.domain["num_seqs"] == [1.0, 8.0]
    out = res.to_json()
    assert out["terms"] and out["cv"] is res.cv


def test_few_points_still_fit() -> None:
    """Two points: the fit falls back to leave-one-out or the simplest candidate, never fails."""
    shapes = prefill_shapes()[:2]
    res = fit_key("packed.prefill", shapes, [1e-3, 2e-3])
    assert res.cv["n_points"] == 2
    assert res.model.predict(shapes[1]) > 0


def test_fit_points_groups_by_key() -> None:
    """Raw profile points are grouped by their 'model' key."""
    pts = [
        {"model": "packed.decode", "num_seqs": b, "num_prefill_tokens": 0, "num_decode_seqs": b,
         "prefill_attn_pairs": 0, "decode_ctx_tokens": b * 64, "time_s": 1e-3 * (1 + b / 10)}
        for b in (1, 2, 4, 8, 16)
    ]
    fits = fit_points(pts)
    assert list(fits) == ["packed.decode"]


def test_bad_times_are_refused() -> None:
    """Zero or negative step times are an error, not a silent fit."""
    with pytest.raises(ValueError, match="positive"):
        fit_key("packed.decode", decode_shapes()[:3], [1.0, 0.0, 1.0])


def test_fit_copy_recovers_bandwidth_and_latency() -> None:
    """time = latency + bytes / bandwidth is recovered from exact data."""
    sizes = np.array([1, 4, 16, 64, 256]) * 2**20
    t = 10e-6 + sizes / 20e9
    res = fit_copy(sizes, t)
    assert res["bytes_per_s"] == pytest.approx(20e9, rel=1e-3)
    assert res["latency_s"] == pytest.approx(10e-6, rel=1e-2)


def test_fit_module_does_not_import_torch() -> None:
    """The fitting module is usable on the simulator side: importing it pulls in no torch."""
    import subprocess

    code = ("import sys, batchsim.profiler.profiling.fit\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_curve_captures_a_concave_batch_cost() -> None:
    """Decode cost that doubles from batch 1 to 2 and then flattens (a CPU GEMM switching
    kernels) is fitted by the curve form, far better than any max-of-linear form, and the curve
    stays non-decreasing and bounded beyond the largest measured batch."""
    shapes = decode_shapes()
    x = feature_matrix(shapes)
    b = col(x, "num_decode_seqs")
    knee = {1: 0.20, 2: 0.40, 4: 0.50, 8: 0.60, 16: 0.80, 32: 1.10, 64: 1.60}
    y = np.array([knee[int(v)] for v in b]) + 2e-6 * col(x, "decode_ctx_tokens")
    y *= 1 + np.random.default_rng(0).normal(0, 0.01, len(y))
    res = fit_key("packed.decode", shapes, y)
    assert res.candidate == "const+curve(seqs)+ctx", res.candidate
    assert res.cv["mape"] < 0.03
    only_linear = fit_key("packed.decode", shapes, y, candidates=[
        Candidate("const+seqs+ctx", ("const", "num_decode_seqs", "decode_ctx_tokens")),
        Candidate("max(floor, const+seqs+ctx)", ("const", "num_decode_seqs", "decode_ctx_tokens"),
                  floor=True)])
    assert only_linear.cv["mape"] > 3 * res.cv["mape"]
    model = res.model
    curve = model.curve
    assert curve is not None and curve.knots == (1, 2, 4, 8, 16, 32, 64)
    preds = [model.predict(StepShape(n, 0, n, 0, n * 128)) for n in range(1, 300)]
    assert all(a <= b for a, b in pairwise(preds))
    assert preds[255] < 10 * preds[63]


def test_curve_round_trips_and_bad_curves_are_refused() -> None:
    from batchsim.sim.cost_model import CostModel

    data = {"terms": [{"const": 0.1, "decode_ctx_tokens": 1e-6}],
            "curve": {"feature": "num_decode_seqs", "knots": [1, 2, 8], "slopes": [0.2, 0.01]}}
    model = CostModel.from_json(data)
    assert model.to_json() == {**data, "curve": {**data["curve"], "knots": [1.0, 2.0, 8.0],
                                                 "slopes": [0.2, 0.01]}}
    # by hand: const 0.1 + ctx 1e-6 * 100 + curve: 0.2 * (2 - 1) + 0.01 * (10 - 2)
    assert model.predict(StepShape(10, 0, 10, 0, 100)) == pytest.approx(0.1 + 1e-4 + 0.2 + 0.08)
    assert model.predict(StepShape(1, 0, 1, 0, 100)) == pytest.approx(0.1 + 1e-4)
    shapes = [StepShape(n, 0, n, 0, 100 * n) for n in (1, 2, 3, 8, 9, 50)]
    assert model.predict_features(feature_matrix(shapes)) == pytest.approx(
        [model.predict(s) for s in shapes])  # vector and scalar curve agree
    for curve, message in [
        ({"feature": "decode_ctx_tokens", "knots": [1, 2], "slopes": [1]}, "curve feature"),
        ({"feature": "num_seqs", "knots": [2, 1], "slopes": [1]}, "strictly increasing"),
        ({"feature": "num_seqs", "knots": [1, 2], "slopes": [1, 2]}, "one slope fewer"),
        ({"feature": "num_seqs", "knots": [1, 2], "slopes": [-1]}, "non-negative"),
        ({"feature": "num_seqs", "knots": "x"}, "numeric lists"),
    ]:
        with pytest.raises(ValueError, match=message):
            CostModel.from_json({**data, "curve": curve})
