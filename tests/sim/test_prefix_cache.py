"""Prefix caching (policies/prefix_cache.py) as hand-worked timelines and ledger scenarios.

Costs (tests/conftest.py): 1 ms per prefill token, 5 ms per decode step, a mixed step both.
Synchronous scheduling throughout, blocks of 4 tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchsim.policies.prefix_cache import PrefixCachingLedger, shared_keys
from batchsim.policies.registry import get_policy, make_config
from batchsim.policies.request import PrefixId, Request
from batchsim.sim.run import Prepared, RunSpec, simulate
from batchsim.sim.workload.workload import HASH_BLOCK_TOKENS, PrefixBlocks
from tests.conftest import fake_profile, make_workload
from tests.sim.test_timelines import ms

CACHE = {"enable_prefix_caching": "true", "async_scheduling": "false", "block_size": "4"}


def run(rows, groups, prefix_tokens, knobs=None, hash_ids=None):
    """rows: (arrival_s, input, output) in arrival order; groups[i] >= 0: request i's first
    prefix_tokens[i] tokens are that group's shared prompt."""
    profile = fake_profile()
    config = make_config("continuous", {**CACHE, **(knobs or {})})
    policy = get_policy("continuous")(config, profile.memory, profile.max_model_len)
    workload = make_workload(rows)
    workload.prefix_group = np.array(groups, dtype=np.int64)
    workload.prefix_tokens = np.array(prefix_tokens, dtype=np.int64)
    workload.hash_ids = hash_ids
    out = simulate(Prepared(RunSpec(policy="continuous"), profile, policy, workload, set()))
    return out.requests.set_index("id"), out.steps, out.metrics


def test_a_hit_skips_exactly_the_cached_blocks():
    """A (11 tokens, the first 8 group 0's) prefills 0-11 and decodes 11-16; at 100 ms B
    (same 8-token prefix, 3 own tokens) finds A's two prefix blocks cached and prefills only
    its 3 own tokens, 100-103, then decodes 103-108. C (group 1) shares nothing: 11 tokens."""
    req, steps, metrics = run([(0.0, 11, 2), (0.1, 11, 2), (0.2, 11, 2)], [0, 0, 1],
                              [8, 8, 8])
    assert list(steps["prefill_tokens"]) == [11, 0, 3, 0, 11, 0]
    assert list(steps["start_s"])[2:4] == [ms(0.100), ms(0.103)]
    assert req.loc["r1"]["ttft_ms"] == ms(3.0) and req.loc["r1"]["e2el_ms"] == ms(8.0)
    assert req.loc["r2"]["ttft_ms"] == ms(11.0)
    cache = metrics["prefix_cache"]
    assert (cache["queries"], cache["hits"], cache["prefill_tokens_saved"]) == (33, 8, 8)
    assert (cache["query_blocks"], cache["hit_blocks"]) == (3 * 2, 2)  # (11 - 1) // 4 each
    assert cache["hit_rate"] == pytest.approx(8 / 33)


def test_a_full_hit_still_computes_the_last_block():
    """B's 8-token prompt is all cached, but a lookup stops before the last token (its
    logits are needed): (8 - 1) // 4 = 1 block hits and B prefills the second block, 4
    tokens."""
    _, steps, metrics = run([(0.0, 8, 2), (0.1, 8, 2)], [0, 0], [8, 8])
    assert list(steps["prefill_tokens"]) == [8, 0, 4, 0]
    assert metrics["prefix_cache"]["hits"] == 4


def test_same_step_admission_hits_the_prefix_being_computed():
    """A and B arrive together with the same 8-token prefix: A is admitted first and its
    blocks are keyed when the step is scheduled, so B, admitted next in the same step, reuses
    them and the step prefills 11 + 3 tokens."""
    _, steps, _ = run([(0.0, 11, 2), (0.0, 11, 2)], [0, 0], [8, 8])
    assert steps["prefill_tokens"].iloc[0] == 14


def test_off_by_default_nothing_is_shared():
    """Without enable_prefix_caching, the same workload prefills every token, and metrics and
    steps carry no prefix-cache fields."""
    _, steps, metrics = run([(0.0, 11, 2), (0.1, 11, 2)], [0, 0], [8, 8],
                            knobs={"enable_prefix_caching": "false"})
    assert list(steps["prefill_tokens"]) == [11, 0, 11, 0]
    assert "prefix_cache" not in metrics and "kv_cached_blocks" not in steps


# A pool of 6 usable blocks of 4 tokens (override 7: vLLM's null block takes one). A and B
# (8-token prompts, nothing shared, 10 outputs) prefill
# together in step 1 (0-16 ms, 4 blocks), take a block each in step 2 (position 8) and fill it
# through step 5 (16-36). Step 6 needs two blocks, none is free: B (the newest) is preempted,
# its three full blocks (12 tokens) go back cached, tail first, and A's new block evicts B's
# tail block (positions 8-11). A finishes in step 7 (36-46). Step 8 resumes B (13 tokens:
# prompt + 5 generated): its first two blocks are still cached, so it prefills 5 tokens,
# 46-51, then decodes its last 4 tokens 51-71.
TIGHT = {"num_gpu_blocks_override": "7", "max_num_seqs": "2"}


def test_a_preempted_request_resumes_with_its_own_cached_blocks():
    req, steps, metrics = run([(0.0, 8, 7), (0.0, 8, 10)], [-1, -1], [0, 0], knobs=TIGHT)
    assert list(steps["prefill_tokens"]) == [16, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0]
    assert list(steps["start_s"])[6:9] == [ms(0.041), ms(0.046), ms(0.051)]
    assert req.loc["r1"]["e2el_ms"] == ms(71.0) and req.loc["r1"]["preemptions"] == 1
    cache = metrics["prefix_cache"]
    assert (cache["preempted_requests"], cache["preempted_queries"],
            cache["preempted_hits"]) == (1, 13, 8)
    assert cache["hits"] == 0  # fresh admissions found nothing


def test_without_caching_the_resume_recomputes_everything():
    """The same run without caching: B's resume prefills all 13 tokens, 46-59, and it ends
    at 79 ms."""
    req, steps, _ = run([(0.0, 8, 7), (0.0, 8, 10)], [-1, -1], [0, 0],
                        knobs={**TIGHT, "enable_prefix_caching": "false"})
    assert list(steps["prefill_tokens"])[7] == 13
    assert req.loc["r1"]["e2el_ms"] == ms(79.0)


def test_mooncake_hash_ids_map_onto_the_block_size():
    """hash_ids are 512-token blocks: two requests sharing the first hash id (and not the
    second) share their first 512 tokens, i.e. 128 blocks of 4 tokens."""
    blocks = PrefixBlocks(np.array([7, 8, 7, 9], dtype=np.int64), np.array([0, 2, 4]))
    n = 2 * HASH_BLOCK_TOKENS - 100
    _, steps, metrics = run([(0.0, n, 2), (1.0, n, 2)], [-1, -1], [0, 0], hash_ids=blocks,
                            knobs={"max_num_batched_tokens": "2048"})
    assert list(steps["prefill_tokens"]) == [n, 0, n - 512, 0]
    assert metrics["prefix_cache"]["hit_blocks"] == 128


# -- the ledger alone ---------------------------------------------------------------------------

def request(index: int, tokens: int, group: int | None = None, shared: int = 0) -> Request:
    prefix = None if group is None else PrefixId(shared, np.int64(group).tobytes())
    return Request(index, 0.0, tokens, 1, prefix=prefix)


def check(ledger: PrefixCachingLedger) -> None:
    """The books balance: free blocks are exactly the queue, held ones have references."""
    refs = ledger._ref
    assert len(ledger._queue) == ledger.num_free
    assert all(refs[i] == 0 for i in ledger._queue)
    assert sum(1 for r in refs if r > 0) == ledger.num_used
    assert ledger.num_cached_free == sum(1 for i in ledger._queue if ledger._hash[i] is not None)


def admit(ledger: PrefixCachingLedger, req: Request) -> list[int]:
    """Admit req whole (hit + rest), as the continuous policy does; returns the hit."""
    hit = ledger.lookup(req, req.input_tokens)
    ledger.allocate_hit(req.index, req, hit, req.input_tokens)
    ledger.allocate(req.index, ledger.blocks_for(req.input_tokens) - len(hit))
    ledger.cache_blocks(req.index, req, req.input_tokens)
    check(ledger)
    return hit


def test_freed_blocks_are_evicted_tail_first_and_least_recently_freed_first():
    """X (group 1) and then Y (group 2) leave, each with two cached prefix blocks: the free
    queue holds X's and then Y's, each request's tail first. A new request taking two blocks
    evicts X's tail and then X's head; Y's prefix stays whole."""
    ledger = PrefixCachingLedger(4, 4)
    x, y = request(0, 8, group=1, shared=8), request(1, 8, group=2, shared=8)
    admit(ledger, x)
    admit(ledger, y)
    ledger.free(0)
    ledger.free(1)
    check(ledger)
    assert ledger.num_cached_free == 4
    x_blocks = ledger.lookup(request(2, 9, group=1, shared=8), 9)
    assert len(x_blocks) == 2
    other = request(3, 4)
    ledger.allocate(3, 1)  # evicts X's tail
    assert len(ledger.lookup(request(2, 9, group=1, shared=8), 9)) == 1
    ledger.allocate(3, 1)  # then X's head
    assert ledger.lookup(request(2, 9, group=1, shared=8), 9) == []
    assert len(ledger.lookup(request(4, 9, group=2, shared=8), 9)) == 2
    ledger.free(other.index)
    check(ledger)


def test_a_block_in_use_is_never_evicted():
    """Z holds X's cached prefix block (a hit): it leaves the free queue, so filling the
    rest of the pool evicts everything but it, and a third request still hits it."""
    ledger = PrefixCachingLedger(3, 4)
    admit(ledger, request(0, 5, group=1, shared=4))
    ledger.free(0)
    assert ledger.num_free == 3
    hit = admit(ledger, request(1, 5, group=1, shared=4))
    assert len(hit) == 1 and ledger.num_free == 1  # the hit took its block out of the pool
    ledger.allocate(2, 1)  # the last free block
    assert ledger.num_free == 0
    assert len(ledger.lookup(request(3, 5, group=1, shared=4), 5)) == 1
    ledger.free(1)  # the prefix block goes back cached; Z's own partial block to the front
    check(ledger)
    assert len(ledger.lookup(request(3, 5, group=1, shared=4), 5)) == 1


def test_a_shared_block_returns_to_the_pool_when_its_last_holder_leaves():
    ledger = PrefixCachingLedger(4, 4)
    admit(ledger, request(0, 5, group=1, shared=4))
    admit(ledger, request(1, 5, group=1, shared=4))  # shares block 0: 3 blocks in use
    assert ledger.num_used == 3
    ledger.free(0)
    assert ledger.num_used == 2  # the shared block is still held
    ledger.free(1)
    check(ledger)
    assert ledger.num_used == 0 and ledger.num_cached_free == 1


def test_undo_allocation_drops_the_keys_of_blocks_never_computed():
    ledger = PrefixCachingLedger(4, 4)
    admit(ledger, request(0, 9, group=1, shared=8))
    ledger.undo_allocation(0)
    check(ledger)
    assert ledger.lookup(request(1, 9, group=1, shared=8), 9) == []
    assert ledger.stats.requests == 0 and ledger.stats.queries == 0


def test_keys_chain_the_hashes():
    """A block's key depends on every hash before it: prompts differing in the first 512-token
    block share no block, even with the same second hash."""
    a = PrefixId(512, np.array([1, 2], dtype=np.int64).tobytes())
    b = PrefixId(512, np.array([3, 2], dtype=np.int64).tobytes())
    assert not set(shared_keys(a, 1024, 16)) & set(shared_keys(b, 1024, 16))
    c = PrefixId(512, np.array([1, 4], dtype=np.int64).tobytes())
    assert shared_keys(a, 1024, 16)[:32] == shared_keys(c, 1024, 16)[:32]
    assert len(shared_keys(a, 1000, 16)) == 1000 // 16


# -- where prefixes come from --------------------------------------------------------------------

def test_native_trace_prefix_group_fields(tmp_path):
    """prefix_group + prefix_len in the native format, on the fast path (every line alike)
    and the per-line one (mixed lines); trace convert writes them back."""
    from batchsim.sim.workload.traces import load_trace
    from batchsim.sim.workload.transform import native_lines

    alike = tmp_path / "alike.jsonl"
    alike.write_text('{"arrival_s": 0.0, "input_tokens": 600, "output_tokens": 4, '
                     '"prefix_group": 3, "prefix_len": 512}\n'
                     '{"arrival_s": 1.0, "input_tokens": 700, "output_tokens": 4, '
                     '"prefix_group": 5, "prefix_len": 100}\n')
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"arrival_s": 0.0, "input_tokens": 600, "output_tokens": 4}\n'
                     '{"arrival_s": 1.0, "input_tokens": 700, "output_tokens": 4, '
                     '"prefix_group": 5, "prefix_len": 100}\n')
    a, m = load_trace(alike), load_trace(mixed)
    assert a.prefix_group.tolist() == [3, 5] and a.prefix_tokens.tolist() == [512, 100]
    assert m.prefix_group.tolist() == [-1, 5] and m.prefix_tokens.tolist() == [0, 100]
    assert [p is None for p in m.prefixes()] == [True, False]
    assert '"prefix_group": 5, "prefix_len": 100' in list(native_lines(m))[1]


@pytest.mark.parametrize(("line", "message"), [
    ('"prefix_group": 1, "prefix_len": 601', "prefix_len must be an integer from 1 to"),
    ('"prefix_group": -1, "prefix_len": 10', "prefix_group must be an integer >= 0"),
    ('"prefix_group": 1', "prefix_group and prefix_len go together"),
])
def test_native_trace_bad_prefix_fields_name_the_line(tmp_path, line, message):
    from batchsim.sim.workload.traces import load_trace
    from batchsim.sim.workload.workload import WorkloadError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arrival_s": 0.0, "input_tokens": 600, "output_tokens": 4}\n'
                   f'{{"arrival_s": 1.0, "input_tokens": 600, "output_tokens": 4, {line}}}\n')
    with pytest.raises(WorkloadError, match=f"bad.jsonl:2: {message}"):
        load_trace(bad)


def test_synthetic_shared_prefix_adds_the_prompt_and_keeps_the_draws():
    """--prefix-len P: the same arrivals and own lengths as without, each prompt P longer, a
    group drawn per request among --num-prefix-groups."""
    from batchsim.sim.workload.synthetic import SyntheticSpec, synthesize

    plain = synthesize(SyntheticSpec(num_requests=50, request_rate=5, input_len=100,
                                     range_ratio=0.5), np.random.default_rng(0))
    shared = synthesize(SyntheticSpec(num_requests=50, request_rate=5, input_len=100,
                                      range_ratio=0.5, prefix_len=64, num_prefix_groups=3),
                        np.random.default_rng(0))
    assert (shared.arrival_s == plain.arrival_s).all()
    assert (shared.input_tokens == plain.input_tokens + 64).all()
    assert set(shared.prefix_group.tolist()) == {0, 1, 2}
    assert {p.num_tokens for p in shared.prefixes()} == {64}


def test_sweep_rows_carry_the_hit_rate_where_caching_is_on():
    """--vary enable_prefix_caching=false,true: the caching points have the hit rate and the
    prefill tokens saved of their metrics.json; the others leave the columns empty."""
    import batchsim

    table = batchsim.sweep("continuous", request_rates=[20.0],
                           vary={"enable_prefix_caching": ["false", "true"]},
                           workload={"num_requests": 60, "input_len": 600, "output_len": 10,
                                     "prefix_len": 512, "num_prefix_groups": 2})
    off, on = (table[table["enable_prefix_caching"] == v].iloc[0] for v in ("false", "true"))
    assert np.isnan(off["prefix_hit_rate"]) and np.isnan(off["prefill_tokens_saved"])
    assert 0 < on["prefix_hit_rate"] < 1 and on["prefill_tokens_saved"] > 0
