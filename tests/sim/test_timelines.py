"""Hand-worked timelines: 1 ms per prefill token, 5 ms per decode step (tests/conftest.py)."""

from __future__ import annotations

import pytest

from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.run import Prepared, RunSpec, simulate
from tests.conftest import fake_profile, make_workload

A = (0.0, 10, 3)  # arrives at 0, 10 prompt tokens, 3 output tokens
B = (0.012, 5, 2)


def run(policy: str, rows, knobs=None, profile=None, fast_forward=True):
    profile = profile or fake_profile()
    config = make_config(policy, knobs or {})
    pol = get_policy(policy)(config, profile.memory, profile.max_model_len)
    prep = Prepared(RunSpec(policy=policy), profile, pol, make_workload(rows), set())
    out = simulate(prep, fast_forward=fast_forward)
    return out.requests.set_index("id"), out.steps, out.metrics


def ms(x: float) -> float:
    return pytest.approx(x, abs=1e-9)


def test_continuous_joins_mid_run_as_a_mixed_step():
    """A prefills alone (10 ms), decodes once, then B's prefill rides with A's last decode
    (scheduling synchronously; tests/sim/test_vllm_behaviours.py has the one-step-ahead
    timeline of the same requests)."""
    req, steps, metrics = run("continuous", [A, B], knobs={"async_scheduling": "false"})
    assert list(steps["phase"].astype(str)) == ["prefill", "decode", "mixed", "decode"]
    assert list(steps["start_s"]) == [ms(0.0), ms(0.010), ms(0.015), ms(0.025)]
    a, b = req.loc["r0"], req.loc["r1"]
    assert a["ttft_ms"] == ms(10.0) and a["e2el_ms"] == ms(25.0) and a["tpot_ms"] == ms(7.5)
    assert b["queue_ms"] == ms(3.0) and b["ttft_ms"] == ms(13.0) and b["e2el_ms"] == ms(18.0)
    # ITLs: A 5 ms then 10 ms, B 5 ms.
    assert metrics["itl_ms"]["mean"] == ms(20.0 / 3)
    assert metrics["itl_ms"]["median"] == ms(5.0)


def test_continuous_without_arrivals_runs_decodes_in_one_event():
    """A lone request's decodes are one run of identical steps, recorded as separate rows."""
    req, steps, _ = run("continuous", [(0.0, 4, 6)])
    assert len(steps) == 6  # prefill + 5 decodes
    assert req.loc["r0"]["e2el_ms"] == ms(4 + 5 * 5)


def test_continuous_chunked_prefill_splits_a_long_prompt():
    """A 10-token prompt under a 4-token budget is prefilled in chunks 4, 4, 2."""
    req, steps, _ = run("continuous", [(0.0, 10, 2)],
                        knobs={"max_num_batched_tokens": "4", "max_num_seqs": "4"})
    assert list(steps["prefill_tokens"]) == [4, 4, 2, 0]
    assert req.loc["r0"]["ttft_ms"] == ms(10.0)


def test_continuous_preempts_newest_and_recomputes():
    """With room for 3 blocks of 4 tokens, the newer request is preempted and recomputed."""
    profile = fake_profile(kv_tokens=12)
    req, steps, metrics = run("continuous", [(0.0, 4, 6), (0.0, 4, 6)],
                              knobs={"block_size": "4"}, profile=profile)
    assert metrics["preemptions"] >= 1
    assert req.loc["r1"]["preemptions"] >= 1 and req.loc["r0"]["preemptions"] == 0
    assert (steps["kv_blocks_used"] <= 3).all()
    assert (req["status"] == "completed").all()


def test_static_waits_for_a_full_batch_and_pads():
    """Batch of 2 starts when B arrives; prefill is padded to 2 x 10 tokens = 20 ms."""
    req, steps, _ = run("static", [A, B], knobs={"max_batch_size": "2"})
    assert list(steps["start_s"]) == [ms(0.012), ms(0.032), ms(0.037)]
    a, b = req.loc["r0"], req.loc["r1"]
    assert a["queue_ms"] == ms(12.0) and a["ttft_ms"] == ms(32.0) and a["e2el_ms"] == ms(42.0)
    assert b["ttft_ms"] == ms(20.0) and b["e2el_ms"] == ms(25.0)


def test_static_fill_timeout_dispatches_partial_batch():
    """A waits 5 ms then runs alone; B runs after A's batch completes."""
    req, steps, _ = run("static", [A, B], knobs={"max_batch_size": "2", "max_batch_wait_ms": "5"})
    assert list(steps["start_s"]) == [ms(0.005), ms(0.015), ms(0.020), ms(0.025), ms(0.030)]
    assert req.loc["r1"]["e2el_ms"] == ms(35.0 - 12.0)


def test_static_wait_zero_dispatches_at_once_as_dynamic_does():
    """max_batch_wait_ms=0 means what dynamic's max_queue_delay_microseconds=0 means: A runs
    alone at t=0, B after A's batch: the same timeline as the dynamic batcher's."""
    static_req, static_steps, _ = run("static", [A, B], knobs={"max_batch_size": "4",
                                                                "max_batch_wait_ms": "0"})
    dyn_req, dyn_steps, _ = run("dynamic", [A, B], knobs={"max_batch_size": "4"})
    assert static_req.loc["r0"]["e2el_ms"] == ms(20.0)
    assert static_req[["queue_ms", "ttft_ms", "e2el_ms"]].equals(
        dyn_req[["queue_ms", "ttft_ms", "e2el_ms"]])
    assert list(static_steps["start_s"]) == list(dyn_steps["start_s"])


@pytest.mark.parametrize("old,new", [("0", "inf"), ("5", "5")])
def test_static_old_knob_name_keeps_its_meaning(old, new):
    """max_queue_delay_ms (the old name) still means 0 = wait for a full batch: it runs as
    max_batch_wait_ms=inf (and 5 as 5), which is the default."""
    assert make_config("static", {"max_queue_delay_ms": old}) == make_config(
        "static", {"max_batch_wait_ms": new})
    assert make_config("static", {"max_queue_delay_ms": 0.0}) == make_config("static", {})
    old_run = run("static", [A, B], knobs={"max_batch_size": "2", "max_queue_delay_ms": old})
    new_run = run("static", [A, B], knobs={"max_batch_size": "2", "max_batch_wait_ms": new})
    assert old_run[0].equals(new_run[0]) and old_run[1].equals(new_run[1])


def test_static_wait_knob_names_are_checked():
    """Both names at once, a negative wait, or inf under the old name (where 0 already means
    "wait"): one clear error."""
    with pytest.raises(ValueError, match="old name of max_batch_wait_ms"):
        make_config("static", {"max_queue_delay_ms": "1", "max_batch_wait_ms": "1"})
    with pytest.raises(ValueError, match="max_batch_wait_ms"):
        make_config("static", {"max_batch_wait_ms": "-1"})
    with pytest.raises(ValueError, match="finite"):
        make_config("static", {"max_queue_delay_ms": "inf"})
    with pytest.raises(ValueError, match="finite number or inf"):
        make_config("static", {"max_batch_wait_ms": "nan"})


def test_dynamic_with_no_delay_dispatches_at_once():
    """max_queue_delay 0: A runs alone at t=0; B waits for A's batch (no joins)."""
    req, _, _ = run("dynamic", [A, B], knobs={"max_batch_size": "4"})
    assert req.loc["r0"]["e2el_ms"] == ms(20.0)
    assert req.loc["r1"]["queue_ms"] == ms(8.0) and req.loc["r1"]["e2el_ms"] == ms(18.0)


def test_dynamic_preferred_size_dispatches_before_the_delay():
    """Preferred size 2 is reached when B arrives, long before the 1 s delay runs out."""
    _, steps, _ = run("dynamic", [A, B], knobs={
        "max_batch_size": "4", "preferred_batch_size": "2",
        "max_queue_delay_microseconds": "1000000"})
    assert steps["start_s"].iloc[0] == ms(0.012)
    assert steps["batch_size"].iloc[0] == 2


def test_dynamic_queue_timeout_rejects():
    """C waits behind A's batch longer than the 5 ms timeout and is rejected."""
    req, _, metrics = run("dynamic", [A, (0.001, 5, 2)], knobs={
        "max_batch_size": "1", "default_timeout_microseconds": "5000"})
    assert req.loc["r1"]["status"] == "rejected"
    assert req.loc["r1"]["reject_reason"] == "queue timeout"
    assert metrics["rejected"] == 1 and metrics["completed"] == 1


def test_dynamic_queue_full_rejects_on_arrival():
    req, _, _ = run("dynamic", [A, (0.001, 5, 2), (0.002, 5, 2)], knobs={
        "max_batch_size": "1", "max_queue_size": "1"})
    assert list(req["status"]) == ["completed", "completed", "rejected"]
    assert req.loc["r2"]["reject_reason"] == "queue full"
