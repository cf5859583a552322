"""Every registered policy, on randomized workloads, keeps the simulator's invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsim.policies.registry import available, get_policy, make_config
from batchsim.sim.run import Prepared, RunSpec, simulate
from tests.conftest import fake_profile, make_workload

# Small KV so that continuous batching preempts and static batches must shrink.
KV_TOKENS = 400
MAX_LEN = 120

requests = st.lists(
    st.tuples(
        st.floats(0.0, 0.5, allow_nan=False).map(lambda x: round(x, 4)),
        st.integers(1, 80),
        st.integers(1, 40),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=25,
)

KNOBS = {
    "continuous": [{},
                   {"block_size": "4", "max_num_batched_tokens": "32", "max_num_seqs": "8"},
                   {"enable_chunked_prefill": "false", "max_num_batched_tokens": "96",
                    "max_num_seqs": "16", "policy": "priority", "block_size": "8"},
                   {"long_prefill_token_threshold": "16", "max_num_seqs": "3"},
                   # vLLM 0.14-0.18: one step ahead, admission on the first chunk's blocks
                   {"vllm_version": "0.18.0", "block_size": "4", "max_num_batched_tokens": "32",
                    "max_num_seqs": "8"},
                   {"async_scheduling": "false", "long_prefill_token_threshold": "16",
                    "block_size": "4", "max_num_batched_tokens": "48", "max_num_seqs": "6"},
                   # a pool one longest request fills (15 usable blocks of 8 = MAX_LEN): a
                   # lone decoder can be its own victim, a step can preempt everything running
                   {"block_size": "8", "num_gpu_blocks_override": "16", "max_num_seqs": "4"},
                   {"block_size": "8", "num_gpu_blocks_override": "16", "max_num_seqs": "4",
                    "async_scheduling": "false"},
                   # prefix caching (the workload gets two prefix groups: simulate_rows)
                   {"enable_prefix_caching": "true", "block_size": "4",
                    "max_num_batched_tokens": "32", "max_num_seqs": "8"},
                   {"enable_prefix_caching": "true", "async_scheduling": "false",
                    "long_prefill_token_threshold": "16", "max_num_seqs": "6"}],
    "shortest_prompt": [{},
                        {"block_size": "4", "max_num_batched_tokens": "32", "max_num_seqs": "8",
                         "prompt_bucket_tokens": "16"},
                        {"enable_chunked_prefill": "false", "max_num_batched_tokens": "96",
                         "max_num_seqs": "16",
                         "policy": "priority", "long_prefill_token_threshold": "16"}],
    "static": [{"max_batch_size": "3"}, {"max_batch_size": "5", "max_queue_delay_ms": "20"}],
    "hybrid": [{},
               {"cpu_max_prompt_tokens": "40", "block_size": "4", "max_num_batched_tokens": "32",
                "max_num_seqs": "8"},
               {"cpu_max_prompt_tokens": "80", "enable_chunked_prefill": "false",
                "max_num_batched_tokens": "96", "max_num_seqs": "3", "policy": "priority",
                "block_size": "8", "hold_max_batch": "4"},
               {"enable_prefix_caching": "true", "cpu_max_prompt_tokens": "40",
                "block_size": "4", "max_num_batched_tokens": "32", "max_num_seqs": "8"},
               {"cpu_max_prompt_tokens": "20", "long_prefill_token_threshold": "16",
                "arrival_gap_weight": "1"},
               {"async_scheduling": "true", "cpu_max_prompt_tokens": "40", "block_size": "4",
                "max_num_batched_tokens": "32", "max_num_seqs": "8"}],
    "dynamic": [{"max_batch_size": "4"},
                {"max_batch_size": "6", "preferred_batch_size": "2,4",
                 "max_queue_delay_microseconds": "30000", "priority_levels": "3",
                 "default_timeout_microseconds": "200000", "timeout_action": "DELAY"},
                {"max_batch_size": "2", "default_timeout_microseconds": "50000",
                 "max_queue_size": "4"}],
}


def knob_sets(policy: str) -> list[dict[str, str]]:
    return KNOBS.get(policy, [{}])  # a new policy is tested with its defaults


# Costs with irrational factors, so that no step ends exactly on a (4-decimal) arrival time:
# at an exact tie, which of the two events comes first is decided by float rounding.
R2, R3 = 2**0.5, 3**0.5
COSTS = {
    "packed.prefill": [{"num_prefill_tokens": 1e-3 * R2, "const": 1e-4 * R3}],
    "packed.decode": [{"const": 5e-3 * R3, "decode_ctx_tokens": 1e-5 * R2}],
    "packed.mixed": [{"const": 5e-3 * R3, "num_prefill_tokens": 1e-3 * R2}],
    "padded.prefill": [{"num_prefill_tokens": 1e-3 * R2, "const": 1e-4 * R3}],
    "padded.decode": [{"const": 5e-3 * R3, "decode_ctx_tokens": 1e-5 * R2}],
    # the hybrid policy's CPU path: slower per token, no launch floor
    "cpu.packed.prefill": [{"num_prefill_tokens": 2e-3 * R3}],
}
KV_COPY = {"bytes_per_s": 1e5 * R2, "latency_s": 1e-4 * R3}


# step-time jitter (sim.jitter): a skewed scatter around 1, different per cost model
JITTER = {"packed.decode": np.sort(np.r_[np.linspace(0.9, 1.1, 40), 1.3, 1.6]),
          "padded.decode": np.linspace(0.8, 1.4, 25)}


def simulate_rows(policy, knobs, rows, fast_forward=True, jitter=False):
    profile = fake_profile(kv_tokens=KV_TOKENS, max_model_len=MAX_LEN, costs=COSTS,
                           kv_copy=KV_COPY, jitter_ratios=JITTER)
    rows = [(a, n_in, min(n_out, MAX_LEN - n_in) or 1, p) for a, n_in, n_out, p in rows]
    workload = make_workload([r[:3] for r in rows], [r[3] for r in rows])
    if knobs.get("enable_prefix_caching") == "true":  # shared prompts of 12 tokens, 2 groups
        workload.prefix_group = workload.priority % 2
        workload.prefix_tokens = np.minimum(workload.input_tokens, 12)
    pol = get_policy(policy)(make_config(policy, knobs), profile.memory, profile.max_model_len)
    total = workload.input_tokens + workload.output_tokens
    pol.check_workload(int(workload.input_tokens.max()), int(total.max()))
    prep = Prepared(RunSpec(policy=policy, step_jitter=jitter), profile, pol, workload, set())
    return simulate(prep, fast_forward=fast_forward), pol, workload


CASES = [(p, i) for p in available() for i in range(len(knob_sets(p)))]


@pytest.mark.parametrize(("policy", "knob_index"), CASES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=requests)
def test_invariants(policy, knob_index, rows):
    """Every request completes with exactly its output tokens or is rejected with a reason;
    KV never exceeds capacity; time never runs backwards."""
    out, pol, workload = simulate_rows(policy, knob_sets(policy)[knob_index], rows)
    req, steps = out.requests, out.steps
    assert set(req["status"]) <= {"completed", "rejected"}, req["status"].value_counts()
    assert (req.loc[req["status"] == "rejected", "reject_reason"] != "").all()
    assert (steps["kv_blocks_used"] <= pol.kv_capacity_blocks).all()
    assert (steps["kv_blocks_used"] >= 0).all()
    for _, dev in steps.groupby("device", observed=True):  # each device runs one step at a time
        ends = dev["start_s"] + dev["duration_s"]
        assert (dev["start_s"].to_numpy()[1:] >= ends.to_numpy()[:-1] - 1e-12).all()
    assert (steps["duration_s"] > 0).all()
    done = req[req["status"] == "completed"]
    assert (done["queue_ms"] >= -1e-9).all()
    assert (done["ttft_ms"] >= done["queue_ms"] - 1e-9).all()
    assert (done["e2el_ms"] >= done["ttft_ms"] - 1e-9).all()
    # Tokens produced per request, from the recorder's token segments.
    produced = np.zeros(len(workload), dtype=np.int64)
    for a, b, i in out.recorder.segments:
        produced[i] += b - a + 1
    for i in out.recorder.cpu_tokens:  # first tokens of CPU prefills (hybrid)
        produced[i] += 1
    completed = (req["status"] == "completed").to_numpy()
    assert (produced[completed] == workload.output_tokens[completed]).all()
    if pol.caches_prefixes:  # every block back in the pool, each one once
        ledger = pol.ledger
        assert ledger.num_free == ledger.num_blocks == len(ledger._queue)
        assert ledger.num_cached_free == sum(k is not None for k in ledger._hash)
        assert (steps["kv_cached_blocks"] <= pol.kv_capacity_blocks).all()


@pytest.mark.parametrize(("policy", "knob_index"), CASES)
@settings(max_examples=15, deadline=None)
@given(rows=requests)
def test_same_seed_same_bytes_and_fast_forward_is_exact(policy, knob_index, rows):
    """Two runs are byte-identical; stepping one by one gives the same timeline."""
    knobs = knob_sets(policy)[knob_index]
    first, _, _ = simulate_rows(policy, knobs, rows)
    again, _, _ = simulate_rows(policy, knobs, rows)
    assert first.requests.to_csv() == again.requests.to_csv()
    assert first.steps.to_csv() == again.steps.to_csv()
    slow, _, _ = simulate_rows(policy, knobs, rows, fast_forward=False)
    assert len(slow.steps) == len(first.steps)
    for col in ("ttft_ms", "e2el_ms", "queue_ms"):
        np.testing.assert_allclose(slow.requests[col], first.requests[col], rtol=1e-9, atol=1e-9)
    assert list(slow.requests["status"]) == list(first.requests["status"])


@pytest.mark.parametrize(("policy", "knob_index"), CASES)
@settings(max_examples=15, deadline=None)
@given(rows=requests)
def test_jitter_is_reproducible_and_fast_forward_draws_as_stepping(policy, knob_index, rows):
    """With step jitter, a rerun is byte-identical and a fast-forwarded run draws exactly the
    factors stepping one by one draws (the stream is indexed by step number)."""
    knobs = knob_sets(policy)[knob_index]
    first, _, _ = simulate_rows(policy, knobs, rows, jitter=True)
    again, _, _ = simulate_rows(policy, knobs, rows, jitter=True)
    assert first.steps.to_csv() == again.steps.to_csv()
    slow, _, _ = simulate_rows(policy, knobs, rows, fast_forward=False, jitter=True)
    assert len(slow.steps) == len(first.steps)
    key = ["device", "start_s"]  # a CPU step may be recorded before or after a GPU run
    np.testing.assert_allclose(slow.steps.sort_values(key)["duration_s"],
                               first.steps.sort_values(key)["duration_s"], rtol=1e-9)
    for col in ("ttft_ms", "e2el_ms", "queue_ms"):
        np.testing.assert_allclose(slow.requests[col], first.requests[col], rtol=1e-9, atol=1e-9)
