"""The real executor: a wall clock and the real engine driving the serving core.

All the server's work (admission, decisions, rejections, step bookkeeping, progress, the stuck
check, the paths' `busy_until_s`) is `batchsim.sim.server.Server`'s, exactly as in the
simulator; this driver only says how time passes (the wall clock: requests are pushed into the
server when the clock passes their arrival time, those arriving during a step are handed over
after it, as in the simulator) and how a step is executed (on the engine). The very same
``batchsim.sim.recorder.Recorder`` records it, so every metric is computed by the same code on
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

A policy with a CPU path (hybrid) also gets the CPU runner of
``batchsim.profiler.real.cpu_worker``: a CPU copy of the model prefills in a thread while this
loop runs device steps; the loop collects its results and starts its next job between steps and
while sleeping, so every policy call stays on this thread. Single-path policies never see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.policies.base import Plan, Policy, StepEvents, Wait
from batchsim.policies.request import Request
from batchsim.profiler.engine.records import StepTiming
from batchsim.profiler.real.plan_runner import PlanRunner
from batchsim.sim.recorder import Recorder
from batchsim.sim.server import ProgressFn, Server

if TYPE_CHECKING:
    from batchsim.policies.base import Device
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.static_engine import StaticEngine
    from batchsim.profiler.real.cpu_worker import CpuRunner
    from batchsim.sim.profile import CpuCostModel, Profile
    from batchsim.sim.workload.workload import Workload


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
                 cpu_engine: Engine | None = None, cpu_costs: CpuCostModel | None = None
                 ) -> None:
        """prompts: token ids per request (index order); profile: for per-step predictions
        and the execution paths; cpu_engine, cpu_costs: a CPU-path policy's CPU engine and
        cost model (with the profile)."""
        from batchsim.policies.paths import ExecutionPath
        from batchsim.sim.profile import execution_paths

        self.policy = policy
        self.requests = workload.requests(with_prefix=policy.caches_prefixes)
        self.prompts = prompts
        self.paged = paged
        self.static = static
        self.profile = profile
        hybrid = "cpu" in policy.paths
        if hybrid and (cpu_engine is None or cpu_costs is None or profile is None
                       or paged is None):
            raise ValueError(f"{policy.name} has a CPU path: the real executor needs the "
                             "paged engine, a CPU engine, the profile and the CPU path's costs")
        paths: dict[Device, ExecutionPath] = (
            execution_paths(profile, cpu_costs if hybrid else None) if profile is not None
            else {"gpu": ExecutionPath("gpu", {})})
        self.server = Server(policy, paths, len(self.requests), workload.arrival_s,
                             progress=progress)
        self._runner = PlanRunner(paged, static)  # runs each Plan on the engines
        self._batch: list[Request] = []  # rows of the running static batch
        self._generated = [0] * len(self.requests)
        self._host: list[float] = []
        self._predicted: list[float] = []
        self._thread_cpu_s: list[float] = []
        self._late: list[float] = []
        self._t0 = 0.0
        self.cpu_runner: CpuRunner | None = None
        if hybrid:
            assert cpu_engine is not None and paged is not None
            from batchsim.profiler.real.cpu_worker import CpuRunner, CpuWorker

            worker = CpuWorker(cpu_engine, paged, lambda: time.perf_counter() - self._t0)
            self.cpu_runner = CpuRunner(self.server, worker, prompts, self._generated)

    @property
    def recorder(self) -> Recorder:
        return self.server.recorder

    def run(self) -> RealResult:
        server = self.server
        t0 = self._t0 = time.perf_counter()

        def now() -> float:
            return time.perf_counter() - t0

        while True:
            t_sched = now()
            self._push_arrivals(t_sched)
            server.admit(t_sched)
            self._serve_cpu(now)  # a finished CPU job first: the GPU may join it
            decision = server.decide(t_sched)
            if decision is None:
                break
            if isinstance(decision, Wait):
                self._serve_cpu(now)  # this schedule may have routed to the CPU
                self._sleep(decision, t_sched, now)
                continue
            predicted = self._predict(decision)
            server.begin(decision, now(), predicted)
            if self.cpu_runner is not None:  # the CPU may start (it routes against the GPU's
                assert self.paged is not None  # busy_until), joining requests' KV moves in
                self._serve_cpu(now)
                self.cpu_runner.join(decision, self.paged)
            start, cpu0 = now(), time.thread_time()
            timing = self._execute(decision)
            end = now()
            self._thread_cpu_s.append(time.thread_time() - cpu0)
            events = server.end(decision, start, [end - start])
            self._account(decision, events)
            self._check_shape(decision, timing)
            self._host.append((start - t_sched) + (now() - end))
        runner = self.cpu_runner
        cpu_jobs, join_s = (runner.jobs, runner.join_s) if runner is not None else ([], [])
        return RealResult(server.recorder, self.requests, now(), self._host, self._predicted,
                          self._thread_cpu_s, self._generated, self._late, cpu_jobs, join_s)

    # -- how time passes: the wall clock ----------------------------------------------------

    def _push_arrivals(self, now_s: float) -> None:
        server = self.server
        while (server.num_arrived < len(self.requests)
               and self.requests[server.num_arrived].arrival_s <= now_s):
            server.arrive(self.requests[server.num_arrived])

    def _serve_cpu(self, now: Callable[[], float]) -> None:
        """CPU path (if any): account for a finished job, then start the next one if idle."""
        if self.cpu_runner is not None:
            self.cpu_runner.collect(now())
            self.cpu_runner.start(now)

    def _sleep(self, decision: Wait, decided_s: float, now: Callable[[], float]) -> None:
        """Until the next arrival or the policy's wake-up time, whichever comes first (or a
        CPU job's end)."""
        self.server.check_wait(decision, decided_s)
        target = min(decision.until_s if decision.until_s is not None else float("inf"),
                     self.server.next_arrival_s)
        cpu = self.cpu_runner if self.cpu_runner is not None and self.cpu_runner.busy else None
        delay = target - now()
        if delay > 0:
            if cpu is None:
                time.sleep(delay)
            elif cpu.wait(delay):
                return  # the CPU job finished first: its hand-off may change the decision
            self._late.append(now() - target)

    # -- how a step is executed: the engines -------------------------------------------------

    def _predict(self, plan: Plan) -> float:
        """The profile's prediction for the step (recorded per step; the GPU's busy_until)."""
        if self.profile is None or plan.device != "gpu":
            return 0.0
        predicted = self.profile.cost_model(plan.layout, plan.phase, plan.device).predict(
            plan.shape)
        self._predicted.append(predicted)
        return predicted

    def _execute(self, plan: Plan) -> StepTiming:
        if plan.device != "gpu":
            raise ValueError(f"{self.policy.name} planned a step on the {plan.device} path; "
                             "the real executor runs the main device's engines only")
        for chunk in plan.prefills:  # the runner prefills from these (or a preempted resume)
            if chunk.start == 0 or not self._runner.knows(chunk.request.index):  # prefix hit
                self._runner.add(chunk.request.index, list(self.prompts[chunk.request.index]))
        out = self._runner.run(plan)
        if plan.layout == "packed":
            for index in out.tokens:
                self._generated[index] += 1
        else:
            for r in self._rows(plan):  # a static batch's finished rows run on as padding
                if self._generated[r.index] < r.output_tokens:
                    self._generated[r.index] += 1
        return out.timing

    def _rows(self, plan: Plan) -> list[Request]:
        """The rows of the static batch this padded plan runs (set when it is prefilled)."""
        if plan.prefills:
            self._batch = [c.request for c in plan.prefills]
        return self._batch

    def _account(self, plan: Plan, events: StepEvents) -> None:
        """Free finished sequences' KV (host work after the step, as a server does it)."""
        for r, _ in events.finished:
            assert self._generated[r.index] == r.output_tokens, (
                f"request {r.index} finished with {self._generated[r.index]} tokens generated, "
                f"{r.output_tokens} asked")
            if plan.layout == "packed":
                self._runner.release(r.index)

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
