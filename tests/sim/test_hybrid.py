"""Hybrid CPU+GPU policy: hand-worked timelines with fake linear cost models.

GPU (tests/conftest.py): 1 ms per prefill token, 5 ms per decode step, a mixed step both.
CPU path: 2 ms per prefill token; KV copy 1 byte per token at 10 kB/s = 0.1 ms per token,
so a CPU prefill of n tokens ends (with its KV in the GPU pool) 2.1 n ms after it starts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.run import Prepared, RunSpec, prepare, simulate
from batchsim.sim.workload.synthetic import SyntheticSpec
from tests.conftest import HAND_COSTS, fake_profile, make_workload
from tests.sim.test_conformance import COSTS as CONF_COSTS
from tests.sim.test_conformance import KV_COPY, KV_TOKENS, MAX_LEN

CPU_COSTS = {**HAND_COSTS, "cpu.packed.prefill": [{"num_prefill_tokens": 2e-3}]}


def run(rows, knobs=None, costs=CPU_COSTS, kv_copy=None, fast_forward=True):
    profile = fake_profile(costs=costs, kv_copy=kv_copy or {"bytes_per_s": 1e4,
                                                            "latency_s": 0.0})
    pol = get_policy("hybrid")(make_config("hybrid", knobs or {}), profile.memory,
                               profile.max_model_len)
    prep = Prepared(RunSpec(policy="hybrid"), profile, pol, make_workload(rows), set())
    out = simulate(prep, fast_forward=fast_forward)
    return out.requests.set_index("id"), out.steps, out.metrics, out.config


def ms(x: float) -> float:
    return pytest.approx(x, abs=1e-9)


def devices(steps) -> list[str]:
    return list(steps["device"].astype(str))


def test_cpu_path_wins_while_the_gpu_is_busy():
    """r0's 100-token prefill holds the GPU until 100 ms. r1 (10 tokens) arrives at 1 ms: CPU
    ends at 1 + 21 = 22 ms, the GPU at best at 100 + 10 = 110 ms, so the CPU takes it. r1's
    first token is at 22 ms; it joins the GPU's decodes at the next step (100 ms)."""
    req, steps, metrics, config = run([(0.0, 100, 5), (0.001, 10, 3)])
    assert devices(steps)[:2] == ["gpu", "cpu"]
    r1 = req.loc["r1"]
    assert r1["prefill_path"] == "cpu" and req.loc["r0"]["prefill_path"] == "gpu"
    assert r1["queue_ms"] == ms(0.0) and r1["ttft_ms"] == ms(21.0)
    # r1's 2nd and 3rd tokens: GPU decode steps 100-105 and 105-110 ms (with r0's).
    assert r1["e2el_ms"] == ms(109.0)
    cpu = steps[steps["device"] == "cpu"]
    assert list(cpu["start_s"]) == [ms(0.001)] and list(cpu["duration_s"]) == [ms(0.021)]
    # r0: prefill to 100 ms, then 4 decodes of 5 ms.
    assert req.loc["r0"]["e2el_ms"] == ms(120.0)
    assert metrics["prefill_path_requests"] == {"gpu": 1, "cpu": 1}
    assert metrics["cpu_busy_fraction"] == ms(21.0 / 120.0)
    assert metrics["gpu_busy_fraction"] == ms(120.0 / 120.0)
    assert config["derived_knobs"]["cpu_max_prompt_tokens"] == 7447


def test_cpu_queue_drain_counts_in_the_estimate():
    """r2 (50 tokens) arrives at 3 ms while the CPU works on r1 (to 22 ms): routed when the CPU
    frees, it would end at 22 + 105 = 127 ms; the GPU at 100 + 50 = 150 ms: CPU again. r3
    (60 tokens, at 4 ms) is next at 127 ms: CPU 127 + 126 = 253 ms, but the GPU is free by then
    and, at its step boundary at 100 ms, finishes r3 in a mixed step at 100 + 5 + 60 = 165 ms."""
    req, _, _, _ = run([(0.0, 100, 2), (0.001, 10, 2), (0.003, 50, 2), (0.004, 60, 2)])
    assert list(req["prefill_path"]) == ["gpu", "cpu", "cpu", "gpu"]
    assert req.loc["r2"]["ttft_ms"] == ms(127.0 - 3.0)
    assert req.loc["r3"]["ttft_ms"] == ms(165.0 - 4.0)


def test_cpu_path_loses_when_the_gpu_frees_soon():
    """r0 (10 tokens) holds the GPU until 10 ms. r1 (10 tokens) at 1 ms: the GPU's estimate,
    10 + 10 = 20 ms, beats the CPU's 22 ms, so r1 waits and joins r0's first decode as a mixed
    step 10-25 ms (5 ms decode + 10 ms prefill): TTFT 24 ms, no CPU step at all."""
    req, steps, metrics, _ = run([(0.0, 10, 3), (0.001, 10, 2)])
    assert "cpu" not in devices(steps)
    assert list(req["prefill_path"]) == ["gpu", "gpu"]
    assert req.loc["r1"]["ttft_ms"] == ms(24.0)
    assert metrics["cpu_busy_fraction"] == 0.0


def test_transfer_cost_decides():
    """As in the first timeline, but each KV hand-off costs a fixed latency on top. With 80 ms
    the CPU ends r1 at 1 + 20 + 1 + 80 = 102 ms < 110 ms: CPU, TTFT 101 ms. With 90 ms it
    would end at 112 ms > 110 ms: r1 waits for the GPU (mixed step 100-115 ms, TTFT 114 ms)."""
    rows = [(0.0, 100, 5), (0.001, 10, 3)]
    req, _, _, _ = run(rows, kv_copy={"bytes_per_s": 1e4, "latency_s": 0.080})
    assert req.loc["r1"]["prefill_path"] == "cpu" and req.loc["r1"]["ttft_ms"] == ms(101.0)
    req, _, _, _ = run(rows, kv_copy={"bytes_per_s": 1e4, "latency_s": 0.090})
    assert req.loc["r1"]["prefill_path"] == "gpu" and req.loc["r1"]["ttft_ms"] == ms(114.0)


def test_tail_escapes_a_full_gpu():
    """max_num_seqs 1: r0 (10 tokens, 20 out) holds the only seat until its last decode ends at
    10 + 19 * 5 = 105 ms. r1 (10 tokens) at 1 ms: mid-step the GPU's optimistic estimate (10 +
    10 = 20 ms) beats the CPU (22 ms); at the 10 ms step the GPU is full for 19 more steps
    (10 + 19 * 5 + 10 = 115 ms) and the CPU ends at 10 + 21 = 31 ms: CPU. r1's first token
    comes at 31 ms; it waits for a seat, joining the decode step 105-110 ms."""
    req, steps, _, _ = run([(0.0, 10, 20), (0.001, 10, 2)], knobs={"max_num_seqs": "1",
                                                                  "max_num_batched_tokens": "64"})
    r1 = req.loc["r1"]
    assert r1["prefill_path"] == "cpu"
    assert r1["queue_ms"] == ms(9.0) and r1["ttft_ms"] == ms(30.0) and r1["e2el_ms"] == ms(109.0)
    assert (steps["batch_size"][steps["device"] == "gpu"] == 1).all()


def test_one_token_request_finishes_on_the_cpu():
    """A one-token request prefilled on the CPU never touches the GPU."""
    req, steps, _, _ = run([(0.0, 100, 1), (0.001, 10, 1)])
    assert req.loc["r1"]["e2el_ms"] == ms(21.0) and req.loc["r1"]["ttft_ms"] == ms(21.0)
    gpu = steps[steps["device"] == "gpu"]
    assert list(gpu["batch_size"]) == [1]


def test_cpu_path_off_is_continuous_batching():
    """cpu_max_prompt_tokens 0 and no holding: the same timeline as the continuous policy
    (scheduling synchronously, the hybrid policy's default)."""
    rows = [(0.0, 100, 5), (0.001, 10, 3), (0.05, 30, 4)]
    req, steps, _, _ = run(rows, knobs={"cpu_max_prompt_tokens": "0", "hold_max_batch": "0"})
    profile = fake_profile()
    config = make_config("continuous", {"async_scheduling": "false"})
    pol = get_policy("continuous")(config, profile.memory, profile.max_model_len)
    ref = simulate(Prepared(RunSpec(policy="continuous"), profile, pol, make_workload(rows),
                            set()))
    assert list(req["ttft_ms"]) == list(ref.requests["ttft_ms"])
    assert list(req["e2el_ms"]) == list(ref.requests["e2el_ms"])
    assert list(steps["start_s"]) == list(ref.steps["start_s"])


HOLD_COSTS = {**CPU_COSTS, "packed.prefill": [{"const": 0.010, "num_prefill_tokens": 1e-4}]}


def test_holds_a_prefill_batch_while_the_gain_beats_the_cost():
    """GPU prefill 10 ms + 0.1 ms/token; CPU path off. r0 runs alone 0-11 ms (no gap known).
    r1, r2 arrive at 2 and 4 ms: expected gap g = 2 ms. At 11 ms, batch W = {r1, r2} (B = 2),
    typical next prompt 10: G(W) = 12, G(W+r) = 13, G(r) = 11 ms. Gain = 12 + 11 - 2 - 13 =
    8 ms > cost = 2 * (2 + 13 - 12) = 6 ms: hold until min(11 + 2, 2 + saving 10) = 12 ms.
    r3 arrives at 11.5 ms (g = 0.8 * 2 + 0.2 * 7.5 = 3.1 ms): gain 13 + 11 - 3.1 - 14 = 6.9 <
    cost 3 * 4.1: run all three, 11.5-24.5 ms."""
    rows = [(0.0, 10, 1), (0.002, 10, 1), (0.004, 10, 1), (0.0115, 10, 1)]
    knobs = {"cpu_max_prompt_tokens": "0"}
    req, steps, _, _ = run(rows, knobs=knobs, costs=HOLD_COSTS)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.0115)]
    assert list(steps["duration_s"]) == [ms(0.011), ms(0.013)]
    assert req.loc["r3"]["ttft_ms"] == ms(13.0)
    # B2 = 2: with two waiting the GPU never holds; r3 then runs alone after r1 + r2.
    req, steps, _, _ = run(rows, knobs={**knobs, "hold_max_batch": "2"}, costs=HOLD_COSTS)
    assert list(steps["start_s"]) == [ms(0.0), ms(0.011), ms(0.023)]
    assert req.loc["r3"]["ttft_ms"] == ms(34.0 - 11.5)


def test_fast_forward_matches_step_by_step():
    """Decode runs taken in one clock advance stop at CPU completions: same timeline."""
    rows = [(0.0, 100, 30), (0.001, 10, 12), (0.003, 50, 9), (0.2013, 20, 40), (0.2117, 8, 3)]
    fast = run(rows)
    slow = run(rows, fast_forward=False)
    assert list(fast[0]["prefill_path"]) == list(slow[0]["prefill_path"])
    assert len(fast[1]) == len(slow[1]) and len(fast[1]) < 2 * 94  # some runs were merged
    for col in ("ttft_ms", "e2el_ms", "queue_ms"):
        assert list(fast[0][col]) == [pytest.approx(x, abs=1e-9) for x in slow[0][col]]


def test_committed_profiles_never_use_this_cpu():
    """With the analytic H100 profile and the dev VM's one-thread CPU profile, a CPU prefill
    (>= 0.38 s) cannot beat waiting behind even a full 8192-token GPU step (~25 ms): B1 = 0."""
    spec = RunSpec(policy="hybrid", cpu_profile="profiles/qwen2.5-0.5b-cpu.json",
                   kv_copy_gbps=25.0, synthetic=SyntheticSpec(num_requests=50, request_rate=20.0,
                                                              input_len=64, output_len=16))
    out = simulate(prepare(spec))
    assert out.config["derived_knobs"]["cpu_max_prompt_tokens"] == 0
    assert "assumed" in out.config["cpu_path"]["kv_copy"]
    assert (out.requests["prefill_path"] == "gpu").all()


def test_cpu_options_need_a_cpu_path():
    with pytest.raises(ValueError, match="hybrid"):
        prepare(RunSpec(policy="continuous", cpu_profile="profiles/qwen2.5-0.5b-cpu.json"))


def test_missing_kv_copy_is_an_error_naming_the_option():
    with pytest.raises(ValueError, match="--kv-copy-gbps"):
        prepare(RunSpec(policy="hybrid", cpu_profile="profiles/qwen2.5-0.5b-cpu.json"))


# A launch-bound GPU (large fixed cost per prefill step) so that holding for a batch pays.
R2, R3 = 2**0.5, 3**0.5
FLOOR_COSTS = {**CONF_COSTS, "packed.prefill": [{"const": 2e-2 * R3,
                                                 "num_prefill_tokens": 1e-4 * R2}]}


# bursts after idle spells, short outputs: the GPU is often idle of decodes when requests come
gaps = st.one_of(st.floats(0.0005, 0.008), st.floats(0.05, 0.2)).map(lambda x: round(x, 4))
dense = st.lists(st.tuples(gaps, st.integers(1, 80), st.integers(1, 4)), min_size=1,
                 max_size=25).map(lambda rs: [(round(sum(r[0] for r in rs[:i + 1]), 4), *r[1:])
                                              for i, r in enumerate(rs)])


@settings(max_examples=60, deadline=None)
@given(rows=dense, knob_index=st.integers(0, 1))
def test_holding_keeps_the_invariants(rows, knob_index):
    """With holds happening: every request completes with exactly its tokens, KV stays within
    capacity, and stepping one by one gives the same timeline."""
    knobs = [{"cpu_max_prompt_tokens": "30"}, {"cpu_max_prompt_tokens": "0", "block_size": "4",
                                                "max_num_seqs": "4"}][knob_index]
    profile = fake_profile(kv_tokens=KV_TOKENS, max_model_len=MAX_LEN, costs=FLOOR_COSTS,
                           kv_copy=KV_COPY)
    rows = [(a, n_in, min(n_out, MAX_LEN - n_in) or 1) for a, n_in, n_out in rows]
    outs = []
    for ff in (True, False):
        pol = get_policy("hybrid")(make_config("hybrid", knobs), profile.memory, MAX_LEN)
        prep = Prepared(RunSpec(policy="hybrid"), profile, pol, make_workload(rows), set())
        outs.append((simulate(prep, fast_forward=ff), pol))
    (fast, pol), (slow, _) = outs
    assert (fast.requests["status"] == "completed").all()
    assert (fast.steps["kv_blocks_used"] <= pol.kv_capacity_blocks).all()
    produced = np.zeros(len(rows), dtype=np.int64)
    for a, b, i in fast.recorder.segments:
        produced[i] += b - a + 1
    for i in fast.recorder.cpu_tokens:
        produced[i] += 1
    assert (produced == make_workload(rows).output_tokens).all()
    assert len(fast.steps) == len(slow.steps)
    for col in ("ttft_ms", "e2el_ms"):
        np.testing.assert_allclose(slow.requests[col], fast.requests[col], rtol=1e-9, atol=1e-9)
