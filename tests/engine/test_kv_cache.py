"""KV block allocator and paged cache invariants."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.engine.kv_cache import BlockAllocator, OutOfBlocksError, PagedKVCache  # noqa: E402


def make_cache(num_blocks: int = 8, block_size: int = 4) -> PagedKVCache:
    return PagedKVCache(
        num_layers=2,
        num_blocks=num_blocks,
        block_size=block_size,
        num_kv_heads=2,
        head_dim=8,
        dtype=torch.float32,
        device="cpu",
    )


def test_allocate_gives_distinct_blocks_and_free_returns_them() -> None:
    """Blocks handed out are distinct until freed; freeing makes them available again."""
    alloc = BlockAllocator(6)
    a, b = alloc.allocate(4), alloc.allocate(2)
    assert sorted(a + b) == list(range(6)) and alloc.num_free == 0
    alloc.free(a)
    assert alloc.num_free == 4
    assert sorted(alloc.allocate(4)) == sorted(a)


def test_capacity_error_is_clear_and_takes_nothing() -> None:
    """Asking for more blocks than are free raises OutOfBlocksError and allocates nothing."""
    alloc = BlockAllocator(3)
    alloc.allocate(2)
    with pytest.raises(OutOfBlocksError, match="need 2 KV blocks but only 1 of 3 are free"):
        alloc.allocate(2)
    assert alloc.num_free == 1


def test_double_free_and_bad_sizes_are_errors() -> None:
    """Freeing an unallocated block, or sizing with non-positive numbers, raises ValueError."""
    alloc = BlockAllocator(2)
    blocks = alloc.allocate(1)
    alloc.free(blocks)
    with pytest.raises(ValueError, match="double free"):
        alloc.free(blocks)
    with pytest.raises(ValueError):
        BlockAllocator(0)
    with pytest.raises(ValueError):
        alloc.allocate(-1)


def test_random_operations_never_share_a_block() -> None:
    """Under random reserve/free traffic no block is owned twice and none is lost."""
    cache = make_cache(num_blocks=16, block_size=4)
    rng = random.Random(0)
    lengths: dict[int, int] = {}
    for _ in range(500):
        seq = rng.randrange(6)
        if rng.random() < 0.3 and seq in lengths:
            assert cache.free(seq) == -(-lengths.pop(seq) // 4)
            continue
        target = lengths.get(seq, 0) + rng.randrange(1, 9)
        try:
            cache.reserve(seq, target)
            lengths[seq] = target
        except OutOfBlocksError:
            pass
        owned = [b for s in lengths for b in cache.block_table(s)]
        assert len(owned) == len(set(owned))
        assert len(owned) + cache.num_free_blocks == cache.num_blocks
        assert all(cache.capacity_tokens(s) >= n for s, n in lengths.items())


def test_slots_follow_block_tables() -> None:
    """Token p of a sequence lives at block_table[p // bs] * bs + p % bs."""
    cache = make_cache(num_blocks=8, block_size=4)
    cache.reserve("a", 3)
    cache.reserve("b", 5)
    cache.reserve("a", 6)  # grows a: its blocks are not contiguous any more
    table = cache.block_table("a")
    assert len(table) == 2 and cache.blocks_needed("a", 8) == 0 and cache.blocks_needed("a", 9) == 1
    assert cache.slots("a", 2, 4) == [
        table[0] * 4 + 2,
        table[0] * 4 + 3,
        table[1] * 4,
        table[1] * 4 + 1,
    ]
    with pytest.raises(KeyError):
        cache.block_table("missing")


def test_pool_shape_and_bytes() -> None:
    """The pool holds K and V per layer, block, slot, KV head and head dim."""
    cache = make_cache(num_blocks=8, block_size=4)
    assert cache.k_pool.shape == (2, 8, 4, 2, 8)
    assert cache.pool_bytes == 2 * 2 * 8 * 4 * 2 * 8 * 4
    k, _ = cache.layer_slots(1)
    assert k.shape == (32, 2, 8) and k.data_ptr() == cache.k_pool[1].data_ptr()
