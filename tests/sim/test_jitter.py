"""Step-time jitter (sim.jitter): the draws, their distribution, and where it is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.jitter import StepJitter, repeat_ratios
from batchsim.sim.profile import load_profile
from batchsim.sim.run import Prepared, RunSpec, simulate
from batchsim.sim.validation.plan import mean_metrics
from tests.conftest import make_workload

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "distilgpt2-cpu.json"

RATIOS = {"packed.decode": np.array([0.9, 1.0, 1.0, 1.1, 1.5]),
          "packed.prefill": np.array([0.5, 2.0])}


def test_repeat_ratios_are_samples_over_their_point_median():
    points = [
        {"model": "packed.decode", "samples_s": [2.0, 1.0, 4.0]},  # median 2
        {"model": "packed.decode", "samples_s": [3.0, 3.0, 6.0]},  # median 3
        {"model": "packed.prefill", "samples_s": [1.0, 2.0]},  # too few repeats: skipped
        {"model": "padded.decode"},  # no samples (an older or analytic file): skipped
    ]
    got = repeat_ratios(points)
    assert list(got) == ["packed.decode"]
    np.testing.assert_allclose(got["packed.decode"], [0.5, 1.0, 1.0, 1.0, 2.0, 2.0])


def test_stream_is_indexed_by_step_however_it_is_read():
    a, b = StepJitter(RATIOS, seed=5), StepJitter(RATIOS, seed=5)
    whole = a.take("packed.decode", 10_000)
    parts = []
    for n in (1, 4095, 1, 3000, 2903):  # crosses the 4096-draw chunks unevenly
        parts.append(b.take("packed.decode", n))
        b.advance(n)
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert not np.array_equal(whole, StepJitter(RATIOS, seed=6).take("packed.decode", 10_000))


def test_factors_follow_the_cost_models_own_ratios():
    j = StepJitter(RATIOS, seed=0)
    f = j.take("packed.decode", 50_000)
    values, counts = np.unique(f, return_counts=True)
    np.testing.assert_allclose(values, [0.9, 1.0, 1.1, 1.5])
    np.testing.assert_allclose(counts / len(f), [0.2, 0.4, 0.2, 0.2], atol=0.01)
    assert set(np.unique(j.take("packed.prefill", 1000))) == {0.5, 2.0}
    # a cost model without its own samples draws from all of them pooled
    pooled = np.unique(j.take("padded.decode", 5000))
    np.testing.assert_allclose(pooled, [0.5, 0.9, 1.0, 1.1, 1.5, 2.0])


def test_simulated_steps_scatter_like_the_profiles_repeats():
    """On a measured profile, step duration / prediction has the profile's repeat quantiles.
    Requests arrive 100 s apart, so both runs step through the very same shapes."""
    profile = load_profile(PROFILE)
    workload = make_workload([(100.0 * i, 32, 40) for i in range(300)])

    def run(jitter: bool):
        pol = get_policy("continuous")(make_config("continuous", {"max_num_seqs": "4"}),
                                       profile.memory, profile.max_model_len)
        spec = RunSpec(policy="continuous", profile=str(PROFILE), step_jitter=jitter, seed=1)
        return simulate(Prepared(spec, profile, pol, workload, set()))

    plain, noisy = run(False), run(True)
    assert noisy.config["step_jitter"]["seed"] == 1
    assert "step_jitter" not in plain.config
    for phase, n in (("decode", 300 * 39), ("prefill", 300)):
        a = plain.steps[plain.steps["phase"] == phase]["duration_s"].to_numpy()
        b = noisy.steps[noisy.steps["phase"] == phase]["duration_s"].to_numpy()
        assert len(a) == len(b) == n
        want = profile.jitter_ratios[f"packed.{phase}"]
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(b / a, q) - np.quantile(want, q)) < 0.03, (phase, q)


def test_mean_metrics_averages_numbers_and_keeps_the_rest():
    a = {"n": 2, "lat": {"mean": 1.0, "p99": None}, "name": "x", "flag": True}
    b = {"n": 4, "lat": {"mean": 3.0, "p99": 5.0}, "name": "y", "flag": False}
    assert mean_metrics([a, b]) == {"n": 3.0, "lat": {"mean": 2.0, "p99": None}, "name": "x",
                                    "flag": True}


def test_jitter_needs_a_measured_profile(tmp_path):
    """The analytic profile has no repeats to draw from: one line, exit 2, nothing written."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "batchsim", "simulate", "--policy", "continuous", "--jitter",
         "--num-requests", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--jitter" in lines[0] and "analytic" in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--jitter", "--no-jitter"])
def test_simulate_records_the_jitter_it_drew(tmp_path, flag):
    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "batchsim", "simulate", "--policy", "static", flag,
         "--profile", "profiles/distilgpt2-cpu.json", "--num-requests", "20", "--input-len",
         "32", "--output-len", "8", "--request-rate", "2", "--out", str(out), "--quiet"],
        cwd=ROOT, check=True, capture_output=True)
    config = json.loads((out / "config.json").read_text())
    if flag == "--jitter":
        assert set(config["step_jitter"]["repeat_ratios"]) >= {"padded.prefill", "padded.decode"}
    else:
        assert "step_jitter" not in config
