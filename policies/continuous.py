"""Continuous (iteration-level) batching with paged KV: Orca (OSDI'22) scheduling with the
vLLM V1 scheduler's semantics and knob names, optional chunked prefill (Sarathi-Serve).

Every step re-forms the batch: each running request that finished its prefill decodes one
token; partially prefilled requests get their next chunk; waiting requests are admitted while
the token budget (max_num_batched_tokens), the sequence limit (max_num_seqs) and free KV blocks
allow. When a decode needs a new block and none is free, the newest running request (fcfs) or
the least urgent one (priority) is preempted and later recomputed from prompt + generated.
While preempting, no new request is admitted in that step (as in vLLM).

Bookkeeping is per event, not per token: a decoding request's context grows by one per step,
so its length is derived from the global step count, its finishing step sits in a heap, and
the blocks each step needs are counted by the `BlockLedger` per (step mod block_size).

Variants extend `Continuous` through its hooks (docs/POLICIES.md), never its private fields:
`queue_order`, `token_budget`, `chunk_cap`, `admission_tokens`, `admit`,
`preemption_victim` and `max_decode_repeats`, with the helpers below them (`waiting`,
`ledger`, `admit_head`, `return_to_queue`, `can_adopt`/`adopt`, `step_shape`, ...).
"""

from __future__ import annotations

import heapq
from collections.abc import ValuesView
from dataclasses import dataclass
from typing import Literal

from batchsim.policies.base import (
    Plan,
    Policy,
    PrefillChunk,
    StepEvents,
    StepShape,
    Wait,
    chunk_attn_pairs,
)
from batchsim.policies.block_ledger import BlockLedger
from batchsim.policies.kv import MemoryFacts
from batchsim.policies.prefix_cache import PrefixCachingLedger
from batchsim.policies.queues import QueueKey, WaitingQueue
from batchsim.policies.registry import register
from batchsim.policies.request import Request
from batchsim.policies.seq import Seq
from batchsim.policies.vllm_versions import NULL_BLOCKS, vllm_defaults


@dataclass(frozen=True)
class ContinuousConfig:
    max_num_seqs: int = 256  # running requests at most
    max_num_batched_tokens: int = 8192  # tokens (prefill + decode) per step at most
    enable_chunked_prefill: bool = True  # split prompts that do not fit the step's token budget
    long_prefill_token_threshold: int = 0  # max prefill tokens per request per step; 0 = no cap
    block_size: int = 16  # tokens per KV block
    gpu_memory_utilization: float = 0.9  # fraction of device memory for weights + activations + KV
    policy: Literal["fcfs", "priority"] = "fcfs"
    # vLLM's scheduling behaviours (policies/vllm_versions.py: which versions do what). None =
    # the default of vllm_version, the vLLM release to match ("" = the newest read, 0.33; a
    # profile that states its vLLM version sets it, unless --set).
    vllm_version: str = ""
    # admit a waiting or preempted request only when blocks for its whole sequence (prompt +
    # tokens generated before a preemption) are free, not just its first chunk's (vLLM >= 0.19)
    scheduler_reserve_full_isl: bool | None = None
    # while running + waiting <= 1, long_prefill_token_threshold is ignored: a lone request
    # prefills in full-budget chunks (vLLM >= 0.31; vLLM has no knob for it)
    long_prefill_uncapped_when_alone: bool | None = None
    # the engine schedules one step ahead (vLLM >= 0.14 on GPUs): step k+1 is decided when
    # step k starts, so a request arriving during step k first runs in step k+2 and a request
    # finishing in step k frees its seat and blocks for step k+2
    async_scheduling: bool | None = None
    # KV pool size in blocks (vLLM's name and meaning: its pool's block count, of which block
    # 0 is vLLM's null block, so N - 1 hold KV), replacing the capacity derived from memory and
    # gpu_memory_utilization; None = derived
    num_gpu_blocks_override: int | None = None
    # vLLM's automatic prefix caching (policies/prefix_cache.py): full blocks stay cached
    # after their request and a new one reuses the longest cached prefix. Off by default,
    # unlike vLLM V1 (on for generative models): a workload needs prefix identities for it
    # to matter (hash_ids, prefix groups), and an engine config that states it sets it.
    enable_prefix_caching: bool = False

    def __post_init__(self) -> None:
        # Resolve the None behaviours now, so the run's config records what was simulated.
        for knob, default in vllm_defaults(self.vllm_version).items():
            if getattr(self, knob) is None:
                object.__setattr__(self, knob, default)
        for knob in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, knob) <= 0:
                raise ValueError(f"{knob} must be positive, got {getattr(self, knob)}")
        if self.num_gpu_blocks_override is not None and \
                self.num_gpu_blocks_override <= NULL_BLOCKS:
            raise ValueError("num_gpu_blocks_override must be at least 2 (vLLM keeps one block "
                             "of the pool as its null block; none = derived from memory), got "
                             f"{self.num_gpu_blocks_override}")
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0 (0 = no cap)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than "
                f"max_num_seqs ({self.max_num_seqs}): every running request decodes one token "
                "per step, so raise max_num_batched_tokens or lower max_num_seqs"
            )
        if self.policy not in ("fcfs", "priority"):
            raise ValueError(f"policy must be 'fcfs' or 'priority', got {self.policy!r}")



@register("continuous", ContinuousConfig)
class Continuous(Policy):
    config: ContinuousConfig

    def __init__(self, config: ContinuousConfig, memory: MemoryFacts, max_model_len: int) -> None:
        super().__init__(config, memory, max_model_len)
        if config.num_gpu_blocks_override is not None:
            # vLLM's BlockPool takes block 0 as its null block (a placeholder that never holds
            # KV), so a pool of N blocks gives requests N - 1
            num_blocks = config.num_gpu_blocks_override - NULL_BLOCKS
        else:
            num_blocks = memory.kv_capacity_tokens(config.gpu_memory_utilization) // \
                config.block_size
        self.ledger = (PrefixCachingLedger if config.enable_prefix_caching else BlockLedger)(
            num_blocks, config.block_size)
        self.caches_prefixes = config.enable_prefix_caching
        self._hit: tuple[Seq | None, list[int]] = (None, [])  # last prefix-cache lookup
        self._waiting: WaitingQueue[Seq] = WaitingQueue(self.queue_order())
        self._running: dict[int, Seq] = {}  # scheduling order: newest last
        self._prefilling: dict[int, Seq] = {}
        self._decoding: dict[int, Request] = {}
        # list(self._decoding.values()), rebuilt only when the decode set changes: a Plan's
        # `decodes` (never mutated by executors), shared by the plans of a steady batch
        self._decode_list: list[Request] | None = None
        self._finish_heap: list[tuple[int, int, int, Seq]] = []  # (finish_step, index, version)
        self._decode_kv = 0  # sum of KV lengths of decoding requests before the current step
        self._kv_tokens = 0  # tokens held in KV by all running requests
        self._step = 0  # index of the next step
        self._step_budget = config.max_num_batched_tokens  # token_budget() of this step
        self._alone = False  # this step: running + waiting <= 1 (vLLM's lone-request rule)
        # async_scheduling: requests handed over since the last schedule call (schedulable
        # from the next one), and requests that finished in the last step, still holding
        # their seat and blocks (with their KV length) until the end of this schedule call
        self._held: list[Seq] = []
        # preempted by a decision that ran nothing (a Wait): reported with the next Plan
        self._unreported: list[Request] = []
        self._finished: dict[int, tuple[Seq, int]] = {}

    # -- hooks: override these to make a variant ---------------------------------------------

    def queue_order(self) -> QueueKey | None:
        """Order of the waiting queue, asked once at construction: a key function of a `Seq`
        (smallest first, unique per request, evaluated when it is queued or re-queued after a
        preemption), or None for arrival order with preempted requests first in line (FCFS)."""
        return (lambda seq: seq.sort_key) if self.config.policy == "priority" else None

    def token_budget(self) -> int:
        """Tokens (prefill + decode) the step being formed may hold; asked once per step."""
        return self.config.max_num_batched_tokens

    def chunk_cap(self, seq: Seq) -> int:
        """Most prefill tokens seq may get in one step (long_prefill_token_threshold, unless
        it is alone in the scheduler and long_prefill_uncapped_when_alone)."""
        cfg = self.config
        if self._alone and cfg.long_prefill_uncapped_when_alone:
            return cfg.max_num_batched_tokens
        return cfg.long_prefill_token_threshold or cfg.max_num_batched_tokens

    def admission_tokens(self, seq: Seq, budget: int) -> int:
        """Admission check for the waiting seq, with budget tokens left in the step: the size
        of its first chunk if it can start now (token budget, free KV blocks: for its whole
        sequence under scheduler_reserve_full_isl, else for the first chunk), else 0."""
        ledger = self.ledger
        # a prefix-cache hit: tokens found cached, and blocks it saves (net of the free
        # cached blocks it takes out of the pool)
        hit, saved = self.prefix_hit(seq) if self.caches_prefixes else (0, 0)
        if self.config.scheduler_reserve_full_isl and not ledger.can_allocate(
                ledger.blocks_for(seq.target) - saved):
            return 0
        n = min(seq.target - hit, self.chunk_cap(seq))
        if n > budget:
            # Without chunking a prompt waits for a step with room; a recompute longer than
            # the whole budget could never fit, so it is chunked regardless.
            if not self.config.enable_chunked_prefill and n <= self._step_budget:
                return 0
            n = budget
        return n if ledger.can_allocate(ledger.blocks_for(hit + n) - saved) else 0

    def admit(self, budget: int, chunks: list[PrefillChunk]) -> None:
        """Admit waiting requests into the step being formed (chunks: its prefill chunks so
        far), with budget tokens left; not called in a step that had to preempt."""
        waiting, max_seqs = self._waiting, self.config.max_num_seqs
        while len(waiting) and len(self._running) < max_seqs and budget > 0:
            n = self.admission_tokens(waiting.peek(), budget)
            if n == 0:
                break
            self.admit_head(n, chunks)
            budget -= n

    def preemption_victim(self, exclude: set[int]) -> Seq:
        """The running request to preempt when blocks run out: the newest (fcfs) or the least
        urgent (priority), skipping the workload rows in exclude (chunks already planned)."""
        if self.config.policy == "priority" or exclude:
            candidates = [s for s in self._running.values() if s.req.index not in exclude]
            if self.config.policy == "priority":
                return max(candidates, key=lambda s: s.sort_key)
            return candidates[-1]
        return self._running[next(reversed(self._running))]

    def max_decode_repeats(self) -> int:
        """How many identical decode steps the plan may offer (the fast-forward): until the
        first finish or until the free blocks run out. Return 1 whenever something the
        executor cannot see could change the next step."""
        if self._held or self._finished:
            return 1  # the next schedule call sees them (async_scheduling)
        limit = self.steps_until_first_finish()
        if limit <= 1:
            return 1
        return self.ledger.growth_steps(self._step, limit)

    # -- helpers for hooks -------------------------------------------------------------------

    @property
    def waiting(self) -> WaitingQueue[Seq]:
        """Requests not running, in queue_order (pop one only to admit or route it)."""
        return self._waiting

    @property
    def running(self) -> ValuesView[Seq]:
        """Running requests (prefilling or decoding), oldest admission first."""
        return self._running.values()

    @property
    def current_step(self) -> int:
        """Index of the step being formed (or next to be)."""
        return self._step

    @property
    def num_decoding(self) -> int:
        return len(self._decoding)

    def is_decoding(self, request: Request) -> bool:
        return request.index in self._decoding

    def has_seat(self) -> bool:
        """Fewer than max_num_seqs requests are running."""
        return len(self._running) < self.config.max_num_seqs

    def admit_head(self, num_tokens: int, chunks: list[PrefillChunk]) -> None:
        """Move the queue's head into the running set with a first chunk of num_tokens
        (appended to chunks, after its prefix-cache hit), taking its blocks; the caller
        checked admission_tokens."""
        seq = self._waiting.pop()
        index = seq.req.index
        if self.caches_prefixes:
            self._admit_cached(seq, num_tokens)
        else:
            self.ledger.allocate(index, self.ledger.blocks_for(num_tokens))
        self._running[index] = seq
        self._prefilling[index] = seq
        chunks.append(PrefillChunk(seq.req, seq.computed, num_tokens))

    def return_to_queue(self, chunk: PrefillChunk) -> None:
        """Undo admit_head of this schedule call: free the request's blocks and put it back
        at the head of the queue (undo in reverse admission order to keep the order)."""
        index = chunk.request.index
        seq = self._running.pop(index)
        del self._prefilling[index]
        self.ledger.undo_allocation(index)
        self._kv_tokens -= seq.computed  # a prefix-cache hit
        seq.computed = 0
        self._waiting.push_front(seq)

    def prefix_hit(self, seq: Seq) -> tuple[int, int]:
        """With enable_prefix_caching, for the waiting seq: (tokens found in the prefix
        cache, blocks that saves: cached blocks in use by others; free cached blocks it would
        take count as allocated). Only a request with nothing computed looks it up."""
        ledger = self.ledger
        assert isinstance(ledger, PrefixCachingLedger)
        found = ledger.lookup(seq.req, seq.target) if seq.computed == 0 else []
        self._hit = (seq, found)
        return len(found) * ledger.block_size, len(found) - ledger.evictable(found)

    def can_adopt(self, seq: Seq) -> bool:
        """A request prefilled elsewhere (seq.computed tokens of KV ready) can join this
        step's decodes: a seat is free and its blocks, plus the one its next token opens, fit
        beside this step's decode growth without preempting anyone."""
        if not self.has_seat():
            return False
        ledger = self.ledger
        own = ledger.blocks_for(seq.computed) + (seq.computed % ledger.block_size == 0)
        return own <= ledger.num_free - ledger.growth_at(self._step)

    def adopt(self, seq: Seq) -> None:
        """Start decoding a request prefilled elsewhere (after can_adopt)."""
        index = seq.req.index
        self.ledger.allocate(index, self.ledger.blocks_for(seq.computed))
        self._running[index] = seq
        self._kv_tokens += seq.computed
        self._start_decode(seq)

    def step_shape(self, chunks: list[PrefillChunk], extra_tokens: int = 0) -> StepShape:
        """Shape of the step being formed (this step's decodes plus chunks), plus a fresh
        prompt of extra_tokens if given."""
        n_dec = len(self._decoding)
        tokens = extra_tokens
        pairs = chunk_attn_pairs(0, extra_tokens) if extra_tokens else 0
        for _, start, n in chunks:
            tokens += n
            pairs += chunk_attn_pairs(start, n)
        seqs = n_dec + len(chunks) + (1 if extra_tokens else 0)
        return StepShape(seqs, tokens, n_dec, pairs, self._decode_kv + n_dec)

    def steps_until_first_finish(self) -> int:
        """Steps from the current one (included) until a decoding request produces its last
        token and frees its seat and blocks; 1 if none is decoding."""
        heap = self._finish_heap
        while heap and heap[0][2] != heap[0][3].version:
            heapq.heappop(heap)  # stale: preempted since it was pushed
        return heap[0][0] - self._step + 1 if heap else 1

    # -- Policy interface -------------------------------------------------------------------

    @property
    def kv_capacity_blocks(self) -> int:
        return self.ledger.num_blocks

    @property
    def kv_block_size(self) -> int:
        return self.ledger.block_size

    def check_workload(self, max_input_tokens: int, max_total_tokens: int) -> None:
        cfg, ledger = self.config, self.ledger
        if not cfg.enable_chunked_prefill and max_input_tokens > cfg.max_num_batched_tokens:
            raise ValueError(
                f"max_num_batched_tokens ({cfg.max_num_batched_tokens}) is smaller than the "
                f"longest prompt ({max_input_tokens}): raise it or enable chunked prefill"
            )
        needed = ledger.blocks_for(max_total_tokens)
        if needed > ledger.num_blocks:
            raise ValueError(
                f"the longest request ({max_total_tokens} tokens, {needed} blocks) does not fit "
                f"the KV cache ({ledger.num_blocks} blocks of {ledger.block_size} tokens): "
                "raise gpu_memory_utilization or num_gpu_blocks_override, or reject long "
                "requests"
            )

    def add_request(self, request: Request, now_s: float) -> str | None:
        if self.config.async_scheduling:
            self._held.append(Seq(request))  # the step being decided now was decided already
        else:
            self._waiting.push(Seq(request))
        return None

    def has_work(self) -> bool:
        return bool(self._running) or len(self._waiting) > 0 or bool(self._held)

    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        # A step that preempted everything running schedules nothing in vLLM (a preempting
        # step skips the waiting queue) and takes no time: right after it the scheduler runs
        # again and admits, the preempted first; their preemptions go with that plan.
        if not self.config.async_scheduling:
            decision = self._schedule_step()
            if isinstance(decision, Wait) and self._unreported:
                decision = self._schedule_step()
            return decision
        # One step ahead: vLLM decided this step when the previous one started, before that
        # step's arrivals (held) and before the requests finishing in it (_finished) left.
        decision = self._schedule_step()
        if isinstance(decision, Wait) and (self._held or self._finished or self._unreported):
            # vLLM's step here is empty and takes no time: right after it, it schedules again
            # knowing everything, as a synchronous scheduler does now.
            self._catch_up()
            decision = self._schedule_step()
        self._catch_up()
        return decision

    def _catch_up(self) -> None:
        """async_scheduling: what the next decision knows that this one did not."""
        if self._finished:
            for seq, kv_len in self._finished.values():
                self._release(seq, kv_len)
            self._finished.clear()
        if self._held:
            for seq in self._held:
                self._waiting.push(seq)
            self._held.clear()

    def _schedule_step(self) -> Plan | Wait:
        step, ledger = self._step, self.ledger
        # vLLM >= 0.31 ignores long_prefill_token_threshold for a request alone in the
        # scheduler (running, finishing ones included, + waiting; held arrivals are unseen)
        self._alone = len(self._running) + len(self._waiting) <= 1
        budget = self._step_budget = self.token_budget()
        preempted: list[Request] = []
        # 1. Decodes: one token each; blocks for those crossing a block boundary this step
        # (preempting a decoding request also drops its own need).
        while not ledger.take_step_growth(step):
            victim = self.preemption_victim(set())
            self._preempt(victim)
            preempted.append(victim.req)
        budget -= len(self._decoding)
        # 2. Requests part-way through their prefill, in running order.
        chunks: list[PrefillChunk] = []
        for seq in list(self._prefilling.values()) if self._prefilling else ():
            if budget <= 0:
                break
            index = seq.req.index
            if index not in self._prefilling:
                continue  # preempted while making room for an earlier one
            n = min(seq.target - seq.computed, budget, self.chunk_cap(seq))
            blocks = ledger.extra_blocks(seq.computed, n)
            while blocks > ledger.num_free and index in self._running:
                victim = self.preemption_victim({c.request.index for c in chunks})
                self._preempt(victim)
                preempted.append(victim.req)
            if index not in self._running:
                continue
            ledger.allocate(index, blocks)
            ledger.cache_blocks(index, seq.req, seq.computed + n)
            chunks.append(PrefillChunk(seq.req, seq.computed, n))
            budget -= n
        # 3. Admit waiting requests, unless this step had to preempt.
        if not preempted:
            self.admit(budget, chunks)
        return self._plan(chunks, preempted)

    def complete(self, plan: Plan, num_steps: int) -> StepEvents:
        assert 1 <= num_steps <= plan.max_repeats, (num_steps, plan.max_repeats)
        step, last = self._step, self._step + num_steps - 1
        n_dec = len(self._decoding)
        events = StepEvents()
        # KV during each step of the run (blocks for step 0 were taken in schedule()),
        # reported as held during each step, before finished requests free theirs.
        tokens0 = self._kv_tokens + plan.shape.num_prefill_tokens + n_dec
        if num_steps > 1:
            events.kv_blocks_used = self.ledger.take_run_growth(step, num_steps)
            events.kv_tokens_used = (list(range(tokens0, tokens0 + n_dec * num_steps, n_dec))
                                     if n_dec else [tokens0] * num_steps)
        else:
            events.kv_blocks_used = [self.ledger.num_blocks - self.ledger.num_free]
            events.kv_tokens_used = [tokens0]
        if self.caches_prefixes:
            self._cached_blocks(events, num_steps)
        self._kv_tokens = tokens0 + n_dec * (num_steps - 1)
        self._decode_kv += n_dec * num_steps
        self._step = last + 1
        # Decodes reaching their last token (only ever at the run's last step).
        heap = self._finish_heap
        while heap and heap[0][0] <= last:
            finish_step, _, version, seq = heapq.heappop(heap)
            if version != seq.version:
                continue
            assert finish_step == last, (finish_step, step, last)
            kv_len = seq.entry_len + (self._step - seq.entry_step)
            self._decode_kv -= kv_len
            del self._decoding[seq.req.index]
            self._decode_list = None
            self._finish(seq, kv_len)
            events.finished.append((seq.req, num_steps - 1))
        # Prefill chunks: a chunk that completes its target samples a token.
        for chunk in plan.prefills:
            seq = self._running[chunk.request.index]
            if not seq.advance_prefill(chunk.num_tokens):
                continue
            del self._prefilling[seq.req.index]
            (events.resumed if seq.gen > 1 else events.first_tokens).append((seq.req, 0))
            if seq.gen >= seq.req.output_tokens:
                self._finish(seq, seq.computed)
                events.finished.append((seq.req, 0))
            else:
                self._start_decode(seq)
        return events

    def abort(self, request: Request) -> bool:
        index = request.index
        # under async_scheduling an arrival may still be held back a step, and a finished
        # request may still hold its blocks for one: both leave at once
        self._held = [s for s in self._held if s.req is not request]
        if index in self._finished:
            self._release(*self._finished.pop(index))
            return True
        seq = self._running.get(index)
        if seq is None:
            for queued in self._waiting:
                if queued.req is request:
                    self._waiting.remove(queued)  # a waiting request holds no blocks
                    break
            return True
        if index in self._decoding:  # as a preemption, without the requeue
            kv_len = seq.entry_len + (self._step - seq.entry_step)
            self._decode_kv -= kv_len
            del self._decoding[index]
            self._decode_list = None
            seq.version += 1  # its finish-heap entry goes stale
        else:
            kv_len = seq.computed
            del self._prefilling[index]
        self._release(seq, kv_len)
        return True

    # -- internals ---------------------------------------------------------------------------

    def _plan(self, chunks: list[PrefillChunk], preempted: list[Request]) -> Plan | Wait:
        if not chunks and not self._decoding:
            assert len(self._running) == len(self._finished), "running requests, none scheduled"
            self._unreported.extend(preempted)
            return Wait()
        if self._unreported:
            preempted = self._unreported + preempted
            self._unreported = []
        repeats = 1 if chunks or preempted else self.max_decode_repeats()
        decodes = self._decode_list
        if decodes is None:
            decodes = self._decode_list = list(self._decoding.values())
        return Plan(
            prefills=chunks,
            decodes=decodes,
            shape=self.step_shape(chunks),
            max_repeats=repeats,
            preempted=preempted,
        )

    def _start_decode(self, seq: Seq) -> None:
        seq.entry_step = self._step
        seq.entry_len = seq.computed
        seq.finish_step = seq.entry_step + seq.req.output_tokens - seq.gen - 1
        self.ledger.start_growth(seq.req.index, seq.computed, self._step)
        self._decode_kv += seq.entry_len
        self._decoding[seq.req.index] = seq.req
        self._decode_list = None
        heapq.heappush(self._finish_heap, (seq.finish_step, seq.req.index, seq.version, seq))

    def _finish(self, seq: Seq, kv_len: int) -> None:
        """seq produced its last token: it leaves now, or after the next schedule call under
        async_scheduling (its blocks, no longer growing, are held until then)."""
        if not self.config.async_scheduling:
            self._release(seq, kv_len)
            return
        index = seq.req.index
        self.ledger.stop_growth(index)
        self._finished[index] = (seq, kv_len)

    def _preempt(self, seq: Seq) -> None:
        """Recompute preemption: free all of seq's blocks and queue it again, first in line.

        A request whose last token is in flight (async_scheduling) is running to vLLM and can
        be its victim: its blocks are freed early, and there is nothing left to recompute."""
        index = seq.req.index
        if index in self._finished:
            self._release(*self._finished.pop(index))
            return
        if self.caches_prefixes:
            self._prefix_ledger().preempted.add(index)
        if index in self._decoding:
            kv_len = seq.entry_len + (self._step - seq.entry_step)
            seq.gen += self._step - seq.entry_step
            self._decode_kv -= kv_len
            del self._decoding[index]
            self._decode_list = None
            seq.version += 1
        else:
            kv_len = seq.computed
            del self._prefilling[index]
        self._release(seq, kv_len)
        seq.restart()
        self._waiting.push_front(seq)

    def _release(self, seq: Seq, kv_len: int) -> None:
        del self._running[seq.req.index]
        self.ledger.free(seq.req.index)
        self._kv_tokens -= kv_len

    # -- prefix caching (policies/prefix_cache.py) ---------------------------------------------

    def _prefix_ledger(self) -> PrefixCachingLedger:
        ledger = self.ledger
        assert isinstance(ledger, PrefixCachingLedger)
        return ledger

    def _admit_cached(self, seq: Seq, num_tokens: int) -> None:
        """admit_head with enable_prefix_caching: the hit's blocks, then the chunk's."""
        ledger = self._prefix_ledger()
        last, found = self._hit
        if last is not seq:
            found = ledger.lookup(seq.req, seq.target)
        self._hit = (None, [])
        index = seq.req.index
        ledger.allocate_hit(index, seq.req, found, seq.target)
        seq.computed = len(found) * ledger.block_size
        self._kv_tokens += seq.computed
        ledger.allocate(index, ledger.blocks_for(seq.computed + num_tokens) - len(found))
        ledger.cache_blocks(index, seq.req, seq.computed + num_tokens)

    def _cached_blocks(self, events: StepEvents, num_steps: int) -> None:
        ledger = self._prefix_ledger()
        events.kv_cached_blocks = (list(ledger.run_cached) if num_steps > 1
                                   else [ledger.num_cached_free])

    def extra_metrics(self) -> dict[str, object]:
        if not self.caches_prefixes:
            return {}
        return {"prefix_cache": self._prefix_ledger().stats.summary()}
