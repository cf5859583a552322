"""The discrete-event simulator: SimPy processes around one policy.

Processes: `arrivals` releases the workload's requests at their arrival times into the
server's queue and wakes the GPU when it is idle; `gpu` (the executor) hands queued requests to
the policy, asks it for the next step, advances the clock by the cost model's prediction for
that step, and reports the outcome back to the policy. The policy owns the waiting queue and
the KV memory (as a serving engine's scheduler does); the recorder collects metrics.

When the policy allows a run of identical decode steps (Plan.max_repeats), the executor takes
them in one clock advance, stopping early at the first step that ends after the next arrival:
the result is the same as stepping one by one, but costs one event instead of hundreds.

A policy with a CPU path (hybrid) gets a third process, `cpu`: the CPU worker, its own resource
beside the GPU, running the policy's CPU prefills (cost: the CPU path's prefill model plus the
KV copy into the GPU pool). It is woken by arrivals and after every GPU schedule, and wakes the
GPU when it completes; a GPU decode run also stops at the first step ending at or after the CPU
step in flight, since the hand-off changes what the GPU runs next. Both paths' `busy_until_s`
are kept current for the policy. Single-path policies never see any of this.

With step jitter (sim/jitter.py) each GPU step's predicted cost is multiplied by a factor drawn
from the profile's repeat scatter; the draws are indexed by step number, so a fast-forwarded run
draws exactly what stepping one by one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from batchsim.policies.base import Plan, Policy, Wait
from batchsim.policies.paths import ExecutionPath
from batchsim.policies.request import Request
from batchsim.sim.cost_model import phase_key
from batchsim.sim.jitter import StepJitter
from batchsim.sim.profile import CpuPath, Profile, StepCostModel, cpu_path, execution_paths
from batchsim.sim.recorder import Recorder
from batchsim.sim.workload.workload import Workload

ProgressFn = Callable[[int], None]  # called with the number of requests done so far


@dataclass
class SimResult:
    recorder: Recorder
    requests: list[Request]
    sim_time_s: float


class Simulator:
    def __init__(
        self,
        profile: Profile,
        policy: Policy,
        workload: Workload,
        too_long: set[int] | None = None,
        fast_forward: bool = True,
        progress: ProgressFn | None = None,
        cpu: CpuPath | None = None,
        jitter: StepJitter | None = None,
    ) -> None:
        """too_long: indexes of requests to reject on arrival as longer than max_model_len.
        cpu: the CPU path of a hybrid policy (default: from the profile's own CPU models).
        jitter: step-time noise for GPU steps (sim.jitter); None prices every step at the
        cost model's prediction."""
        self.profile = profile
        self.policy = policy
        self.requests = workload.requests()
        self.arrival_s = workload.arrival_s
        self.too_long = too_long or set()
        self.fast_forward = fast_forward
        self.progress = progress
        self.jitter = jitter
        self.env = simpy.Environment()
        self.hybrid = "cpu" in policy.paths
        self.recorder = Recorder(len(self.requests), cpu_path=self.hybrid)
        self._inbox: list[Request] = []  # arrived, not yet handed to the policy
        self._next = 0  # index of the next request to arrive
        self._wake: simpy.Event | None = None
        self._done = 0
        self._cpu_wake: simpy.Event | None = None
        self._cpu_end_s = float("inf")  # end of the CPU step in flight
        if self.hybrid:
            self.paths = execution_paths(profile, cpu or cpu_path(profile))
            policy.bind_paths(self.paths)

    def run(self) -> SimResult:
        self.env.process(self._arrivals())
        if self.hybrid:
            self.env.process(self._cpu(self.paths["cpu"]))
        gpu = self.env.process(self._gpu())
        self.env.run(until=gpu)
        return SimResult(self.recorder, self.requests, float(self.env.now))

    # -- processes -------------------------------------------------------------------------

    def _arrivals(self):
        env = self.env
        for request in self.requests:
            if request.arrival_s > env.now:
                yield env.timeout(request.arrival_s - env.now)
            self._inbox.append(request)
            self._next += 1
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()
            if self._cpu_wake is not None and not self._cpu_wake.triggered:
                self._cpu_wake.succeed()

    def _gpu(self):
        env, policy, rec = self.env, self.policy, self.recorder
        total = len(self.requests)
        while True:
            self._hand_over()
            arrivals_done = self._next == total
            decision = policy.schedule(env.now, arrivals_done)
            for r, reason in decision.rejected:
                self._reject(r, reason)
            if isinstance(decision, Wait):
                if arrivals_done and not policy.has_work():
                    return
                if self.hybrid:
                    self._wake_cpu()  # this schedule may have routed requests to the CPU
                yield from self._idle(decision)
                continue
            start = env.now
            durations = self._durations(decision, start)
            if self.jitter is not None:
                self.jitter.advance(len(durations))
            busy_s = sum(durations) if len(durations) > 1 else durations[0]
            if self.hybrid:
                self.paths["gpu"].busy_until_s = start + busy_s
                self._wake_cpu()
            yield env.timeout(busy_s)
            events = policy.complete(decision, len(durations))
            rec.run(decision, start, durations, events)
            if events.finished and self.progress is not None:
                self._done += len(events.finished)
                self.progress(self._done + len(rec.reject_reason))

    def _cpu(self, path: ExecutionPath):
        """The CPU worker: one CPU prefill (and its KV hand-off) at a time."""
        env, policy, rec = self.env, self.policy, self.recorder
        total = len(self.requests)
        while True:
            self._hand_over()
            decision = policy.schedule_cpu(env.now, self._next == total)
            for r, reason in decision.rejected:
                self._reject(r, reason)
            if isinstance(decision, Wait):
                self._cpu_wake = env.event()
                yield self._cpu_wake
                self._cpu_wake = None
                continue
            assert decision.device == "cpu" and decision.max_repeats == 1, decision
            start = env.now
            duration = path.estimate_latency(decision.shape)
            self._cpu_end_s = path.busy_until_s = start + duration
            yield env.timeout(duration)
            self._cpu_end_s = float("inf")
            events = policy.complete(decision, 1)
            rec.cpu_run(decision, start, duration, events)
            if events.finished and self.progress is not None:
                self._done += len(events.finished)
                self.progress(self._done + len(rec.reject_reason))
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()  # the GPU idles: the hand-off may give it work

    # -- helpers ---------------------------------------------------------------------------

    def _wake_cpu(self) -> None:
        if self._cpu_wake is not None and not self._cpu_wake.triggered:
            self._cpu_wake.succeed()

    def _hand_over(self) -> None:
        now = self.env.now
        for request in self._inbox:
            if request.index in self.too_long:
                self._reject(request, "longer than max_model_len")
                continue
            reason = self.policy.add_request(request, now)
            if reason is not None:
                self._reject(request, reason)
        self._inbox.clear()

    def _reject(self, request: Request, reason: str) -> None:
        self.recorder.reject(request, reason, self.env.now)

    def _idle(self, decision: Wait):
        env = self.env
        self._wake = env.event()
        # a CPU step in flight, or about to start, will wake the GPU when it completes
        cpu_busy = self._cpu_end_s != float("inf") or (
            self._cpu_wake is not None and self._cpu_wake.triggered)
        if self._next < len(self.requests) or decision.until_s is not None or cpu_busy:
            waits = [self._wake]
            if decision.until_s is not None:
                assert decision.until_s > env.now, (
                    f"{self.policy.name} asked to wait until {decision.until_s} at {env.now}"
                )
                waits.append(env.timeout(decision.until_s - env.now))
            yield env.any_of(waits)
        else:
            # Nothing can arrive and the policy waits for an arrival: it holds work it will
            # never run. That is a policy bug, not a workload problem.
            raise AssertionError(f"{self.policy.name} is stuck with queued work and no arrivals")
        self._wake = None

    def _durations(self, plan: Plan, start_s: float) -> list[float]:
        model = self.profile.cost_model(plan.layout, plan.phase, plan.device)
        if self.jitter is not None:
            return self._jittered(model, plan, start_s)
        if plan.max_repeats == 1 or not self.fast_forward:
            return [model.predict(plan.shape)]
        return model.predict_decode_run(plan.shape, plan.max_repeats, self._stop_s(start_s))

    def _stop_s(self, start_s: float) -> float:
        """How far a run of decode steps may go: it stops at the first step that ends at or
        after the next arrival, since the policy must see that request before the following
        step, as it would stepping one by one; likewise the end of a CPU step in flight, whose
        hand-off changes the GPU's next step too."""
        stop = (self.arrival_s[self._next] - start_s if self._next < len(self.requests)
                else float("inf"))
        return min(stop, self._cpu_end_s - start_s)

    def _jittered(self, model: StepCostModel, plan: Plan, start_s: float) -> list[float]:
        """As _durations, each step times its own jitter factor (the stream is indexed by step
        number, so a fast-forward draws what stepping one by one would)."""
        assert self.jitter is not None
        key = phase_key(plan.layout, plan.phase, plan.device)
        if plan.max_repeats == 1 or not self.fast_forward:
            return [model.predict(plan.shape) * float(self.jitter.take(key, 1)[0])]
        stop = self._stop_s(start_s)
        # steps never get cheaper along a run, so ceil(stop / first) steps reach the stop
        # unjittered; jitter may need more: the window doubles until the stop is inside it
        m = plan.max_repeats
        if stop != float("inf"):
            m = min(m, int(stop / model.predict(plan.shape)) + 8)
        while True:
            d = model.decode_run_array(plan.shape, m) * self.jitter.take(key, m)
            cut = int(np.searchsorted(np.cumsum(d), stop, side="left")) + 1
            if cut <= m or m == plan.max_repeats:
                return d[:min(cut, m)].tolist()
            m = min(plan.max_repeats, 2 * m)
