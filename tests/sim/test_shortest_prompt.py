"""Shortest-prompt-first: hand-worked timelines, 1 ms per prefill token, 5 ms per decode step,
a mixed step both (tests/conftest.py), beside what continuous (FCFS) does with the same input."""

from __future__ import annotations

import pytest

from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.run import Prepared, RunSpec, simulate
from tests.conftest import fake_profile, make_workload
from tests.sim.test_timelines import ms, run

# A holds the only seat (max_num_seqs=1) from 0 to 15 ms: prefill 0-10, decode 10-15.
# B (8 tokens) and C (3 tokens) arrive meanwhile, B first.
A, B, C = (0.0, 10, 2), (0.001, 8, 2), (0.002, 3, 2)
ONE_SEAT = {"max_num_seqs": "1"}


def test_the_shorter_prompt_goes_first():
    """At 15 ms C (3 tokens) is admitted before B (8): C prefills 15-18 and decodes 18-23,
    then B prefills 23-31 and decodes 31-36."""
    req, steps, _ = run("shortest_prompt", [A, B, C], knobs=ONE_SEAT)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.015), ms(0.018), ms(0.023),
                                      ms(0.031)]
    assert list(steps["prefill_tokens"]) == [10, 0, 3, 0, 8, 0]
    assert req.loc["r2"]["ttft_ms"] == ms(18.0 - 2.0) and req.loc["r2"]["e2el_ms"] == ms(21.0)
    assert req.loc["r1"]["ttft_ms"] == ms(31.0 - 1.0) and req.loc["r1"]["e2el_ms"] == ms(35.0)
    assert req.loc["r0"]["e2el_ms"] == ms(15.0)


def test_continuous_serves_the_same_requests_in_arrival_order():
    """The same input under FCFS: B prefills 15-23 and decodes 23-28, C prefills 28-31 and
    decodes 31-36: mean TTFT (10 + 22 + 29) / 3 ms against (10 + 30 + 16) / 3 ms above."""
    req, steps, _ = run("continuous", [A, B, C], knobs=ONE_SEAT)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.015), ms(0.023), ms(0.028),
                                      ms(0.031)]
    assert req.loc["r1"]["ttft_ms"] == ms(22.0) and req.loc["r2"]["ttft_ms"] == ms(29.0)
    fcfs = req["ttft_ms"].mean()
    spf, _, _ = run("shortest_prompt", [A, B, C], knobs=ONE_SEAT)
    assert spf["ttft_ms"].mean() == ms(56.0 / 3) and fcfs == ms(61.0 / 3)


def test_prompts_in_one_bucket_keep_arrival_order():
    """With 10-token buckets B (8) and C (3) are equally short: FCFS order, the continuous
    timeline exactly."""
    knobs = {**ONE_SEAT, "prompt_bucket_tokens": "10"}
    _, steps, _ = run("shortest_prompt", [A, B, C], knobs=knobs)
    _, fcfs, _ = run("continuous", [A, B, C], knobs=ONE_SEAT)
    assert list(steps["start_s"]) == list(fcfs["start_s"])


# Room for 3 blocks of 4 tokens. A and B (4 tokens, 6 out) prefill together 0-8 ms (1 block
# each); at step 1 both need a 5th-token block, one is free: B, the newest, is preempted and
# queued again to recompute 4 + 1 = 5 tokens (2 blocks). C (3 tokens, 1 out) arrives at 10 ms.
KV3 = {"block_size": "4", "async_scheduling": "false"}  # decisions as each step ends
PREEMPT = [(0.0, 4, 6), (0.0, 4, 6), (0.010, 3, 1)]


def test_a_preempted_request_is_requeued_by_its_recompute_length():
    """At 13 ms B (5 to recompute) does not fit the one free block, C (3) does and is shorter:
    it rides with A's decode (mixed step 13-21 ms, 5 + 3) and finishes. A decodes 21-36;
    then B recomputes 36-41 and decodes 41-61."""
    req, steps, metrics = run("shortest_prompt", PREEMPT, knobs=KV3,
                              profile=fake_profile(kv_tokens=12))
    assert list(steps["start_s"]) == [ms(t / 1e3) for t in
                                      (0, 8, 13, 21, 26, 31, 36, 41, 46, 51, 56)]
    assert list(steps["prefill_tokens"]) == [8, 0, 3, 0, 0, 0, 5, 0, 0, 0, 0]
    assert metrics["preemptions"] == 1 and req.loc["r1"]["preemptions"] == 1
    assert req.loc["r2"]["ttft_ms"] == ms(11.0) and req.loc["r2"]["e2el_ms"] == ms(11.0)
    assert req.loc["r0"]["e2el_ms"] == ms(36.0) and req.loc["r1"]["e2el_ms"] == ms(61.0)
    assert (steps["kv_blocks_used"] <= 3).all()


def test_under_fcfs_the_preempted_request_blocks_the_queue():
    """Continuous puts B first in line: B does not fit at 13 ms and C waits behind it until
    A finishes at 33 ms; B and C then prefill together 33-41 ms."""
    req, steps, _ = run("continuous", PREEMPT, knobs=KV3, profile=fake_profile(kv_tokens=12))
    assert list(steps["prefill_tokens"])[:7] == [8, 0, 0, 0, 0, 0, 8]
    assert steps["start_s"].iloc[6] == ms(0.033)
    assert req.loc["r2"]["ttft_ms"] == ms(31.0) and req.loc["r1"]["e2el_ms"] == ms(61.0)


def test_priority_levels_come_before_length():
    """Under policy=priority, B (priority 0, 8 tokens) goes before C (priority 1, 3 tokens)."""
    profile = fake_profile()
    config = make_config("shortest_prompt", {**ONE_SEAT, "policy": "priority"})
    pol = get_policy("shortest_prompt")(config, profile.memory, profile.max_model_len)
    work = make_workload([A, B, C], priorities=[0, 0, 1])
    out = simulate(Prepared(RunSpec(policy="shortest_prompt"), profile, pol, work, set()))
    assert list(out.steps["prefill_tokens"]) == [10, 0, 8, 0, 3, 0]


def test_bucket_must_be_positive():
    with pytest.raises(ValueError, match="prompt_bucket_tokens must be positive"):
        make_config("shortest_prompt", {"prompt_bucket_tokens": "0"})
