"""The serving core: everything a server does that needs no clock, shared by every driver.

A `Server` owns the policy, the recorder, the execution paths and the progress count. A driver
owns the clock and the way a step is executed: the simulator (`batchsim.sim.simulator`: a SimPy
clock, steps priced by the cost model), the real executor (`batchsim.profiler.real.executor`:
the wall clock, steps run on the engine) and a live server (the wall clock, arrivals pushed by
HTTP handlers). Because they all call the same methods in the same order, whatever two drivers
disagree on is the clock or the cost of a step, never the scheduling.

Driver contract. Times are seconds on the driver's clock; nothing here reads one::

    server.arrive(request)          # when a request arrives (any time, any thread that owns
                                    # the server); `close_arrivals()` when none will come again
    server.admit(now_s)             # hand arrivals to the policy (too-long ones rejected)
    decision = server.decide(now_s) # admit + policy.schedule; None: all work done
    if Wait: server.check_wait(decision, cpu_pending)  # raises if the policy is stuck
             sleep until decision.until_s, the next arrival or a CPU step's end
    else:    server.begin(plan, start_s, expected_s)   # the GPU path is busy until then
             execute the plan 1 <= k <= plan.max_repeats times (the simulator prices a run
             with `price_run`, which stops at `stop_s`: the next arrival or CPU step end)
             events = server.end(plan, start_s, durations)   # policy.complete -> recorder

A policy with a CPU path (`"cpu" in policy.paths`, the hybrid policy) also runs a CPU worker
beside the GPU: ``decision = server.decide_cpu(now_s)``; for a Plan, ``server.begin_cpu(plan,
start_s)`` (returns the step's expected seconds: the driver's CPU step takes that long in the
simulator), execute it, ``server.end_cpu(plan, start_s, duration_s)``. When the driver calls
`decide_cpu` is its own business (the simulator: at arrivals, after every GPU schedule and at its
own completions; the real executor: between device steps and while sleeping).

Arrivals known in advance (a workload) go in through `arrive` all the same; the server is told
their times (`arrival_s`) only so that a fast-forwarded decode run can stop at the first step
that ends at or after the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from batchsim.policies.base import Plan, Policy, StepEvents, Wait
from batchsim.sim.cost_model import phase_key
from batchsim.sim.recorder import Recorder

if TYPE_CHECKING:
    from batchsim.policies.base import Device
    from batchsim.policies.paths import ExecutionPath
    from batchsim.policies.request import Request
    from batchsim.sim.concurrency_gate import ConcurrencyGate
    from batchsim.sim.jitter import StepJitter
    from batchsim.sim.profile import StepCostModel as CostModel

ProgressFn = Callable[[int], None]  # called with the number of requests done so far
TOO_LONG = "longer than max_model_len"


class Server:
    """One policy serving requests: admission, decisions, step bookkeeping, progress."""

    def __init__(self, policy: Policy, paths: Mapping[Device, ExecutionPath],
                 num_requests: int = 0, arrival_s: Sequence[float] | np.ndarray | None = None,
                 too_long: set[int] | None = None, progress: ProgressFn | None = None) -> None:
        """paths: one per device in policy.paths (bound to the policy here); num_requests:
        requests known in advance (arrivals close after that many; 0: open until
        close_arrivals); arrival_s: their arrival times, sorted (for fast-forward stops);
        too_long: indexes to reject on arrival as longer than the model's context."""
        missing = [d for d in policy.paths if d not in paths]
        assert not missing, f"{policy.name} needs the {missing} path(s), got {sorted(paths)}"
        self.policy = policy
        self.paths = paths
        self.recorder = Recorder(num_requests, prefill_paths="cpu" in policy.paths)
        self.progress = progress
        self.too_long = too_long or set()
        self.arrival_s = arrival_s
        self.num_expected: int | None = num_requests or None
        self.num_arrived = 0
        self.cpu_plan: Plan | None = None  # the CPU step in flight
        self.cpu_end_s = float("inf")  # its expected end
        self._inbox: list[Request] = []  # arrived, not yet handed to the policy
        self._num_done = 0
        self.gate: ConcurrencyGate | None = None  # closed-loop clients: told of departures
        policy.bind_paths(paths)

    # -- arrivals ------------------------------------------------------------------------------

    def arrive(self, request: Request) -> None:
        """A request arrived; the policy sees it at the next admit/decide."""
        if request.index >= self.recorder.num_requests:
            self.recorder.add_requests(request.index + 1 - self.recorder.num_requests)
        self._inbox.append(request)
        self.num_arrived += 1

    def close_arrivals(self) -> None:
        """No request will arrive again (a live server shutting down)."""
        self.num_expected = self.num_arrived

    @property
    def arrivals_done(self) -> bool:
        return self.num_expected is not None and self.num_arrived >= self.num_expected

    @property
    def next_arrival_s(self) -> float:
        """Arrival time of the next known request (inf if none is known)."""
        if (self.arrival_s is None or self.num_arrived >= len(self.arrival_s)
                or (self.gate is not None and self.gate.full)):
            return float("inf")  # none known, or none before a departure
        return float(self.arrival_s[self.num_arrived])

    def admit(self, now_s: float) -> None:
        """Hand every arrival so far to the policy; too-long or refused ones are rejected."""
        for request in self._inbox:
            reason = (TOO_LONG if request.index in self.too_long
                      else self.policy.add_request(request, now_s))
            if reason is not None:
                self.recorder.reject(request, reason, now_s)
                if self.gate is not None:
                    self.gate.left(now_s)  # may arrive a held request: admitted in this loop
        self._inbox.clear()

    # -- the GPU path --------------------------------------------------------------------------

    def decide(self, now_s: float) -> Plan | Wait | None:
        """Admit, then the policy's next step or Wait; None once everything is done."""
        if self._inbox:
            self.admit(now_s)
        done = self.num_expected is not None and self.num_arrived >= self.num_expected
        decision = self.policy.schedule(now_s, done)
        if decision.rejected:
            self._reject_all(decision, now_s)
        if done and isinstance(decision, Wait) and not self.policy.has_work():
            return None
        return decision

    def check_wait(self, decision: Wait, now_s: float, cpu_pending: bool = False) -> None:
        """Raise if waiting can never end: nothing can arrive, no wake-up time, no CPU step in
        flight (or, cpu_pending, about to start). That is a policy bug, not a workload one."""
        if decision.until_s is not None:
            assert decision.until_s > now_s, (
                f"{self.policy.name} asked to wait until {decision.until_s} at {now_s}")
            return
        if self.arrivals_done and self.cpu_plan is None and not cpu_pending:
            raise AssertionError(f"{self.policy.name} is stuck with queued work and no arrivals")
        gate = self.gate
        if gate is not None and gate.full and self.cpu_plan is None and not cpu_pending:
            raise ValueError(
                f"{self.policy.name} waits for more requests, but all {gate.max_concurrency} "
                "that --max-concurrency lets out are waiting in it: raise --max-concurrency or "
                "let the policy start partial batches (e.g. max_queue_delay_ms)")

    def begin(self, plan: Plan, start_s: float, expected_s: float) -> None:
        """A GPU step (or run) starts; the policy may read when the GPU frees up."""
        self.paths[plan.device].busy_until_s = start_s + expected_s

    def end(self, plan: Plan, start_s: float, durations: list[float]) -> StepEvents:
        """The plan ran len(durations) times from start_s: account and record it."""
        events = self.policy.complete(plan, len(durations))
        self.recorder.run(plan, start_s, durations, events)
        if events.finished:
            self._count(events)
        return events

    def stop_s(self, start_s: float) -> float:
        """How far a run of decode steps starting at start_s may go (seconds from its start): it
        stops at the first step that ends at or after the next arrival, since the policy must
        see that request before the following step, as it would stepping one by one; likewise
        the end of a CPU step in flight, whose hand-off changes the GPU's next step too."""
        return min(self.next_arrival_s - start_s, self.cpu_end_s - start_s)

    # -- the CPU path (policies with one) -------------------------------------------------------

    def decide_cpu(self, now_s: float) -> Plan | Wait:
        """Admit, then the policy's next CPU step (one prefill + its KV hand-off) or Wait."""
        self.admit(now_s)
        decision = self.policy.schedule_cpu(now_s, self.arrivals_done)
        self._reject_all(decision, now_s)
        if isinstance(decision, Plan):
            assert decision.device == "cpu" and decision.max_repeats == 1, decision
        return decision

    def begin_cpu(self, plan: Plan, start_s: float) -> float:
        """A CPU step starts; returns its expected seconds (the CPU path's estimate)."""
        assert self.cpu_plan is None, "the CPU worker runs one step at a time"
        path = self.paths["cpu"]
        expected = path.estimate_latency(plan.shape)
        self.cpu_end_s = path.busy_until_s = start_s + expected
        self.cpu_plan = plan
        return expected

    def end_cpu(self, plan: Plan, start_s: float, duration_s: float) -> StepEvents:
        """The CPU step finished: account and record it (outside the GPU step sequence)."""
        self.cpu_plan, self.cpu_end_s = None, float("inf")
        events = self.policy.complete(plan, 1)
        self.recorder.cpu_run(plan, start_s, duration_s, events)
        self._count(events)
        return events

    # -- helpers -------------------------------------------------------------------------------

    def _reject_all(self, decision: Plan | Wait, now_s: float) -> None:
        for r, reason in decision.rejected:
            self.recorder.reject(r, reason, now_s)
            if self.gate is not None:
                self.gate.left(now_s)

    def _count(self, events: StepEvents) -> None:
        if self.gate is not None:  # in time order: a run's rows may finish at different steps
            for t in sorted(float(self.recorder.finish_s[r.index]) for r, _ in events.finished):
                self.gate.left(t)
        if events.finished and self.progress is not None:
            self._num_done += len(events.finished)
            self.progress(self._num_done + len(self.recorder.reject_reason))


def price_run(plan: Plan, model: CostModel, stop_s: float, jitter: StepJitter | None = None,
              fast_forward: bool = True) -> list[float]:
    """Durations of the steps a driver with a cost model runs for plan: one step, or (fast
    forward) the plan's identical decode steps up to the first that ends at or after stop_s.
    With jitter each step's cost is times its own factor; the stream is indexed by step number,
    so a fast-forward draws exactly what stepping one by one would."""
    single = plan.max_repeats == 1 or not fast_forward
    if jitter is None:
        if single:
            return [model.predict(plan.shape)]
        return model.predict_decode_run(plan.shape, plan.max_repeats, stop_s)
    durations = _jittered(plan, model, stop_s, jitter, single)
    jitter.advance(len(durations))  # the next step draws the next factor
    return durations


def _jittered(plan: Plan, model: CostModel, stop_s: float, jitter: StepJitter,
              single: bool) -> list[float]:
    key = phase_key(plan.layout, plan.phase, plan.device)
    if single:
        return [model.predict(plan.shape) * float(jitter.take(key, 1)[0])]
    # steps never get cheaper along a run, so ceil(stop / first) steps reach the stop
    # unjittered; jitter may need more: the window doubles until the stop is inside it
    m = plan.max_repeats
    if stop_s != float("inf"):
        m = min(m, int(stop_s / model.predict(plan.shape)) + 8)
    while True:
        d = model.decode_run_array(plan.shape, m) * jitter.take(key, m)
        cut = int(np.searchsorted(np.cumsum(d), stop_s, side="left")) + 1
        if cut <= m or m == plan.max_repeats:
            return d[:min(cut, m)].tolist()
        m = min(plan.max_repeats, 2 * m)
