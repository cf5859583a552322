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
the number of new blocks each step needs is a count per (step mod block_size).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Literal

import numpy as np

from batchsim.policies.base import (
    Plan,
    Policy,
    PrefillChunk,
    StepEvents,
    StepShape,
    Wait,
    chunk_attn_pairs,
)
from batchsim.policies.kv import MemoryFacts, blocks_for
from batchsim.policies.queues import WaitingQueue
from batchsim.policies.registry import register
from batchsim.policies.request import Request


@dataclass(frozen=True)
class ContinuousConfig:
    max_num_seqs: int = 256  # running requests at most
    max_num_batched_tokens: int = 8192  # tokens (prefill + decode) per step at most
    enable_chunked_prefill: bool = True  # split prompts that do not fit the step's token budget
    long_prefill_token_threshold: int = 0  # max prefill tokens per request per step; 0 = no cap
    block_size: int = 16  # tokens per KV block
    gpu_memory_utilization: float = 0.9  # fraction of device memory for weights + activations + KV
    policy: Literal["fcfs", "priority"] = "fcfs"

    def __post_init__(self) -> None:
        for knob in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, knob) <= 0:
                raise ValueError(f"{knob} must be positive, got {getattr(self, knob)}")
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


class _Seq:
    """A request's scheduling state inside the continuous policy."""

    __slots__ = (
        "computed",
        "entry_len",
        "entry_step",
        "finish_step",
        "gen",
        "req",
        "residue",
        "target",
        "version",
    )

    def __init__(self, req: Request) -> None:
        self.req = req
        self.target = req.input_tokens  # tokens to prefill: prompt (+ generated, on recompute)
        self.computed = 0  # tokens in KV while prefilling
        self.gen = 0  # tokens generated when it last entered decode or was preempted
        self.entry_step = 0  # first step index it decodes in
        self.entry_len = 0  # KV length before that step
        self.finish_step = 0  # step index producing its last token
        self.residue = 0  # it needs a new block at steps s with s % block_size == residue
        self.version = 0  # bumped on preemption: stale heap entries are skipped

    @property
    def sort_key(self) -> tuple[int, float, int]:
        return (self.req.priority, self.req.arrival_s, self.req.index)


@register("continuous", ContinuousConfig)
class Continuous(Policy):
    config: ContinuousConfig

    def __init__(self, config: ContinuousConfig, memory: MemoryFacts, max_model_len: int) -> None:
        super().__init__(config, memory, max_model_len)
        self._bs = config.block_size
        capacity = memory.kv_capacity_tokens(config.gpu_memory_utilization)
        self._num_blocks = capacity // self._bs
        self._free = self._num_blocks
        self._chunk_cap = config.long_prefill_token_threshold or config.max_num_batched_tokens
        self._waiting: WaitingQueue[_Seq] = WaitingQueue(config.policy == "priority")
        self._running: dict[int, _Seq] = {}  # scheduling order: newest last
        self._prefilling: dict[int, _Seq] = {}
        self._decoding: dict[int, Request] = {}
        self._finish_heap: list[tuple[int, int, int, _Seq]] = []  # (finish_step, index, version)
        self._need = [0] * self._bs  # decoding requests needing a new block, by step % bs
        self._decode_kv = 0  # sum of KV lengths of decoding requests before the current step
        self._kv_tokens = 0  # tokens held in KV by all running requests
        self._step = 0  # index of the next step

    # -- Policy interface -------------------------------------------------------------------

    @property
    def kv_capacity_blocks(self) -> int:
        return self._num_blocks

    @property
    def kv_block_size(self) -> int:
        return self._bs

    def check_workload(self, max_input_tokens: int, max_total_tokens: int) -> None:
        cfg = self.config
        if not cfg.enable_chunked_prefill and max_input_tokens > cfg.max_num_batched_tokens:
            raise ValueError(
                f"max_num_batched_tokens ({cfg.max_num_batched_tokens}) is smaller than the "
                f"longest prompt ({max_input_tokens}): raise it or enable chunked prefill"
            )
        needed = blocks_for(max_total_tokens, self._bs)
        if needed > self._num_blocks:
            raise ValueError(
                f"the longest request ({max_total_tokens} tokens, {needed} blocks) does not fit "
                f"the KV cache ({self._num_blocks} blocks of {self._bs} tokens): raise "
                "gpu_memory_utilization or reject long requests"
            )

    def add_request(self, request: Request, now_s: float) -> str | None:
        self._waiting.push(_Seq(request))
        return None

    def has_work(self) -> bool:
        return bool(self._running) or len(self._waiting) > 0

    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        step, budget = self._step, self.config.max_num_batched_tokens
        preempted: list[Request] = []
        # 1. Decodes: one token each; blocks for those crossing a block boundary this step.
        need = self._need[step % self._bs]
        while need > self._free:
            victim = self._victim()
            if victim.req.index in self._decoding and self._needs_block(victim, step):
                need -= 1  # the victim's own block is no longer needed
            self._preempt(victim, step, decode_block_taken=False)
            preempted.append(victim.req)
        self._free -= need
        budget -= len(self._decoding)
        # 2. Requests part-way through their prefill, in running order.
        chunks: list[PrefillChunk] = []
        for seq in list(self._prefilling.values()):
            if budget <= 0:
                break
            if seq.req.index not in self._prefilling:
                continue  # preempted while making room for an earlier one
            n = min(seq.target - seq.computed, budget, self._chunk_cap)
            blocks = blocks_for(seq.computed + n, self._bs) - blocks_for(seq.computed, self._bs)
            while blocks > self._free and seq.req.index in self._running:
                victim = self._victim(exclude={c.request.index for c in chunks})
                self._preempt(victim, step, decode_block_taken=True)
                preempted.append(victim.req)
            if seq.req.index not in self._running:
                continue
            self._free -= blocks
            chunks.append(PrefillChunk(seq.req, seq.computed, n))
            budget -= n
        # 3. Admit waiting requests, unless this step had to preempt.
        if not preempted:
            budget = self._admit(budget, chunks)
        return self._plan(chunks, preempted)

    def complete(self, plan: Plan, num_steps: int) -> StepEvents:
        assert 1 <= num_steps <= plan.max_repeats, (num_steps, plan.max_repeats)
        step, last = self._step, self._step + num_steps - 1
        n_dec = len(self._decoding)
        events = StepEvents()
        # KV after each step of the run (blocks for step 0 were taken in schedule()).
        # Reported as held during each step, before finished requests free theirs.
        used = self._num_blocks - self._free
        tokens0 = self._kv_tokens + plan.shape.num_prefill_tokens + n_dec
        if num_steps > 1:
            events.kv_blocks_used = blocks = self._run_blocks(used, step, num_steps)
            self._free -= blocks[-1] - used
            events.kv_tokens_used = (list(range(tokens0, tokens0 + n_dec * num_steps, n_dec))
                                     if n_dec else [tokens0] * num_steps)
        else:
            events.kv_blocks_used = [used]
            events.kv_tokens_used = [tokens0]
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
            self._release(seq, kv_len)
            self._need[seq.residue] -= 1
            self._decode_kv -= kv_len
            del self._decoding[seq.req.index]
            events.finished.append((seq.req, num_steps - 1))
        # Prefill chunks: a chunk that completes its target samples a token.
        for chunk in plan.prefills:
            seq = self._running[chunk.request.index]
            seq.computed += chunk.num_tokens
            if seq.computed < seq.target:
                continue
            del self._prefilling[seq.req.index]
            seq.gen += 1
            (events.resumed if seq.gen > 1 else events.first_tokens).append((seq.req, 0))
            if seq.gen >= seq.req.output_tokens:
                self._release(seq, seq.computed)
                events.finished.append((seq.req, 0))
            else:
                self._start_decode(seq)
        return events

    def abort(self, request: Request) -> bool:
        index = request.index
        seq = self._running.get(index)
        if seq is None:
            for queued in self._waiting:
                if queued.req is request:
                    self._waiting.remove(queued)  # a waiting request holds no blocks
                    break
            return True
        if index in self._decoding:  # as a preemption, without the requeue
            kv_len = seq.entry_len + (self._step - seq.entry_step)
            self._need[seq.residue] -= 1
            self._decode_kv -= kv_len
            del self._decoding[index]
            seq.version += 1  # its finish-heap entry goes stale
        else:
            kv_len = seq.computed
            del self._prefilling[index]
        self._release(seq, kv_len)
        return True

    # -- internals ---------------------------------------------------------------------------

    def _admit(self, budget: int, chunks: list[PrefillChunk]) -> int:
        cfg = self.config
        while len(self._waiting) and len(self._running) < cfg.max_num_seqs and budget > 0:
            n = self._admissible(self._waiting.peek(), budget)
            if n == 0:
                break
            budget = self._admit_head(n, budget, chunks)
        return budget

    def _admissible(self, seq: _Seq, budget: int) -> int:
        """Tokens of seq's first chunk if it can be admitted now (budget, blocks), else 0."""
        n = min(seq.target, self._chunk_cap)
        if n > budget:
            # Without chunking a prompt waits for a step with room; a recompute longer than
            # the whole budget could never fit, so it is chunked regardless.
            cfg = self.config
            if not cfg.enable_chunked_prefill and n <= cfg.max_num_batched_tokens:
                return 0
            n = budget
        return n if blocks_for(n, self._bs) <= self._free else 0

    def _admit_head(self, n: int, budget: int, chunks: list[PrefillChunk]) -> int:
        """Move the queue's head into the running set with a first chunk of n tokens."""
        seq = self._waiting.pop()
        self._free -= blocks_for(n, self._bs)
        self._running[seq.req.index] = seq
        self._prefilling[seq.req.index] = seq
        chunks.append(PrefillChunk(seq.req, 0, n))
        return budget - n

    def _plan(self, chunks: list[PrefillChunk], preempted: list[Request]) -> Plan | Wait:
        n_dec = len(self._decoding)
        if not chunks and not n_dec:
            assert not self._running, "running requests but nothing scheduled"
            return Wait()
        num_prefill = pairs = 0
        for _, start, n in chunks:
            num_prefill += n
            pairs += chunk_attn_pairs(start, n)
        shape = StepShape(n_dec + len(chunks), num_prefill, n_dec, pairs, self._decode_kv + n_dec)
        repeats = 1 if chunks or preempted else self._max_decode_repeats()
        return Plan(
            prefills=chunks,
            decodes=list(self._decoding.values()),
            shape=shape,
            max_repeats=repeats,
            preempted=preempted,
        )

    def _max_decode_repeats(self) -> int:
        """Identical decode steps from now until the first finish or until blocks run out."""
        heap = self._finish_heap
        while heap and heap[0][2] != heap[0][3].version:
            heapq.heappop(heap)
        limit = heap[0][0] - self._step + 1 if heap else 1
        if limit <= 1:
            return 1
        # Step 0's blocks are taken; count how many further steps the free blocks cover.
        per_cycle = sum(self._need)
        free = self._free
        if per_cycle == 0:
            return limit
        cycles = free // per_cycle
        steps = 1 + cycles * self._bs
        free -= cycles * per_cycle
        while steps < limit:
            need = self._need[(self._step + steps) % self._bs]
            if need > free:
                break
            free -= need
            steps += 1
        return min(steps, limit)

    def _run_blocks(self, used: int, step: int, num_steps: int) -> list[int]:
        """Blocks held during each step of a decode run whose first step holds `used`."""
        if num_steps > 12:
            extra = np.cumsum(np.asarray(self._need)[(step + np.arange(1, num_steps)) % self._bs])
            return [used, *(used + extra).tolist()]
        out = [used]
        need, bs, r = self._need, self._bs, (step + 1) % self._bs
        for _ in range(num_steps - 1):
            used += need[r]
            out.append(used)
            r = r + 1 if r + 1 < bs else 0
        return out

    def _start_decode(self, seq: _Seq) -> None:
        seq.entry_step = self._step
        seq.entry_len = seq.computed
        seq.finish_step = seq.entry_step + seq.req.output_tokens - seq.gen - 1
        seq.residue = (seq.entry_step - seq.entry_len) % self._bs
        self._need[seq.residue] += 1
        self._decode_kv += seq.entry_len
        self._decoding[seq.req.index] = seq.req
        heapq.heappush(self._finish_heap, (seq.finish_step, seq.req.index, seq.version, seq))

    def _needs_block(self, seq: _Seq, step: int) -> bool:
        return (step - seq.residue) % self._bs == 0

    def _victim(self, exclude: set[int] | None = None) -> _Seq:
        """Newest running request (fcfs) or least urgent (priority), not already chunked."""
        if self.config.policy == "priority" or exclude:
            candidates = [s for s in self._running.values() if not exclude or
                          s.req.index not in exclude]
            if self.config.policy == "priority":
                return max(candidates, key=lambda s: s.sort_key)
            return candidates[-1]
        return self._running[next(reversed(self._running))]

    def _preempt(self, seq: _Seq, step: int, decode_block_taken: bool) -> None:
        """Recompute preemption: free all of seq's blocks and queue it again, first in line.

        decode_block_taken: this step's decode blocks were already allocated (seq's included).
        """
        index = seq.req.index
        if index in self._decoding:
            kv_len = seq.entry_len + (step - seq.entry_step)
            if decode_block_taken and self._needs_block(seq, step):
                self._free += 1
            seq.gen += step - seq.entry_step
            self._need[seq.residue] -= 1
            self._decode_kv -= kv_len
            del self._decoding[index]
            seq.version += 1
        else:
            kv_len = seq.computed
            del self._prefilling[index]
        self._release(seq, kv_len)
        seq.target = seq.req.input_tokens + seq.gen
        seq.computed = 0
        self._waiting.push_front(seq)

    def _release(self, seq: _Seq, kv_len: int) -> None:
        del self._running[seq.req.index]
        self._free += blocks_for(kv_len, self._bs)
        self._kv_tokens -= kv_len
