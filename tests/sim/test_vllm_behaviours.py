"""vLLM V1's three scheduling behaviours in the continuous policy, as hand-worked timelines.

Costs (tests/conftest.py): 1 ms per prefill token, 5 ms per decode step, a mixed step both;
LAUNCH adds a 2 ms floor to prefill-only steps so that chunk counts show in the times. "Step k
is decided at t" means the policy's decision for step k, made at t in vLLM's terms.
"""

from __future__ import annotations

import dataclasses

import pytest

from batchsim.policies.registry import make_config
from batchsim.sim.run import RunSpec, prepare
from tests.conftest import HAND_COSTS, fake_profile
from tests.sim.test_timelines import ms, run

SYNC = {"async_scheduling": "false"}
LAUNCH = {**HAND_COSTS, "packed.prefill": [{"const": 2e-3, "num_prefill_tokens": 1e-3}]}


# -- async_scheduling: one step ahead ---------------------------------------------------------

A, B = (0.0, 10, 3), (0.002, 5, 2)  # B arrives during A's prefill (step 1, 0-10 ms)


def test_one_step_ahead_an_arrival_during_step_1_first_runs_in_step_3():
    """Step 2 was decided when step 1 started (t=0), before B arrived at 2 ms: it is A's
    decode alone, 10-15. Step 3 (decided at 10) has B: mixed, B's 5 tokens + A's decode,
    15-25; step 4 decodes B, 25-30 (A finished in step 3, its seat unused).
    B: TTFT 25 - 2 = 23 ms, E2EL 28 ms; A: E2EL 25 ms."""
    req, steps, _ = run("continuous", [A, B])
    assert list(steps["phase"].astype(str)) == ["prefill", "decode", "mixed", "decode"]
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.015), ms(0.025)]
    assert list(steps["prefill_tokens"]) == [10, 0, 5, 0]
    b, a = req.loc["r1"], req.loc["r0"]
    assert b["queue_ms"] == ms(13.0) and b["ttft_ms"] == ms(23.0) and b["e2el_ms"] == ms(28.0)
    assert a["ttft_ms"] == ms(10.0) and a["e2el_ms"] == ms(25.0)


def test_synchronous_the_same_arrival_runs_in_step_2():
    """Decided as step 1 ends (t=10), step 2 has B: mixed 10-20 (B's first token, A's second),
    then both decode 20-25. B: TTFT 18 ms, E2EL 23 ms."""
    req, steps, _ = run("continuous", [A, B], knobs=SYNC)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.020)]
    assert req.loc["r1"]["ttft_ms"] == ms(18.0) and req.loc["r1"]["e2el_ms"] == ms(23.0)


# Two seats. A (10 tokens, 2 out) and C (10, 4) prefill together 0-20 ms; B (5, 1) arrives at 1.
TWO_SEATS = {"max_num_seqs": "2"}
SEATS = [(0.0, 10, 2), (0.0, 10, 4), (0.001, 5, 1)]


def test_one_step_ahead_a_finished_request_frees_its_seat_one_step_later():
    """Step 2 (decided at 0, B unseen) decodes A and C, 20-25: A's last token. Step 3 is
    decided at 20, while A's last token is in flight: A still holds a seat, so B waits and
    step 3 decodes C alone, 25-30. Step 4 (decided at 25, A gone) admits B: mixed 30-40, B's
    only token and C's last. B: TTFT = E2EL = 40 - 1 = 39 ms; C: E2EL 40 ms."""
    req, steps, _ = run("continuous", SEATS, knobs=TWO_SEATS)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.020), ms(0.025), ms(0.030)]
    assert list(steps["batch_size"]) == [2, 2, 1, 2]
    assert list(steps["prefill_tokens"]) == [20, 0, 0, 5]
    assert req.loc["r2"]["ttft_ms"] == ms(39.0) and req.loc["r2"]["e2el_ms"] == ms(39.0)
    assert req.loc["r1"]["e2el_ms"] == ms(40.0) and req.loc["r0"]["e2el_ms"] == ms(25.0)


def test_synchronous_the_seat_is_free_for_the_next_step():
    """A leaves at 25 ms; step 3 admits B beside C's decode: mixed 25-35. B: TTFT 34 ms."""
    req, steps, _ = run("continuous", SEATS, knobs={**TWO_SEATS, **SYNC})
    assert list(steps["start_s"]) == [ms(0.0), ms(0.020), ms(0.025), ms(0.035)]
    assert req.loc["r2"]["ttft_ms"] == ms(34.0)


def test_one_step_ahead_an_idle_engine_starts_at_once():
    """Nothing in flight when B arrives at 100 ms (A ended at 15): B prefills at once,
    100-105, TTFT 5 ms, as a synchronous scheduler would."""
    req, steps, _ = run("continuous", [(0.0, 10, 2), (0.1, 5, 1)])
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.100)]
    assert req.loc["r1"]["ttft_ms"] == ms(5.0)


# -- scheduler_reserve_full_isl: admission needs the whole prompt's blocks ---------------------

# 6 blocks of 4 tokens, an 8-token budget. A (8 tokens, 6 out) holds 2 blocks after its
# prefill (0-8 ms) and a 3rd from step 2 on (its 9th token), a 4th at step 6 (13th). B (16
# tokens, 2 out) arrives at 1 ms and needs 4 blocks in all.
POOL = {"block_size": "4", "max_num_batched_tokens": "8", "max_num_seqs": "4", **SYNC}
LONG = [(0.0, 8, 6), (0.001, 16, 2)]


def test_full_prompt_reservation_waits_instead_of_thrashing():
    """While A runs at most 3 blocks are free, fewer than B's 4: B waits. A decodes 8-33
    (steps 2-6) and leaves; B prefills 8 + 8 tokens, 33-41 and 41-49, then decodes 49-54.
    B: TTFT 48 ms, E2EL 53 ms; A: E2EL 33 ms; no preemption."""
    req, steps, metrics = run("continuous", LONG, profile=fake_profile(kv_tokens=24),
                              knobs={**POOL, "scheduler_reserve_full_isl": "true"})
    assert list(steps["prefill_tokens"]) == [8, 0, 0, 0, 0, 0, 8, 8, 0]
    assert list(steps["start_s"]) == [ms(t / 1e3) for t in (0, 8, 13, 18, 23, 28, 33, 41, 49)]
    assert metrics["preemptions"] == 0
    assert req.loc["r1"]["ttft_ms"] == ms(48.0) and req.loc["r1"]["e2el_ms"] == ms(53.0)
    assert req.loc["r0"]["e2el_ms"] == ms(33.0)


def test_first_chunk_admission_preempts_the_newcomer_twice():
    """Checking the first chunk only (vLLM <= 0.18): B's 7-token chunk (2 blocks) rides with
    A's decode at 8-20 ms; its next chunk needs 2 more blocks, 1 is free: B, the newest, is
    preempted (A decodes alone 20-25). Readmitted 25-37, preempted again (37-42), readmitted
    with A's last decode 42-54; then 8 tokens 54-62 and 1 token 62-63, decode 63-68.
    B: TTFT 62 ms, E2EL 67 ms; A: E2EL 54 ms; 2 preemptions, 7 + 7 tokens recomputed."""
    req, steps, metrics = run("continuous", LONG, profile=fake_profile(kv_tokens=24),
                              knobs={**POOL, "scheduler_reserve_full_isl": "false"})
    assert list(steps["prefill_tokens"]) == [8, 7, 0, 7, 0, 7, 8, 1, 0]
    assert list(steps["start_s"]) == [ms(t / 1e3) for t in (0, 8, 20, 25, 37, 42, 54, 62, 63)]
    assert metrics["preemptions"] == 2 and req.loc["r1"]["preemptions"] == 2
    assert req.loc["r1"]["ttft_ms"] == ms(62.0) and req.loc["r1"]["e2el_ms"] == ms(67.0)
    assert req.loc["r0"]["e2el_ms"] == ms(54.0)


# -- long_prefill_uncapped_when_alone -------------------------------------------------------

CAP = {"long_prefill_token_threshold": "4", "max_num_batched_tokens": "8",
       "max_num_seqs": "4", **SYNC}


def test_a_lone_request_prefills_in_full_budget_chunks():
    """Alone, a 16-token prompt ignores the 4-token cap: chunks 8 + 8, each 2 + 8 ms: TTFT
    20 ms."""
    req, steps, _ = run("continuous", [(0.0, 16, 2)], knobs=CAP,
                        profile=fake_profile(costs=LAUNCH))
    assert list(steps["prefill_tokens"]) == [8, 8, 0]
    assert req.loc["r0"]["ttft_ms"] == ms(20.0)


def test_the_cap_holds_for_a_lone_request_before_vllm_0_31():
    """vLLM 0.30 caps it anyway: four chunks of 4, each 2 + 4 ms: TTFT 24 ms."""
    req, steps, _ = run("continuous", [(0.0, 16, 2)], knobs={**CAP, "vllm_version": "0.30.0"},
                        profile=fake_profile(costs=LAUNCH))
    assert list(steps["prefill_tokens"]) == [4, 4, 4, 4, 0]
    assert req.loc["r0"]["ttft_ms"] == ms(24.0)


def test_the_cap_returns_as_soon_as_another_request_is_queued():
    """B (8 tokens) arrives at 5 ms, during A's first, uncapped chunk (8 tokens, 0-10). From
    step 2 on running + waiting = 2: A and B get 4 tokens each, 10-20 and 20-30 (A's prefill
    ends: TTFT 30 ms; B's too: TTFT 25 ms); both decode 30-35."""
    req, steps, _ = run("continuous", [(0.0, 16, 2), (0.005, 8, 2)], knobs=CAP,
                        profile=fake_profile(costs=LAUNCH))
    assert list(steps["prefill_tokens"]) == [8, 8, 8, 0]
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.020), ms(0.030)]
    assert req.loc["r0"]["ttft_ms"] == ms(30.0) and req.loc["r1"]["ttft_ms"] == ms(25.0)


# -- per-version defaults ----------------------------------------------------------------------

KNOBS = ("async_scheduling", "scheduler_reserve_full_isl", "long_prefill_uncapped_when_alone")


@pytest.mark.parametrize(("version", "expected"), [
    ("0.8.0", (False, False, False)),
    ("0.13.0", (False, False, False)),
    ("0.14.0", (True, False, False)),
    ("0.18.1", (True, False, False)),
    ("v0.19", (True, True, False)),
    ("0.30.0", (True, True, False)),
    ("0.31.0", (True, True, True)),
    ("0.33.0", (True, True, True)),
    ("", (True, True, True)),  # the newest read
    ("0.40.0rc1", (True, True, True)),
])
def test_defaults_follow_the_vllm_version(version, expected):
    config = make_config("continuous", {"vllm_version": version})
    assert tuple(getattr(config, k) for k in KNOBS) == expected


def test_an_explicit_knob_wins_over_the_version():
    config = make_config("continuous", {"vllm_version": "0.13.0", "async_scheduling": "true"})
    assert config.async_scheduling is True and config.scheduler_reserve_full_isl is False


@pytest.mark.parametrize("version", ["0.7.3", "latest", "1"])
def test_an_unmodelled_version_is_refused(version):
    with pytest.raises(ValueError, match="vllm_version"):
        make_config("continuous", {"vllm_version": version})


def test_the_profile_vllm_version_picks_the_defaults(tmp_path, monkeypatch):
    """An imported profile made with vLLM 0.13 simulates 0.13's scheduler unless --set says
    otherwise; a policy without the knob is unaffected."""
    imported = dataclasses.replace(fake_profile(), fingerprint={
        "device": "fake", "imported": {"vllm_version": "0.13.0"}})
    monkeypatch.setattr("batchsim.sim.run.load_profile", lambda path: imported)
    prep = prepare(RunSpec(policy="continuous"))
    assert prep.policy.config.vllm_version == "0.13.0"
    assert prep.policy.config.async_scheduling is False
    prep = prepare(RunSpec(policy="continuous", knobs={"async_scheduling": "true"}))
    assert prep.policy.config.async_scheduling is True
    assert prepare(RunSpec(policy="static")).policy.config.max_batch_size == 8
