"""vLLM's automatic prefix caching on the block ledger (vllm/v1/core/block_pool.py,
kv_cache_manager.py, single_type_kv_cache_manager.py of vLLM 0.33).

With caching on, blocks get ids, because which blocks stay cached depends on the order they
were freed in. What this ledger keeps, as vLLM's `BlockPool` does:

- a full block is identified by a key standing for every token up to its end (vLLM: a chain
  hash of the block's tokens and its parent's hash). Here the tokens are not known, only a
  request's `PrefixId`: blocks inside what its hashes cover get a chain hash of those hashes
  and the block position (`shared_keys`); the others are the request's own, `(index, b)`,
  which only the same request can hit again (after a preemption: its prompt and generated
  tokens are unchanged);
- a fresh admission reuses the longest run of cached blocks from the start, at most
  (num_tokens - 1) // block_size blocks: vLLM never caches the last token of a lookup (its
  logits are needed), so a full hit still computes at least one token, and a whole block of
  it when the prompt ends on a block boundary;
- the free queue, in eviction order: a freed request's blocks go back in reverse order
  (its tail first), blocks without a key to the front (reused first: vLLM 0.33's LIFO for
  locality), cached ones to the back (LRU); allocating takes from the front and evicts the
  key of a cached block it takes;
- reference counts: a cached block in use is not in the free queue, so it is never evicted;
  a hit on a free cached block takes it out of the queue (it counts against the free blocks,
  as `get_num_blocks_to_allocate` counts "evictable" hits);
- blocks are keyed when the step that computes them is scheduled, so a request admitted
  later in the same step hits a prefix being computed in it (vLLM's `cache_blocks` in
  `allocate_slots`). Decode blocks are keyed when their request leaves (they are its own,
  nobody else can hit them while it runs).

Decode growth stays counted, not numbered (BlockLedger): the blocks a step's growth takes
are popped from the free queue into a bag and attributed to their request when it frees its
blocks or stops growing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from itertools import pairwise

import numpy as np

from batchsim.policies.block_ledger import BlockLedger
from batchsim.policies.kv import blocks_for
from batchsim.policies.request import PrefixId, Request

Key = int | tuple[int, int]  # shared: a chain hash; own: (request index, block position)


def shared_keys(prefix: PrefixId | None, input_tokens: int, block_size: int) -> list[int]:
    """Keys of the full blocks of the prompt that prefix's hashes cover: block b's key
    hashes (chain of the hashes through the one its last token lies in, b). Python's hash of
    a tuple of ints is the same in every process (only str and bytes hashes are salted)."""
    if prefix is None:
        return []
    num_blocks = min(input_tokens, prefix.num_tokens) // block_size
    if num_blocks == 0:
        return []
    per = prefix.block_tokens
    needed = (num_blocks * block_size - 1) // per + 1
    chain, chains = 0, []
    for h in np.frombuffer(prefix.hashes, dtype=np.int64)[:needed].tolist():
        chain = hash((chain, h))
        chains.append(chain)
    return [hash((chains[((b + 1) * block_size - 1) // per], b)) for b in range(num_blocks)]


@dataclass
class PrefixCacheStats:
    """vLLM's PrefixCacheStats, in tokens (queries: the tokens of each admitted request that
    looked the cache up, hits: those found cached), plus the same in full blocks; requests
    resuming after a preemption are counted apart, as vLLM does."""

    requests: int = 0
    queries: int = 0
    hits: int = 0
    query_blocks: int = 0  # (num_tokens - 1) // block_size: the blocks a lookup may hit
    hit_blocks: int = 0
    preempted_requests: int = 0
    preempted_queries: int = 0
    preempted_hits: int = 0
    preempted_query_blocks: int = 0
    preempted_hit_blocks: int = 0
    evicted_blocks: int = 0  # cached blocks whose key was dropped to reuse the block

    def record(self, num_tokens: int, num_hits: int, query_blocks: int, hit_blocks: int,
               preempted: bool, sign: int = 1) -> None:
        """Count one admission (sign=-1: take back an admission that was undone)."""
        p = "preempted_" if preempted else ""
        for name, value in (("requests", 1), ("queries", num_tokens), ("hits", num_hits),
                            ("query_blocks", query_blocks), ("hit_blocks", hit_blocks)):
            setattr(self, p + name, getattr(self, p + name) + sign * value)

    def summary(self) -> dict[str, float | int]:
        """For metrics.json: the counts, hit rates and prefill tokens saved."""
        out: dict[str, float | int] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hit_rate"] = self.hits / self.queries if self.queries else 0.0
        out["block_hit_rate"] = self.hit_blocks / self.query_blocks if self.query_blocks else 0.0
        out["prefill_tokens_saved"] = self.hits + self.preempted_hits
        return out


class PrefixCachingLedger(BlockLedger):
    """A BlockLedger whose freed full blocks stay cached until evicted LRU."""

    caches_prefixes = True

    __slots__ = ("_bag", "_cached", "_hash", "_hits", "_ids", "_keys", "_num_hashed", "_queue",
                 "_ref", "_reqs", "num_cached_free", "preempted", "run_cached", "stats")

    def __init__(self, num_blocks: int, block_size: int) -> None:
        super().__init__(num_blocks, block_size)
        self._queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._ref = [0] * num_blocks
        self._hash: list[Key | None] = [None] * num_blocks
        self._cached: dict[Key, int | dict[int, None]] = {}  # key -> block (first = found)
        self._ids: dict[int, list[int]] = {}  # owner -> its blocks in token order (growth
        # blocks not yet attributed excepted)
        self._num_hashed: dict[int, int] = {}  # owner -> its leading blocks that have a key
        self._hits: dict[int, tuple[int, int, int, int, bool]] = {}  # owner -> its admission
        self._reqs: dict[int, Request] = {}  # owner -> request (for its keys)
        self._keys: dict[int, list[int]] = {}  # request index -> shared_keys, while known
        self._bag: list[int] = []  # blocks taken by decode growth, not attributed yet
        self.num_cached_free = 0  # free blocks that hold a cached block (evictable)
        self.run_cached: list[int] = []  # num_cached_free during each step of the last run
        self.preempted: set[int] = set()  # requests preempted at least once (for the stats)
        self.stats = PrefixCacheStats()

    # -- lookups -----------------------------------------------------------------------------

    def lookup(self, request: Request, num_tokens: int) -> list[int]:
        """Cached blocks a request of num_tokens tokens (prompt + generated) would reuse."""
        keys = self._shared_keys(request)
        cached, index, found = self._cached, request.index, []
        for b in range((num_tokens - 1) // self.block_size):
            entry = cached.get(keys[b] if b < len(keys) else (index, b))
            if entry is None:
                break
            found.append(entry if isinstance(entry, int) else next(iter(entry)))
        return found

    def evictable(self, blocks: list[int]) -> int:
        """How many of these cached blocks are free (a hit takes them out of the pool)."""
        ref = self._ref
        return sum(1 for i in blocks if ref[i] == 0)

    # -- allocation --------------------------------------------------------------------------

    def allocate_hit(self, owner: int, request: Request, blocks: list[int],
                     num_tokens: int) -> None:
        """owner (not holding blocks yet) starts with these cached blocks (from lookup for
        num_tokens tokens); counts the admission in stats."""
        assert owner not in self._ids, owner
        ref, queue = self._ref, self._queue
        for i in blocks:
            if ref[i] == 0:
                del queue[i]
                self.num_free -= 1
                self.num_cached_free -= 1
            ref[i] += 1
        self.hold(owner, len(blocks))
        self._ids[owner] = list(blocks)
        self._num_hashed[owner] = len(blocks)
        self._reqs[owner] = request
        bs = self.block_size
        record = (num_tokens, len(blocks) * bs, (num_tokens - 1) // bs, len(blocks),
                  request.index in self.preempted)
        self._hits[owner] = record
        self.stats.record(*record)

    def allocate(self, owner: int, num_blocks: int) -> None:
        super().allocate(owner, num_blocks)
        self._ids.setdefault(owner, []).extend(self._take(num_blocks))

    def cache_blocks(self, owner: int, request: Request, num_tokens: int) -> None:
        self._reqs[owner] = request
        self._key_blocks(owner, request, num_tokens)

    def take_step_growth(self, step: int) -> bool:
        before = self.num_free
        if not super().take_step_growth(step):
            return False
        self._bag.extend(self._take(before - self.num_free))
        return True

    def take_run_growth(self, step: int, num_steps: int) -> list[int]:
        out = super().take_run_growth(step, num_steps)
        cached = [self.num_cached_free]
        for prev, used in pairwise(out):
            if used != prev:
                self._bag.extend(self._take(used - prev))
            cached.append(self.num_cached_free)
        self.run_cached = cached
        return out

    def stop_growth(self, owner: int) -> None:
        self._attribute(owner)
        super().stop_growth(owner)

    # -- release -----------------------------------------------------------------------------

    def free(self, owner: int) -> int:
        """Release owner's blocks: those no one else holds go back to the free queue, tail
        first, uncached ones to the front and cached ones to the back."""
        self._attribute(owner)
        n = super().free(owner)
        ids = self._ids.pop(owner, [])
        assert len(ids) == n, (owner, len(ids), n)
        self._num_hashed.pop(owner, None)
        self._hits.pop(owner, None)
        request = self._reqs.pop(owner, None)
        if request is not None:
            self._keys.pop(request.index, None)
        ref, key = self._ref, self._hash
        front: list[int] = []
        back: list[int] = []
        for i in reversed(ids):
            ref[i] -= 1
            if ref[i]:
                self.num_free -= 1  # still held by another request
            else:
                (front if key[i] is None else back).append(i)
        queue = self._queue
        for i in reversed(front):
            queue[i] = None
            queue.move_to_end(i, last=False)
        for i in back:
            queue[i] = None
        self.num_cached_free += len(back)
        return n

    def undo_allocation(self, owner: int) -> None:
        """Take back an admission of the schedule call in progress: the blocks it keyed were
        never computed, so they lose their keys; its stats are taken back."""
        record = self._hits.get(owner)
        if record is not None:
            self.stats.record(*record, sign=-1)
        ids = self._ids.get(owner, [])
        start = record[3] if record is not None else 0
        for b in range(start, self._num_hashed.get(owner, 0)):
            self._drop_key(ids[b])
        self._num_hashed[owner] = start
        self.free(owner)

    # -- internals ---------------------------------------------------------------------------

    def _shared_keys(self, request: Request) -> list[int]:
        keys = self._keys.get(request.index)
        if keys is None:
            keys = shared_keys(request.prefix, request.input_tokens, self.block_size)
            self._keys[request.index] = keys
        return keys

    def _take(self, n: int) -> list[int]:
        """Pop n blocks from the front of the free queue, evicting the cached ones."""
        queue, ref, key = self._queue, self._ref, self._hash
        out = []
        for _ in range(n):
            i, _ = queue.popitem(last=False)
            if key[i] is not None:
                self._drop_key(i)
                self.num_cached_free -= 1
                self.stats.evicted_blocks += 1
            ref[i] = 1
            out.append(i)
        return out

    def _key_blocks(self, owner: int, request: Request, num_tokens: int) -> None:
        """Give owner's full blocks within its first num_tokens tokens their keys."""
        ids = self._ids.get(owner, [])
        start, full = self._num_hashed.get(owner, 0), min(num_tokens // self.block_size,
                                                          len(ids))
        if full <= start:
            return
        keys, index, cached, key = self._shared_keys(request), request.index, self._cached, \
            self._hash
        for b in range(start, full):
            i = ids[b]
            k: Key = keys[b] if b < len(keys) else (index, b)
            key[i] = k
            entry = cached.get(k)
            if entry is None:
                cached[k] = i
            elif isinstance(entry, int):
                cached[k] = {entry: None, i: None}  # vLLM keeps duplicates; the first is found
            else:
                entry[i] = None
        self._num_hashed[owner] = full

    def _drop_key(self, i: int) -> None:
        k = self._hash[i]
        assert k is not None
        self._hash[i] = None
        entry = self._cached[k]
        if isinstance(entry, int):
            del self._cached[k]
            return
        del entry[i]
        if len(entry) == 1:
            self._cached[k] = next(iter(entry))

    def _attribute(self, owner: int) -> None:
        """A growing owner: hand it its growth blocks from the bag and key its full blocks."""
        kv_tokens = self.grown_tokens(owner)
        if kv_tokens is None:
            return
        ids = self._ids.setdefault(owner, [])
        extra = blocks_for(kv_tokens, self.block_size) - len(ids)
        if extra:
            bag = self._bag
            ids.extend(bag[-extra:])
            del bag[-extra:]
        request = self._reqs.get(owner)
        if request is not None:
            self._key_blocks(owner, request, kv_tokens)
