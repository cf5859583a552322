"""Closed-loop clients (--max-concurrency): hand-worked timelines, 1 ms per prefill token and
5 ms per decode step (tests/conftest.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import batchsim
from batchsim.cli import main
from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.run import Prepared, RunSpec, simulate
from batchsim.sim.workload.synthetic import SyntheticSpec, synthesize
from tests.conftest import fake_profile, make_workload


def run(policy, rows, max_concurrency, knobs=None, too_long=(), fast_forward=True,
        workload=None):
    profile = fake_profile()
    pol = get_policy(policy)(make_config(policy, knobs or {}), profile.memory,
                             profile.max_model_len)
    spec = RunSpec(policy=policy, max_concurrency=max_concurrency)
    prep = Prepared(spec, profile, pol, workload or make_workload(rows), set(too_long))
    out = simulate(prep, fast_forward=fast_forward)
    return out.requests.set_index("id"), out.steps, out.config


def ms(x: float) -> float:
    return pytest.approx(x, abs=1e-9)


SYNC = {"async_scheduling": "false"}


def test_one_client_sends_each_request_when_the_previous_one_finishes():
    """N=1, all due at 0: A (10 prompt, 3 out) prefills 0-10, decodes to 20; B arrives at 20,
    prefills 20-25, decodes to 30; C arrives at 30, prefills 30-34 and is done."""
    req, steps, config = run("continuous", [(0.0, 10, 3), (0.0, 5, 2), (0.0, 4, 1)], 1, SYNC)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.015), ms(0.020), ms(0.025),
                                      ms(0.030)]
    assert list(req["arrival_s"]) == [ms(0.0), ms(0.020), ms(0.030)]
    assert list(req["ttft_ms"]) == [ms(10.0), ms(5.0), ms(4.0)]
    assert list(req["e2el_ms"]) == [ms(20.0), ms(10.0), ms(4.0)]
    assert (req["queue_ms"] == 0).all()  # each waited at the client, not in the server
    assert config["max_concurrency"] == 1


def test_a_request_due_after_a_slot_is_free_keeps_its_arrival_time():
    """N=2: A and B run together; C is due at 50 ms, after both finished: it is not moved."""
    rows = [(0.0, 10, 3), (0.0, 5, 2), (0.050, 4, 2)]
    gated, _, _ = run("continuous", rows, 2, SYNC)
    free, _, _ = run("continuous", rows, None, SYNC)
    assert gated.loc["r2", "arrival_s"] == ms(0.050)
    pd.testing.assert_frame_equal(gated, free)


def test_a_rejected_request_frees_its_slot():
    """N=1: B (too long) is due at 1 ms, C at 2 ms; both wait for A (done at 20 ms); B arrives
    at 20 and is rejected at once, so C arrives at 20 too and runs 20-24."""
    rows = [(0.0, 10, 3), (0.001, 5, 2), (0.002, 4, 1)]
    req, _, _ = run("continuous", rows, 1, SYNC, too_long={1})
    assert req.loc["r1", "status"] == "rejected" and req.loc["r1", "arrival_s"] == ms(0.020)
    assert req.loc["r2", "arrival_s"] == ms(0.020) and req.loc["r2", "e2el_ms"] == ms(4.0)


def test_a_static_row_that_ends_early_frees_its_slot_at_its_own_finish():
    """N=2, static batches of 2: A (3 out) and B (1 out) prefill together 0-20 ms (2 x 10
    padded tokens); B finishes with its first token at 20, so C, due at 0, arrives at 20
    (not when the batch ends at 30) and runs in the next batch."""
    rows = [(0.0, 10, 3), (0.0, 10, 1), (0.0, 4, 2)]
    req, _, _ = run("static", rows, 2, {"max_batch_size": "2", "max_queue_delay_ms": "1"})
    assert req.loc["r1", "finish_s"] == ms(0.020)
    assert req.loc["r2", "arrival_s"] == ms(0.020)
    assert req.loc["r0", "finish_s"] == ms(0.030)


@pytest.mark.parametrize("policy,knobs", [("continuous", {}), ("continuous", SYNC),
                                          ("static", {"max_batch_size": "4",
                                                      "max_queue_delay_ms": "2"}),
                                          ("dynamic", {"max_batch_size": "4"})])
def test_fast_forward_equals_stepping_under_the_gate(policy, knobs):
    """Decode runs never skip a departure that lets a held request in."""
    work = synthesize(SyntheticSpec(num_requests=40, request_rate=200.0, input_len=30,
                                    output_len=20, range_ratio=0.9), np.random.default_rng(3))
    fast, _, _ = run(policy, None, 3, knobs, workload=work)
    slow, _, _ = run(policy, None, 3, knobs, workload=work, fast_forward=False)
    pd.testing.assert_frame_equal(fast, slow)
    running = [((fast["arrival_s"] <= t) & (fast["finish_s"] > t)).sum()
               for t in fast["arrival_s"]]
    assert max(running) <= 3 and (fast["status"] == "completed").all()
    assert (fast["arrival_s"].to_numpy() >= work.arrival_s - 1e-12).all()


def test_a_batch_that_can_never_fill_is_one_clear_error():
    """Static batches of 4 behind 3 clients without a queue delay would wait forever."""
    with pytest.raises(ValueError, match="raise --max-concurrency"):
        run("static", [(0.0, 4, 2)] * 5, 3, {"max_batch_size": "4"})


def test_cli_and_api(tmp_path, capsys):
    """simulate --max-concurrency writes it to config.json; 0 is one line and exit 2; the
    Python API takes the same argument."""
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--num-requests", "20",
                 "--max-concurrency", "4", "--out", str(out), "--quiet", "--no-report"]) == 0
    assert '"max_concurrency": 4' in (out / "config.json").read_text()
    capsys.readouterr()
    assert main(["simulate", "--policy", "continuous", "--num-requests", "20",
                 "--max-concurrency", "0", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--max-concurrency must be a positive integer" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    result = batchsim.simulate("continuous", workload={"num_requests": 20}, max_concurrency=2)
    assert result.config["max_concurrency"] == 2
    with pytest.raises(ValueError, match="max-concurrency"):
        dataclasses.replace(RunSpec(policy="continuous"), max_concurrency=-1)
