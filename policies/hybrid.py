"""Hybrid CPU+GPU batching (seed 003): small prefills on a CPU path, the rest and every decode on
the GPU with continuous batching, each request sent where its first token is expected sooner.

The GPU side is the continuous policy (Orca / vLLM V1 semantics, same knobs). On top of it:

- Routing (B1). A fresh request whose prompt is at most `cpu_max_prompt_tokens` (B1) goes to
  the CPU path when its estimated completion there, CPU backlog + CPU prefill + KV copy to the
  GPU pool, is earlier than on the GPU: the end of the step it would join (or, if the GPU step
  is full, the end of the step in flight plus its own prefill alone: a lower bound, so the CPU
  must beat even an optimistic GPU). Decisions are taken at every GPU schedule and, for the
  head of the queue, whenever the CPU worker is free; so a request never waits behind a full
  GPU while the CPU path would finish it sooner (the tail's escape path).
- Holding (B2). When the GPU would run a prefill-only step, it may wait for one more request:
  only while the marginal gain of batching it (the newcomer skips a separate step) exceeds the
  wait cost (every one of the B waiting requests waits the expected gap longer), with B below
  `hold_max_batch` (B2), and never longer than the saving itself. The expected gap is an
  exponentially weighted mean of the arrival gaps the policy was told about.
- Hand-off. A CPU prefill ends with its first token and its KV copied into the GPU pool. At the
  next GPU schedule the request joins the decodes, taking its blocks then; if the pool cannot
  hold them without preempting anyone, it waits (its KV parked in CPU memory) ahead of new
  admissions. docs/HYBRID.md derives the rules and the automatic B1/B2.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from batchsim.policies.base import Device, Plan, PrefillChunk, StepEvents, Wait
from batchsim.policies.continuous import Continuous, ContinuousConfig
from batchsim.policies.kv import MemoryFacts
from batchsim.policies.paths import ExecutionPath, prefill_shape
from batchsim.policies.registry import register
from batchsim.policies.request import Request
from batchsim.policies.seq import Seq

AUTO = -1


@dataclass(frozen=True)
class HybridConfig(ContinuousConfig):
    # B1: longest prompt (tokens) the CPU path may take; -1 = derived from the cost models,
    # 0 = CPU path off (the policy is then continuous batching plus holding)
    cpu_max_prompt_tokens: int = AUTO
    # B2: with this many requests waiting the GPU never holds a prefill batch; -1 = bounded by
    # the gain/cost rule only, 0 = never hold
    hold_max_batch: int = AUTO
    arrival_gap_weight: float = 0.2  # EWMA weight of the newest arrival gap and prompt length
    # Off, unlike continuous: the CPU path routes requests from the waiting queue as they
    # arrive, and a request held back one step would arrive late to both paths (the GPU side
    # keeps continuous's other vLLM behaviours and their per-version defaults).
    async_scheduling: bool | None = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for knob in ("cpu_max_prompt_tokens", "hold_max_batch"):
            if getattr(self, knob) < AUTO:
                raise ValueError(f"{knob} must be -1 (automatic), 0 (off) or positive, "
                                 f"got {getattr(self, knob)}")
        if not 0 < self.arrival_gap_weight <= 1:
            raise ValueError(f"arrival_gap_weight must be in (0, 1], got "
                             f"{self.arrival_gap_weight}")


@register("hybrid", HybridConfig)
class Hybrid(Continuous):
    config: HybridConfig
    paths = ("gpu", "cpu")

    def __init__(self, config: HybridConfig, memory: MemoryFacts, max_model_len: int) -> None:
        super().__init__(config, memory, max_model_len)
        self._gpu: ExecutionPath | None = None
        self._cpu: ExecutionPath | None = None
        self._b1 = 0  # set by bind_paths
        self._now = 0.0  # time of the schedule call in progress
        self._cpu_queue: deque[Seq] = deque()  # routed to the CPU, not started
        self._cpu_backlog_s = 0.0  # estimated CPU time of _cpu_queue
        self._cpu_running: Seq | None = None
        self._handoff: deque[Seq] = deque()  # prefilled on the CPU, not yet decoding on the GPU
        self._joined: list[Request] = []  # handed off in the schedule call in progress
        self._hold_until: float | None = None
        self._arrivals_done = False
        self._last_arrival_s: float | None = None
        self._gap_s = 0.0  # EWMA of arrival gaps; 0 until two arrivals were seen
        self._mean_prompt = 0.0  # EWMA of prompt lengths
        self.num_cpu_prefills = 0

    # -- paths and derived thresholds ------------------------------------------------------

    def bind_paths(self, paths: Mapping[Device, ExecutionPath]) -> None:
        if "gpu" not in paths or "cpu" not in paths:
            raise ValueError(f"the hybrid policy needs a gpu and a cpu path, got {sorted(paths)}")
        self._gpu, self._cpu = paths["gpu"], paths["cpu"]
        b1 = self.config.cpu_max_prompt_tokens
        self._b1 = self._derive_b1() if b1 == AUTO else b1

    def _derive_b1(self) -> int:
        """Longest prompt n whose CPU prefill + KV copy beats waiting behind one full GPU step
        and then prefilling n on the GPU: C(n) + X(n) < G(budget) + G(n). Longer prompts can
        never win the routing comparison, whatever the queue. Bisection: the CPU's cost per
        token is assumed to exceed the GPU's, so the inequality holds up to some n and no
        further."""
        gpu, cpu = self._paths()
        full_step = gpu.prefill_latency(self.config.max_num_batched_tokens)

        def cpu_wins(n: int) -> bool:
            return cpu.prefill_latency(n) < full_step + gpu.prefill_latency(n)

        lo, hi = 0, self.max_model_len
        if cpu_wins(hi):
            return hi
        while hi - lo > 1:  # invariant: cpu_wins(lo) or lo == 0; not cpu_wins(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if cpu_wins(mid) else (lo, mid)
        return lo

    def derived_knobs(self) -> dict[str, object]:
        return {"cpu_max_prompt_tokens": self._b1}

    def _paths(self) -> tuple[ExecutionPath, ExecutionPath]:
        assert self._gpu is not None and self._cpu is not None, "bind_paths was not called"
        return self._gpu, self._cpu

    # -- Policy interface ------------------------------------------------------------------

    def add_request(self, request: Request, now_s: float) -> str | None:
        # The expected gap comes from the requests' own arrival times: told, not read.
        w = self.config.arrival_gap_weight
        if self._last_arrival_s is not None:
            gap = request.arrival_s - self._last_arrival_s
            self._gap_s = gap if self._gap_s == 0.0 else (1 - w) * self._gap_s + w * gap
        self._last_arrival_s = request.arrival_s
        n = request.input_tokens
        self._mean_prompt = n if self._mean_prompt == 0.0 else (1 - w) * self._mean_prompt + w * n
        return super().add_request(request, now_s)

    def has_work(self) -> bool:
        return (super().has_work() or bool(self._cpu_queue) or bool(self._handoff)
                or self._cpu_running is not None)

    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        self._now, self._hold_until, self._joined = now_s, None, []
        self._arrivals_done = arrivals_done
        self._join_handoffs()
        decision = super().schedule(now_s, arrivals_done)
        if isinstance(decision, Wait) and self._hold_until is not None:
            return Wait(until_s=self._hold_until)
        return decision

    def schedule_cpu(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        if self._cpu_running is not None:
            return Wait()
        waiting = self.waiting
        if not self._cpu_queue and len(waiting):
            # Between GPU steps only the head is considered (FCFS), against the GPU's next step.
            gpu, _ = self._paths()
            seq = waiting.peek()
            if self._cpu_eligible(seq) and self._cpu_done_s(seq, now_s) < (
                    gpu.free_at(now_s) + gpu.prefill_latency(seq.target)):
                self._route_to_cpu(waiting.pop())
        if not self._cpu_queue:
            return Wait()
        seq = self._cpu_queue.popleft()
        self._cpu_backlog_s -= self._cpu_cost_s(seq)
        if not self._cpu_queue:
            self._cpu_backlog_s = 0.0  # no drift from repeated float subtraction
        self._cpu_running = seq
        n = seq.target
        return Plan(prefills=[PrefillChunk(seq.req, 0, n)], shape=prefill_shape(n),
                    device="cpu")

    def complete(self, plan: Plan, num_steps: int) -> StepEvents:
        if plan.device == "cpu":
            return self._complete_cpu(plan)
        joined = [r for r in self._joined if self.is_decoding(r)]
        events = super().complete(plan, num_steps)
        # A handed-off request's first GPU token is its second: the recorder treats it as the
        # end of a gap that began with the CPU's token.
        events.resumed.extend((r, 0) for r in joined)
        self._joined = []
        return events

    def abort(self, request: Request) -> bool:
        running = self._cpu_running
        if (running is not None and running.req is request) or any(
                seq.req is request for seq in self._handoff):
            return False  # its CPU prefill finishes and joins first; asked again after
        for seq in self._cpu_queue:
            if seq.req is request:
                self._cpu_queue.remove(seq)
                self._cpu_backlog_s = max(0.0, self._cpu_backlog_s - self._cpu_cost_s(seq))
                return True
        return super().abort(request)

    # -- CPU side ----------------------------------------------------------------------------

    def _complete_cpu(self, plan: Plan) -> StepEvents:
        seq = self._cpu_running
        assert seq is not None and plan.prefills[0].request is seq.req, "unexpected CPU plan"
        self._cpu_running = None
        self.num_cpu_prefills += 1
        seq.advance_prefill(seq.target - seq.computed)  # its first token
        events = StepEvents()
        events.first_tokens.append((seq.req, 0))
        events.finished.extend([(seq.req, 0)] if seq.req.output_tokens == 1 else [])
        # The step's KV figures: its own tokens, and the GPU blocks they will take.
        events.kv_blocks_used = [self.ledger.blocks_for(seq.computed)]
        events.kv_tokens_used = [seq.computed]
        if seq.req.output_tokens > 1:
            self._handoff.append(seq)
        return events

    def _join_handoffs(self) -> None:
        """Start decoding CPU-prefilled requests on the GPU, oldest first, while their blocks
        fit without preempting anyone (this step's decodes keep the blocks they need)."""
        while self._handoff and self.can_adopt(self._handoff[0]):
            seq = self._handoff.popleft()
            self.adopt(seq)
            self._joined.append(seq.req)

    def _cpu_eligible(self, seq: Seq) -> bool:
        """Fresh prompts up to B1 (a recompute after preemption stays on the GPU)."""
        return seq.is_fresh and seq.target <= self._b1

    def _cpu_cost_s(self, seq: Seq) -> float:
        return self._paths()[1].prefill_latency(seq.target)

    def _cpu_done_s(self, seq: Seq, now_s: float) -> float:
        """When seq's KV would be in the GPU pool if routed to the CPU now (queue + compute +
        copy)."""
        cpu = self._paths()[1]
        return cpu.free_at(now_s) + self._cpu_backlog_s + self._cpu_cost_s(seq)

    def _route_to_cpu(self, seq: Seq) -> None:
        self._cpu_queue.append(seq)
        self._cpu_backlog_s += self._cpu_cost_s(seq)

    # -- GPU admission: route, hold, admit ---------------------------------------------------

    def admit(self, budget: int, chunks: list[PrefillChunk]) -> None:
        waiting = self.waiting
        prefill_only = not self.num_decoding and not chunks
        first = len(chunks)
        while len(waiting):
            seq = waiting.peek()
            no_seat = not self.has_seat()
            n = 0 if no_seat or budget <= 0 else self.admission_tokens(seq, budget)
            if self._cpu_eligible(seq) and self._cpu_done_s(seq, self._now) < self._gpu_done_s(
                    seq, n, chunks, no_seat):
                self._route_to_cpu(waiting.pop())
                continue
            if n == 0:
                break
            self.admit_head(n, chunks)
            budget -= n
        if prefill_only and len(chunks) > first and self._should_hold(chunks[first:]):
            for chunk in reversed(chunks[first:]):  # undo them, keeping the queue's order
                self.return_to_queue(chunk)
            del chunks[first:]

    def _gpu_done_s(self, seq: Seq, n: int, chunks: list[PrefillChunk], no_seat: bool) -> float:
        """When seq's first token would come from the GPU: the end of this step if it fits
        whole; else steps like this one until there is room (one step if only this step's
        token budget is short; until the first running request finishes if a seat or KV
        blocks are short), then its own prefill alone. Shorter than the truth (later steps
        may be longer, others may be first in line), so the CPU must beat an optimistic GPU."""
        gpu, _ = self._paths()
        if n == seq.target:
            return self._now + gpu.estimate_latency(self.step_shape(chunks, n))
        current = gpu.estimate_latency(self.step_shape(chunks)) if (
            chunks or self.num_decoding) else 0.0
        first = min(seq.target, self.chunk_cap(seq))
        steps = 1
        if no_seat or not self.ledger.can_allocate(self.ledger.blocks_for(first)):
            steps = self.steps_until_first_finish()
        return self._now + steps * current + gpu.prefill_latency(seq.target)

    def _should_hold(self, batch: list[PrefillChunk]) -> bool:
        """Hold a prefill-only GPU batch for one more request while gain > cost.

        With g the expected gap, G(.) the GPU step estimate, W the batch and r a typical next
        prompt: holding makes the B waiting requests finish g + G(W+r) - G(W) later (cost) and r
        finish max(G(W), g) + G(r) - g - G(W+r) sooner (gain). The oldest request never waits
        longer than the most batching can save, G(W) + G(r) - G(W+r)."""
        cfg = self.config
        waiting = len(batch) + len(self.waiting)
        g = self._gap_s
        if (cfg.hold_max_batch == 0 or self._arrivals_done or g <= 0.0
                or (cfg.hold_max_batch > 0 and waiting >= cfg.hold_max_batch)):
            return False
        gpu, _ = self._paths()
        r = max(1, round(self._mean_prompt))
        g_now = gpu.estimate_latency(self.step_shape(batch))
        g_plus = gpu.estimate_latency(self.step_shape(batch, r))
        g_alone = gpu.prefill_latency(r)
        saving = g_now + g_alone - g_plus
        oldest = min(c.request.arrival_s for c in batch)
        if self._now - oldest >= saving:
            return False
        gain = max(g_now, g) + g_alone - g - g_plus
        cost = waiting * (g + g_plus - g_now)
        if gain <= cost:
            return False
        self._hold_until = min(self._now + g, oldest + saving)
        return self._hold_until > self._now

    def max_decode_repeats(self) -> int:
        # One step at a time while a waiting head could go to the CPU (the routing comparison
        # is taken at every GPU step, as stepping one by one would), or while the CPU is about
        # to start work (its end is not known to the executor yet).
        if len(self.waiting) and self._cpu_eligible(self.waiting.peek()):
            return 1
        if self._cpu_running is None and self._cpu_queue:
            return 1
        if self._handoff:
            return 1  # a parked hand-off may fit after any step
        return super().max_decode_repeats()
