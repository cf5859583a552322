"""vLLM's null block: a pool of num_gpu_blocks_override N blocks holds KV in N - 1 of them.

Hand-worked (tests/conftest.py costs: 1 ms per prefill token, 5 ms per decode step;
synchronous scheduling so the timeline is short). Blocks of 4 tokens; A and B both arrive at 0
with 4-token prompts and 2 output tokens, so each needs 1 block for its prompt and a second one
in its decode step (which writes the first output token's KV at position 5).
"""

from __future__ import annotations

import pytest

from batchsim.policies.continuous import ContinuousConfig
from batchsim.sim.run import RunSpec, prepare
from tests.sim.test_engine_config import TRACE
from tests.sim.test_timelines import ms, run

ROWS = [(0.0, 4, 2), (0.0, 4, 2)]
KNOBS = {"block_size": "4", "async_scheduling": "false"}


def test_five_blocks_hold_both_requests():
    """N = 5: 4 usable blocks. Step 1 prefills both (8 tokens, 0-8 ms, 2 blocks); step 2
    decodes both (8-13 ms, the 3rd and 4th blocks): both E2EL 13 ms, no preemption."""
    req, steps, metrics = run("continuous", ROWS, knobs={**KNOBS, "num_gpu_blocks_override": "5"})
    assert list(steps["start_s"]) == [ms(0.0), ms(0.008)]
    assert list(steps["kv_blocks_used"]) == [2, 4]
    assert req["e2el_ms"].tolist() == [ms(13.0), ms(13.0)]
    assert metrics["preemptions"] == 0


def test_four_blocks_are_three_usable_so_the_newest_request_is_preempted():
    """N = 4: 3 usable blocks (vLLM's pool would hold 4 with block 0 its null block). Step 1
    prefills both (0-8 ms, 2 blocks). Step 2: A takes the last free block, B finds none and,
    being the newest, is preempted (its block freed): A decodes alone, 8-13 ms, and finishes.
    Step 3 recomputes B's prompt and its first output token (5 tokens, 2 blocks), 13-18 ms,
    giving its second and last token: B's E2EL 18 ms; A's 13 ms."""
    req, steps, metrics = run("continuous", ROWS, knobs={**KNOBS, "num_gpu_blocks_override": "4"})
    assert list(steps["start_s"]) == [ms(0.0), ms(0.008), ms(0.013)]
    assert list(steps["batch_size"]) == [2, 1, 1]
    assert list(steps["prefill_tokens"]) == [8, 0, 5]
    assert req.loc["r0"]["e2el_ms"] == ms(13.0) and req.loc["r1"]["e2el_ms"] == ms(18.0)
    assert metrics["preemptions"] == 1


def test_capacity_and_the_smallest_pool():
    spec = RunSpec(policy="continuous", knobs={"num_gpu_blocks_override": "37"}, trace=str(TRACE))
    assert prepare(spec).policy.kv_capacity_blocks == 36
    with pytest.raises(ValueError, match=r"at least 2 .*null block"):
        ContinuousConfig(num_gpu_blocks_override=1)


@pytest.mark.parametrize("blocks", ["40", "50"])
@pytest.mark.parametrize("async_scheduling", ["true", "false"])
def test_a_step_that_preempts_everything_running_reports_it_with_the_next_plan(
        blocks: str, async_scheduling: str):
    """In these tight pools a lone decoding request finds no free block (async_scheduling: the
    blocks of requests finishing in flight are still held) and is its own victim, so the step
    schedules nothing. vLLM schedules again at once, admitting the preempted request; its
    preemption is reported with that plan, so the recorder closes its token segment (a lost
    report made the recorder fail on the request's resumed token) and the counts agree."""
    from batchsim.sim.run import simulate
    from batchsim.sim.workload.synthetic import SyntheticSpec

    syn = SyntheticSpec(num_requests=120, request_rate=40.0, input_len=300, output_len=40,
                        range_ratio=0.5)
    out = simulate(prepare(RunSpec(policy="continuous", synthetic=syn, seed=3, knobs={
        "num_gpu_blocks_override": blocks, "async_scheduling": async_scheduling})))
    assert out.metrics["preemptions"] > 0
    assert out.metrics["preemptions"] == sum(out.recorder.num_preemptions)
    assert out.metrics["completed"] == 120


def test_a_lone_decoder_preempting_itself_is_readmitted_at_once():
    """The smallest case hypothesis found (tests/sim/test_conformance.py's costs and pool): 15
    usable blocks of 8 tokens. B (77 + 13 tokens) runs alone, then A (19 + 7) joins; at B's
    last step the pool is full (15 blocks). Deciding the next step one step ahead, B's blocks
    are still held (its last token is in flight), A needs a 4th block and, being the newest,
    is its own victim: nothing is left to run. The same decision then admits A again (B's
    blocks released), recomputing its 19 + 6 tokens; the preemption goes with that plan."""
    from tests.sim.test_conformance import simulate_rows

    knobs = {"block_size": "8", "num_gpu_blocks_override": "16", "max_num_seqs": "4"}
    out, _, _ = simulate_rows("continuous", knobs, [(0.375, 19, 7, 0), (0.2188, 77, 13, 0)])
    steps = out.steps
    assert list(steps["kv_blocks_used"])[12:14] == [15, 4]
    assert list(steps["prefill_tokens"])[13] == 25
    assert out.requests["status"].tolist() == ["completed", "completed"]
    assert list(out.recorder.num_preemptions) == [0, 1]  # sorted by arrival: B, A
    end12 = steps["start_s"].iloc[12] + steps["duration_s"].iloc[12]
    assert steps["start_s"].iloc[13] == pytest.approx(end12)  # no wait for an arrival
