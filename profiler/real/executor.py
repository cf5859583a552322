"""The real executor: one batching policy driving the real engine on the wall clock.

It mirrors the simulator's executor loop (``batchsim.sim.simulator.Simulator._gpu``) line for line,
with
the clock swapped: requests are handed to the policy when the wall clock passes their arrival
time (those arriving during a step are handed over after it, as in the simulator), the policy's
``schedule`` decides, the engine executes the Plan, ``complete(plan, 1)`` reports back, and the
very same ``batchsim.sim.recorder.Recorder`` records it, so every metric is computed by the same
code on
both sides.

Timestamps are taken where the simulator takes them: a step starts when the executor begins it
(after scheduling) and ends when its sampled tokens are on the host (``Engine.step`` returns after
``tolist()``, an implicit CUDA sync); a token's time is the end of the step that produced it. The
simulator charges nothing between steps; the real loop spends host time there (handing over
arrivals, ``schedule``, ``complete``, freeing finished sequences, recording). That time is
measured per step (``host_s``: the part before the step plus the part after it) and reported, so
the comparison can tell it apart from the cost model's error.

Packed plans run on the paged ``Engine`` (what the profile's packed.* models measured); padded
plans run on the ``StaticEngine`` (what padded.* measured). The real executor runs one step per
Plan even when ``max_repeats > 1``: the policy guarantees the next schedule repeats it.

A policy with a CPU path (hybrid) also gets the CPU worker of
``batchsim.profiler.real.cpu_worker``: a CPU copy
of the model prefills in a thread while this loop runs device steps; the loop collects its
results and starts its next job between steps and while sleeping, so every policy call stays on
this thread. Single-path policies never see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.policies.base import Plan, Policy, StepEvents, Wait
from batchsim.policies.request import Request
from batchsim.profiler.engine.records import EngineChunk, EnginePlan, StepTiming
from batchsim.sim.recorder import Recorder

if TYPE_CHECKING:
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.static_engine import StaticEngine
    from batchsim.profiler.real.cpu_worker import CpuPathDriver
    from batchsim.sim.profile import CpuPath, Profile
    from batchsim.sim.workload.workload import Workload

ProgressFn = Callable[[int], None]  # requests done so far


@dataclass
class RealResult:
    recorder: Recorder
    requests: list[Request]
    wall_s: float  # from t=0 (first arrival) to the loop's end
    host_s: list[float]  # per step: executor host time outside the step (before + after)
    predicted_s: list[float]  # per step: the profile's prediction for the shape that ran
    cpu_s: list[float]  # per step: CPU time of this thread (wall minus waiting for a core)
    generated: list[int]  # per request: tokens the engine produced for it
    late_s: list[float]  # per sleep: how much later than asked the loop woke
    cpu_jobs: list[dict[str, Any]] = field(default_factory=list)  # per CPU step (hybrid)
    join_s: list[float] = field(default_factory=list)  # per hand-off: staged KV into the pool


class RealExecutor:
    """Runs one workload through one policy on the real engines (one run per instance)."""

    def __init__(self, policy: Policy, workload: Workload, prompts: Sequence[Sequence[int]],
                 paged: Engine | None, static: StaticEngine | None,
                 profile: Profile | None = None, progress: ProgressFn | None = None,
                 cpu_engine: Engine | None = None, cpu: CpuPath | None = None) -> None:
        """prompts: token ids per request (index order); profile: for per-step predictions;
        cpu_engine, cpu: a CPU-path policy's CPU engine and cost model (with the profile)."""
        self.policy = policy
        self.requests = workload.requests()
        self.prompts = prompts
        self.paged = paged
        self.static = static
        self.profile = profile
        self.progress = progress
        self.recorder = Recorder(len(self.requests), cpu_path="cpu" in policy.paths)
        self._next = 0
        self._resume: dict[int, list[int]] = {}  # preempted: prompt + generated, to recompute
        self._batch: list[Request] = []  # rows of the running static batch
        self._generated = [0] * len(self.requests)
        self._host: list[float] = []
        self._predicted: list[float] = []
        self._cpu: list[float] = []
        self._late: list[float] = []
        self._done = 0
        self._t0 = 0.0
        self.cpu_path: CpuPathDriver | None = None
        if "cpu" in policy.paths:
            self.cpu_path = self._cpu_path(cpu_engine, cpu)

    def _cpu_path(self, engine: Engine | None, cpu: CpuPath | None) -> CpuPathDriver:
        """Bind the policy's execution paths (as the simulator does) and build the CPU worker."""
        from batchsim.profiler.real.cpu_worker import CpuPathDriver, CpuWorker
        from batchsim.sim.profile import execution_paths

        if engine is None or cpu is None or self.profile is None or self.paged is None:
            raise ValueError(f"{self.policy.name} has a CPU path: the real executor needs the "
                             "paged engine, a CPU engine, the profile and the CPU path's costs")
        paths = execution_paths(self.profile, cpu)
        self.policy.bind_paths(paths)
        worker = CpuWorker(engine, self.paged, lambda: time.perf_counter() - self._t0)
        return CpuPathDriver(self.policy, worker, paths, self.recorder, self.prompts,
                             self._generated)

    def run(self) -> RealResult:
        policy, rec = self.policy, self.recorder
        total = len(self.requests)
        t0 = self._t0 = time.perf_counter()

        def now() -> float:
            return time.perf_counter() - t0

        while True:
            t_sched = now()
            self._hand_over(t_sched)
            arrivals_done = self._next == total
            self._serve_cpu(now, arrivals_done)  # a finished CPU job first: the GPU may join it
            decision = policy.schedule(t_sched, arrivals_done)
            for r, reason in decision.rejected:
                rec.reject(r, reason, t_sched)
            if isinstance(decision, Wait):
                if arrivals_done and not policy.has_work():
                    break
                self._serve_cpu(now, arrivals_done)  # this schedule may have routed to the CPU
                self._sleep(decision, now)
                continue
            if self.cpu_path is not None:
                self._before_gpu_step(decision, now, arrivals_done)
            start, cpu0 = now(), time.thread_time()
            timing = self._execute(decision)
            end = now()
            self._cpu.append(time.thread_time() - cpu0)
            events = policy.complete(decision, 1)
            self._account(decision, events)
            rec.run(decision, start, [end - start], events)
            self._check_shape(decision, timing)
            self._host.append((start - t_sched) + (now() - end))
            if events.finished and self.progress is not None:
                self._done += len(events.finished)
                self.progress(self._done + len(rec.reject_reason))
        cpu_jobs, join_s = ((self.cpu_path.jobs, self.cpu_path.join_s)
                            if self.cpu_path is not None else ([], []))
        return RealResult(rec, self.requests, now(), self._host, self._predicted, self._cpu,
                          self._generated, self._late, cpu_jobs, join_s)

    # -- the loop's parts ------------------------------------------------------------------

    def _before_gpu_step(self, plan: Plan, now: Callable[[], float], arrivals_done: bool) -> None:
        """CPU path: tell the policy when the GPU frees up (start + estimate, as the simulator
        does), let the CPU start (it may route against that), move joining requests' KV in."""
        assert self.cpu_path is not None and self.paged is not None
        gpu = self.cpu_path.paths["gpu"]
        gpu.busy_until_s = now() + gpu.estimate_latency(plan.shape)
        self._serve_cpu(now, arrivals_done)
        self.cpu_path.join(plan, self.paged)

    def _serve_cpu(self, now: Callable[[], float], arrivals_done: bool) -> None:
        """CPU path (if any): account for a finished job, then start the next one if idle."""
        if self.cpu_path is None:
            return
        t = now()
        finished = self.cpu_path.collect(t)
        rejected = self.cpu_path.start(now, arrivals_done)
        for r, reason in rejected:
            self.recorder.reject(r, reason, t)
        if finished and self.progress is not None:
            self._done += len(finished)
            self.progress(self._done + len(self.recorder.reject_reason))

    def _hand_over(self, now_s: float) -> None:
        while self._next < len(self.requests) and self.requests[self._next].arrival_s <= now_s:
            request = self.requests[self._next]
            self._next += 1
            reason = self.policy.add_request(request, now_s)
            if reason is not None:
                self.recorder.reject(request, reason, now_s)

    def _sleep(self, decision: Wait, now: Callable[[], float]) -> None:
        """Until the next arrival or the policy's wake-up time, whichever comes first."""
        targets = [decision.until_s] if decision.until_s is not None else []
        if self._next < len(self.requests):
            targets.append(self.requests[self._next].arrival_s)
        cpu = self.cpu_path if self.cpu_path is not None and self.cpu_path.busy else None
        if not targets and cpu is None:
            raise AssertionError(
                f"{self.policy.name} is stuck with queued work and no arrivals")
        target = min(targets, default=float("inf"))
        delay = target - now()
        if delay > 0:
            if cpu is None:
                time.sleep(delay)
            elif cpu.wait(delay):
                return  # the CPU job finished first: its hand-off may change the decision
            self._late.append(now() - target)

    def _execute(self, plan: Plan) -> StepTiming:
        if plan.device != "gpu":
            raise ValueError(f"{self.policy.name} planned a step on the {plan.device} path; "
                             "the real executor runs the main device's engines only")
        if self.profile is not None:
            model = self.profile.cost_model(plan.layout, plan.phase, plan.device)
            self._predicted.append(model.predict(plan.shape))
        return self._run_padded(plan) if plan.layout == "padded" else self._run_packed(plan)

    def _run_packed(self, plan: Plan) -> StepTiming:
        engine = self.paged
        assert engine is not None, "a packed plan needs the paged engine"
        for r in plan.preempted:  # recompute preemption: free now, prefill again later
            self._resume[r.index] = engine.free(r.index)
        chunks = []
        for chunk in plan.prefills:
            i = chunk.request.index
            if chunk.start == 0:
                resumed = self._resume.pop(i, None)
                engine.add(i, resumed if resumed is not None else self.prompts[i])
            chunks.append(EngineChunk(i, chunk.start, chunk.num_tokens))
        result = engine.step(EnginePlan(prefills=chunks, decodes=[r.index for r in plan.decodes]))
        for seq_id in result.tokens:
            self._generated[int(seq_id)] += 1  # type: ignore[call-overload]
        return result.timing

    def _run_padded(self, plan: Plan) -> StepTiming:
        engine = self.static
        assert engine is not None, "a padded plan needs the static engine"
        if plan.prefills:  # a new static batch: left-padded prefill of every row
            self._batch = [c.request for c in plan.prefills]
            prompts = [self.prompts[r.index] for r in self._batch]
            _, timing = engine.prefill(prompts, [r.output_tokens for r in self._batch])
            for r in self._batch:
                self._generated[r.index] += 1
            return timing
        _, timing = engine.decode()
        for r in self._batch:  # finished rows keep running as padding
            if self._generated[r.index] < r.output_tokens:
                self._generated[r.index] += 1
        return timing

    def _account(self, plan: Plan, events: StepEvents) -> None:
        """Free finished sequences' KV (host work after the step, as a server does it)."""
        for r, _ in events.finished:
            assert self._generated[r.index] == r.output_tokens, (
                f"request {r.index} finished with {self._generated[r.index]} tokens generated, "
                f"{r.output_tokens} asked")
            if plan.layout == "packed":
                assert self.paged is not None
                self.paged.free(r.index)

    @staticmethod
    def _check_shape(plan: Plan, timing: StepTiming) -> None:
        """The engine ran exactly the shape the cost model is asked about."""
        s = plan.shape
        assert (timing.num_seqs, timing.num_prefill_tokens, timing.num_decode_tokens) == (
            s.num_seqs, s.num_prefill_tokens, s.num_decode_seqs), (s, timing)


def random_prompts(workload: Workload, vocab_size: int, seed: int) -> list[list[int]]:
    """Seeded random prompt token ids per request: step cost does not depend on their values."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, int(n)).tolist() for n in workload.input_tokens]
