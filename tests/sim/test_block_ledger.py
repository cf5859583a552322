"""The block ledger counts per event exactly what a per-token model of the pool counts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from batchsim.policies.block_ledger import BlockLedger
from batchsim.policies.kv import blocks_for


def test_fixed_blocks_are_held_and_freed_per_owner():
    """allocate adds to an owner's blocks; free returns all of them to the pool."""
    ledger = BlockLedger(num_blocks=10, block_size=4)
    ledger.allocate(7, 2)
    ledger.allocate(7, 1)
    ledger.allocate(8, 4)
    assert (ledger.num_free, ledger.num_used) == (3, 7)
    assert ledger.blocks_of(7) == 3 and ledger.blocks_of(8) == 4 and ledger.blocks_of(9) == 0
    assert ledger.can_allocate(3) and not ledger.can_allocate(4)
    assert ledger.free(7) == 3
    assert ledger.num_free == 6 and ledger.blocks_of(7) == 0


def test_extra_blocks_counts_block_boundaries_crossed():
    ledger = BlockLedger(num_blocks=10, block_size=4)
    assert ledger.extra_blocks(0, 4) == 1
    assert ledger.extra_blocks(4, 1) == 1  # the 5th token opens a second block
    assert ledger.extra_blocks(5, 3) == 0
    assert ledger.extra_blocks(3, 6) == 2


def test_a_growing_request_takes_a_block_when_its_length_is_a_multiple_of_block_size():
    """3 tokens in 1 block (size 4): step 0 writes the 4th token (no new block), step 1 the
    5th (a new block), step 5 the 9th (another)."""
    ledger = BlockLedger(num_blocks=10, block_size=4)
    ledger.allocate(1, 1)
    ledger.start_growth(1, 3, step=0)
    taken = []
    for step in range(6):
        before = ledger.num_free
        assert ledger.take_step_growth(step)
        taken.append(before - ledger.num_free)
    assert taken == [0, 1, 0, 0, 0, 1]
    assert ledger.blocks_of(1) == 3 == blocks_for(3 + 6, 4)
    assert ledger.free(1) == 3 and ledger.num_free == 10


def test_growth_is_not_taken_when_the_blocks_are_not_free():
    """A full pool refuses a step whose growth needs a block, and takes one that needs none."""
    ledger = BlockLedger(num_blocks=3, block_size=4)
    ledger.allocate(1, 1)
    ledger.start_growth(1, 4, step=0)  # 4 tokens: the next token opens a block
    ledger.allocate(2, 2)
    assert not ledger.take_step_growth(0) and ledger.num_free == 0
    assert ledger.free(2) == 2
    assert ledger.take_step_growth(0) and ledger.num_free == 1
    assert ledger.take_step_growth(1) and ledger.num_free == 1


# A timeline of up to 40 steps: each owner enters decode with some tokens at some step and
# leaves (is freed) some steps later; the pool (200 blocks of 4) never runs out.
BS, POOL, STEPS = 4, 200, 40
owners = st.lists(st.tuples(st.integers(1, 12), st.integers(0, STEPS - 1), st.integers(1, 40)),
                  min_size=1, max_size=6)


def per_token_blocks(lengths: dict[int, int], k: int) -> int:
    """Blocks in use while writing the k-th next token (k = 1: this step's)."""
    return sum(blocks_for(t + k, BS) for t in lengths.values())


@settings(max_examples=60, deadline=None)
@given(owners=owners, run=st.integers(1, 30))
def test_growth_matches_a_per_token_model(owners, run):
    """blocks_of, free, take_run_growth and growth_steps agree with counting every request's
    blocks token by token, whether steps are taken one at a time or as runs."""
    ledger = BlockLedger(num_blocks=POOL, block_size=BS)
    lengths: dict[int, int] = {}  # KV tokens of each growing owner before the current step
    events = sorted({e for _, e, _ in owners} | {e + s for _, e, s in owners})
    step = 0
    while step < STEPS:
        for i, (tokens, enter, stay) in enumerate(owners):
            if i in lengths and enter + stay == step:
                assert ledger.free(i) == blocks_for(lengths.pop(i), BS)
            if enter == step:
                ledger.allocate(i, blocks_for(tokens, BS))
                ledger.start_growth(i, tokens, step)
                lengths[i] = tokens
        assert ledger.take_step_growth(step)
        assert ledger.num_used == per_token_blocks(lengths, 1)
        brute = 1  # steps whose growth the free blocks cover
        while brute < 1000 and per_token_blocks(lengths, brute + 1) <= POOL:
            brute += 1
        assert ledger.growth_steps(step, limit=1000) == brute
        n = min([run, STEPS - step, *(e - step for e in events if e > step)])
        used = ledger.take_run_growth(step, n) if n > 1 else [ledger.num_used]
        assert used == [per_token_blocks(lengths, k) for k in range(1, n + 1)]
        for i in lengths:
            lengths[i] += n
            assert ledger.blocks_of(i) == blocks_for(lengths[i], BS)
        step += n
