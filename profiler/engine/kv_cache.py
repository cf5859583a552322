"""Paged KV cache: a pool of fixed-size blocks, a free-list allocator and per-sequence block tables.

Token ``p`` of a sequence lives in block ``block_table[p // block_size]`` at offset
``p % block_size``; its *slot* (row of the flattened pool) is ``block * block_size + offset``.
Allocation, freeing and preemption (freeing every block of a sequence) are explicit calls.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable

import torch

logger = logging.getLogger(__name__)


class OutOfBlocksError(RuntimeError):
    """The pool has too few free blocks for a request; free (preempt) a sequence or add blocks."""


class BlockAllocator:
    """Free-list allocator of block ids ``0 .. num_blocks - 1``."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` free blocks; raises OutOfBlocksError (taking none) if fewer are free."""
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        if n > len(self._free):
            raise OutOfBlocksError(
                f"need {n} KV blocks but only {len(self._free)} of {self.num_blocks} are free: "
                "free or preempt a sequence, or give the engine more KV memory"
            )
        blocks = [self._free.popleft() for _ in range(n)]
        self._used.update(blocks)
        return blocks

    def free(self, blocks: list[int]) -> None:
        """Return blocks to the free list; freeing a block that is not allocated is an error."""
        for b in blocks:
            if b not in self._used:
                raise ValueError(f"block {b} is not allocated (double free?)")
            self._used.remove(b)
            self._free.append(b)


class PagedKVCache:
    """KV pool ``[num_layers, num_blocks, block_size, num_kv_heads, head_dim]`` plus block tables.

    The cache knows which blocks each sequence owns and how many tokens it holds capacity for; what
    the tokens are is the engine's business.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.num_layers = num_layers
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        # k_pool, v_pool: [L, num_blocks, block_size, Hkv, D]
        self.k_pool = torch.zeros(shape, dtype=dtype, device=device)
        self.v_pool = torch.zeros(shape, dtype=dtype, device=device)
        self._tables: dict[Hashable, list[int]] = {}

    @property
    def num_blocks(self) -> int:
        return self.allocator.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.allocator.num_free

    @property
    def pool_bytes(self) -> int:
        return 2 * self.k_pool.numel() * self.k_pool.element_size()

    def layer_slots(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of one layer as ``[num_blocks * block_size, Hkv, D]`` views (a row per slot)."""
        k = self.k_pool[layer]
        return k.view(-1, *k.shape[2:]), self.v_pool[layer].view(-1, *k.shape[2:])

    def blocks_needed(self, seq_id: Hashable, num_tokens: int) -> int:
        """Blocks that must be added for ``seq_id`` to hold ``num_tokens`` tokens."""
        have = len(self._tables.get(seq_id, ()))
        return max(0, -(-num_tokens // self.block_size) - have)

    def reserve(self, seq_id: Hashable, num_tokens: int) -> None:
        """Grow ``seq_id``'s block table to hold ``num_tokens`` tokens (no-op if it does)."""
        new = self.allocator.allocate(self.blocks_needed(seq_id, num_tokens))
        self._tables.setdefault(seq_id, []).extend(new)

    def free(self, seq_id: Hashable) -> int:
        """Free every block of ``seq_id`` (finish or preemption); returns how many were freed."""
        blocks = self._tables.pop(seq_id, [])
        self.allocator.free(blocks)
        return len(blocks)

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The blocks of ``seq_id`` in token order (a copy)."""
        if seq_id not in self._tables:
            raise KeyError(f"sequence {seq_id!r} holds no KV blocks")
        return list(self._tables[seq_id])

    def capacity_tokens(self, seq_id: Hashable) -> int:
        return len(self._tables.get(seq_id, ())) * self.block_size

    def slots(self, seq_id: Hashable, start: int, num_tokens: int) -> list[int]:
        """Slots of tokens ``[start, start + num_tokens)`` of ``seq_id`` (pure Python reference)."""
        table = self._tables[seq_id]
        end = start + num_tokens
        assert end <= len(table) * self.block_size, (seq_id, end, len(table), self.block_size)
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def _slot_index(self, seq_id: Hashable, num_tokens: int) -> torch.Tensor:
        """Slots of tokens ``[0, num_tokens)`` of ``seq_id`` as an int64 tensor on the pool's
        device (vectorised ``slots``: a hand-off moves whole prompts)."""
        if num_tokens > self.capacity_tokens(seq_id):
            raise ValueError(f"sequence {seq_id!r} holds {self.capacity_tokens(seq_id)} token "
                             f"slots, not {num_tokens}")
        device = self.k_pool.device
        table = torch.tensor(self._tables.get(seq_id, []), dtype=torch.int64, device=device)
        pos = torch.arange(num_tokens, dtype=torch.int64, device=device)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def read(self, seq_id: Hashable, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of tokens ``[0, num_tokens)`` of ``seq_id``, every layer, as new contiguous
        tensors ``[num_layers, num_tokens, Hkv, D]`` (what a hand-off moves between pools)."""
        idx = self._slot_index(seq_id, num_tokens)
        flat = (self.num_layers, -1, *self.k_pool.shape[3:])
        return (self.k_pool.view(flat).index_select(1, idx),
                self.v_pool.view(flat).index_select(1, idx))

    def write(self, seq_id: Hashable, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K and V ``[num_layers, n, Hkv, D]`` as tokens ``[0, n)`` of ``seq_id``, whose
        blocks must already be reserved (the inverse of ``read``)."""
        expected = (self.num_layers, k.shape[1], *self.k_pool.shape[3:])
        if tuple(k.shape) != expected or tuple(v.shape) != expected:
            raise ValueError(f"KV of shape {tuple(k.shape)} / {tuple(v.shape)} does not fit this "
                             f"pool: expected {expected}")
        idx = self._slot_index(seq_id, k.shape[1])
        flat = (self.num_layers, -1, *self.k_pool.shape[3:])
        self.k_pool.view(flat).index_copy_(1, idx, k.to(self.k_pool.dtype))
        self.v_pool.view(flat).index_copy_(1, idx, v.to(self.v_pool.dtype))
