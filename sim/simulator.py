"""The discrete-event simulator: SimPy processes around one policy.

Processes: `arrivals` releases the workload's requests at their arrival times into the
server's queue and wakes the GPU when it is idle; `gpu` (the executor) hands queued requests to
the policy, asks it for the next step, advances the clock by the cost model's prediction for
that step, and reports the outcome back to the policy. The policy owns the waiting queue and
the KV memory (as a serving engine's scheduler does); the recorder collects metrics.

When the policy allows a run of identical decode steps (Plan.max_repeats), the executor takes
them in one clock advance, stopping early at the first step that ends after the next arrival:
the result is the same as stepping one by one, but costs one event instead of hundreds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import simpy

from policies.base import Plan, Policy, Wait
from policies.request import Request
from sim.profile import Profile
from sim.recorder import Recorder
from sim.workload import Workload

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
    ) -> None:
        """too_long: indexes of requests to reject on arrival as longer than max_model_len."""
        self.profile = profile
        self.policy = policy
        self.requests = workload.requests()
        self.arrival_s = workload.arrival_s
        self.too_long = too_long or set()
        self.fast_forward = fast_forward
        self.progress = progress
        self.env = simpy.Environment()
        self.recorder = Recorder(len(self.requests))
        self._inbox: list[Request] = []  # arrived, not yet handed to the policy
        self._next = 0  # index of the next request to arrive
        self._wake: simpy.Event | None = None
        self._done = 0

    def run(self) -> SimResult:
        self.env.process(self._arrivals())
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
                yield from self._idle(decision)
                continue
            start = env.now
            durations = self._durations(decision, start)
            yield env.timeout(sum(durations) if len(durations) > 1 else durations[0])
            events = policy.complete(decision, len(durations))
            rec.run(decision, start, durations, events)
            if events.finished and self.progress is not None:
                self._done += len(events.finished)
                self.progress(self._done + len(rec.reject_reason))

    # -- helpers ---------------------------------------------------------------------------

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
        if self._next < len(self.requests) or decision.until_s is not None:
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
        if plan.max_repeats == 1 or not self.fast_forward:
            return [model.predict(plan.shape)]
        # Stop at the first step that ends at or after the next arrival: the policy must see
        # that request before the following step, as it would stepping one by one.
        stop = (self.arrival_s[self._next] - start_s if self._next < len(self.requests)
                else float("inf"))
        return model.predict_decode_run(plan.shape, plan.max_repeats, stop)
