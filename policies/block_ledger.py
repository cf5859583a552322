"""The paged KV pool's ledger: how many blocks are free, and how many each request holds.

Like nano-vllm's BlockManager, but blocks are counted, not numbered: a simulated pool needs
no block ids, only how many are free and who holds how many. A request holds blocks in one of
two ways:

- fixed: blocks allocated explicitly (a prompt's first chunk, each further prefill chunk);
- growing: a decoding request's KV grows by one token per step, so instead of a per-token
  update the ledger records when it started growing and at what length, and counts the
  requests needing a new block at step s by s % block_size (a request of length L at step s
  needs one when L % block_size == 0). `take_step_growth` / `take_run_growth` allocate those
  blocks for a step or a run of steps in one operation; the ledger's growth clock remembers
  the first step whose growth blocks are not yet taken, so `free` returns exactly what a
  request holds at any point of a step.

Bookkeeping is per event (allocation, start of decode, release) and per step, never per token.
"""

from __future__ import annotations

from itertools import accumulate, cycle, islice

from batchsim.policies.kv import blocks_for
from batchsim.policies.request import Request


class BlockLedger:
    """Free and held KV blocks of one paged pool of num_blocks blocks of block_size tokens."""

    caches_prefixes = False  # PrefixCachingLedger: blocks outlive their request, shared

    __slots__ = ("_fixed", "_growing", "_grown_through", "_need", "block_size", "num_blocks",
                 "num_free")

    def __init__(self, num_blocks: int, block_size: int) -> None:
        assert num_blocks >= 0 and block_size > 0, (num_blocks, block_size)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_free = num_blocks
        self._fixed: dict[int, int] = {}  # owner -> blocks held (not growing)
        # owner -> (first growing step, KV tokens before it, residue: step % block_size at
        # which it needs a new block)
        self._growing: dict[int, tuple[int, int, int]] = {}
        self._need = [0] * block_size  # growing owners needing a block at step s, by s % bs
        self._grown_through = 0  # growth blocks of steps before this one have been taken

    # -- counts ------------------------------------------------------------------------------

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold num_tokens tokens (kv.blocks_for, inlined: a hot path)."""
        return -(-num_tokens // self.block_size)

    def extra_blocks(self, num_cached: int, num_tokens: int) -> int:
        """Blocks a request holding num_cached tokens needs to add num_tokens more."""
        bs = self.block_size
        return blocks_for(num_cached + num_tokens, bs) - blocks_for(num_cached, bs)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free

    def blocks_of(self, owner: int) -> int:
        """Blocks owner holds now (growth blocks of the steps taken so far included)."""
        grow = self._growing.get(owner)
        if grow is None:
            return self._fixed.get(owner, 0)
        entry_step, entry_len, _ = grow
        return blocks_for(entry_len + self._grown_through - entry_step, self.block_size)

    # -- fixed blocks ------------------------------------------------------------------------

    def allocate(self, owner: int, num_blocks: int) -> None:
        """Give owner num_blocks more blocks (the caller checked they are free)."""
        assert num_blocks <= self.num_free, (num_blocks, self.num_free)
        self.num_free -= num_blocks
        self._fixed[owner] = self._fixed.get(owner, 0) + num_blocks

    def hold(self, owner: int, num_blocks: int) -> None:
        """owner holds num_blocks more blocks that are not taken from the free ones (a
        prefix-caching ledger's shared blocks: it keeps num_free right itself)."""
        self._fixed[owner] = self._fixed.get(owner, 0) + num_blocks

    def grown_tokens(self, owner: int) -> int | None:
        """A growing owner's KV tokens through the steps whose growth was taken; None if it
        is not growing."""
        grow = self._growing.get(owner)
        if grow is None:
            return None
        entry_step, entry_len, _ = grow
        return entry_len + self._grown_through - entry_step

    def stop_growth(self, owner: int) -> None:
        """owner's KV stops growing (its last token is in flight) but keeps its blocks."""
        grow = self._growing.pop(owner, None)
        if grow is None:
            return
        entry_step, entry_len, residue = grow
        self._need[residue] -= 1
        self._fixed[owner] = blocks_for(entry_len + self._grown_through - entry_step,
                                        self.block_size)

    def cache_blocks(self, owner: int, request: Request, num_tokens: int) -> None:
        """owner's first num_tokens tokens are (being) computed: a prefix-caching ledger
        (policies/prefix_cache.py) makes their full blocks findable; this one has no cache."""

    def undo_allocation(self, owner: int) -> None:
        """Take back owner's allocation of the schedule call in progress (as free, here)."""
        self.free(owner)

    def free(self, owner: int) -> int:
        """Release every block owner holds (growing or not); returns how many."""
        grow = self._growing.pop(owner, None)
        if grow is None:
            n = self._fixed.pop(owner, 0)
        else:
            entry_step, entry_len, residue = grow
            self._need[residue] -= 1
            n = blocks_for(entry_len + self._grown_through - entry_step, self.block_size)
        self.num_free += n
        return n

    # -- decode growth -----------------------------------------------------------------------

    def start_growth(self, owner: int, num_tokens: int, step: int) -> None:
        """From step on, owner's KV (num_tokens now, in the blocks it holds) grows one token
        per step; the blocks it needs are then taken with each step's growth."""
        if not self._growing:
            self._grown_through = step  # the clock only matters while someone grows
        assert self._grown_through == step, (self._grown_through, step)
        held = self._fixed.pop(owner, 0)
        assert held == -(-num_tokens // self.block_size), (owner, held, num_tokens)
        residue = (step - num_tokens) % self.block_size
        self._growing[owner] = (step, num_tokens, residue)
        self._need[residue] += 1

    def is_growing(self, owner: int) -> bool:
        return owner in self._growing

    def needs_block(self, owner: int, step: int) -> bool:
        """True if growing owner takes a new block at step."""
        return (step - self._growing[owner][2]) % self.block_size == 0

    def growth_at(self, step: int) -> int:
        """Blocks the growing requests need at step."""
        return self._need[step % self.block_size]

    def take_step_growth(self, step: int) -> bool:
        """Allocate step's growth blocks if they are free; False (nothing taken) if not, so
        the caller must make room first."""
        need = self._need[step % self.block_size]
        if need > self.num_free:
            return False
        self.num_free -= need
        self._grown_through = step + 1
        return True

    def take_run_growth(self, step: int, num_steps: int) -> list[int]:
        """Allocate the growth blocks of steps step+1 .. step+num_steps-1 (step's were taken
        by take_step_growth); returns the blocks in use during each step of the run."""
        assert self._grown_through == step + 1, (self._grown_through, step)
        used = self.num_blocks - self.num_free
        # the needs of steps step+1, step+2, ... cycle with period block_size: accumulate
        # them in C (itertools) rather than step by step
        r, need = (step + 1) % self.block_size, self._need
        order = need[r:] + need[:r]
        k = num_steps - 1
        out = list(accumulate(islice(cycle(order), k) if k > len(order) else order[:k],
                              initial=used))
        self.num_free -= out[-1] - used
        self._grown_through = step + num_steps
        return out

    def growth_steps(self, step: int, limit: int) -> int:
        """Steps from step (whose growth is taken) that the free blocks cover, at most limit:
        the longest run of decode steps needing no preemption."""
        per_cycle = sum(self._need)
        if per_cycle == 0:
            return limit
        free, bs, need = self.num_free, self.block_size, self._need
        cycles = free // per_cycle  # whole block_size-step cycles the free blocks cover
        steps = 1 + cycles * bs
        free -= cycles * per_cycle
        while steps < limit:
            n = need[(step + steps) % bs]
            if n > free:
                break
            free -= n
            steps += 1
        return min(steps, limit)
