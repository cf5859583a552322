"""The discrete-event simulator: a SimPy clock and the cost model driving the serving core.

All the server's work (admission, decisions, step bookkeeping, progress, fast-forward stops)
is `batchsim.sim.server.Server`'s; this driver only says how time passes: SimPy processes wait
for arrivals, price each step with the profile's cost model (`price_run`, optionally with step
jitter) and advance the clock by it.

Processes: `arrivals` releases the workload's requests at their arrival times into the server
and wakes the GPU when it is idle; `gpu` asks the server for the next step, advances the clock
by its price and reports back. When the policy allows a run of identical decode steps
(Plan.max_repeats) it is priced in one clock advance, stopping early at the first step that
ends after the next arrival (`Server.stop_s`): the same result as stepping one by one, one
event instead of hundreds.

Without a CPU path (every policy but hybrid) the two processes are one plain loop
(`_run_gpu_only`): arrivals are known in advance, so an index into them replaces the
`arrivals` process and SimPy's event queue, computing the very floats SimPy would (outputs are
byte-identical either way; bench/floor_loop.py measures what is left of the loop's cost).

A policy with a CPU path (hybrid) gets a third process, `cpu`: the CPU worker, its own resource
beside the GPU, running the policy's CPU prefills (cost: the CPU path's estimate, prefill plus
KV copy into the GPU pool). It is woken by arrivals and after every GPU schedule, and wakes the
GPU when it completes; a GPU decode run also stops at the first step ending at or after the CPU
step in flight, since the hand-off changes what the GPU runs next.

With max_concurrency (closed-loop clients, `sim.concurrency_gate`) the arrivals process offers
each request to the gate instead, which lets it arrive at once or when a request leaves.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import simpy

from batchsim.policies.base import Plan, Policy, Wait
from batchsim.policies.request import Request
from batchsim.sim.concurrency_gate import ConcurrencyGate
from batchsim.sim.jitter import StepJitter
from batchsim.sim.profile import CpuCostModel, Profile, cpu_cost_model, execution_paths
from batchsim.sim.recorder import Recorder
from batchsim.sim.server import ProgressFn, Server, price_run
from batchsim.sim.workload.workload import Workload

ARRIVAL_CHUNK = 4096  # requests the plain loop builds at once (RequestStream)


@dataclass
class SimResult:
    recorder: Recorder
    workload: Workload
    sim_time_s: float
    with_prefix: bool = False  # the requests carried their prefix identity
    kept: list[Request] | None = field(default=None, repr=False)  # the run's own objects

    @property
    def requests(self) -> list[Request]:
        """The run's requests: the objects it ran when it kept them all, else built again
        from the workload (equal values; the plain loop lets each go when the policy does)."""
        if self.kept is None:
            self.kept = self.workload.requests(with_prefix=self.with_prefix)
        return self.kept


class RequestStream:
    """The workload's requests for a loop that visits them in order: built ARRIVAL_CHUNK at a
    time as the loop reaches them, earlier chunks dropped. A finished request is then freed
    when the policy lets it go, instead of a million Request objects (~20 MB per 100k) living
    through the run and its outputs."""

    def __init__(self, workload: Workload, with_prefix: bool) -> None:
        self.workload = workload
        self.with_prefix = with_prefix
        self._base = 0  # index of self._chunk[0]
        self._chunk: list[Request] = []

    def __len__(self) -> int:
        return len(self.workload)

    def __getitem__(self, i: int) -> Request:
        k = i - self._base
        if 0 <= k < len(self._chunk):
            return self._chunk[k]
        # forward only: building a dropped request again would give the policy a second object
        assert k >= len(self._chunk), f"request {i} was already passed"
        self._base = i
        self._chunk = self.workload.requests(self.with_prefix, i, i + ARRIVAL_CHUNK)
        return self._chunk[0]


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """For a plain loop: it allocates many short-lived acyclic objects (plans, events, tuples)
    beside the workload's requests, which the cyclic collector would traverse again and again
    (about a tenth of the loop's time at 300k requests); reference counting frees them all, so
    the collector pauses for the run and resumes after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Simulator:
    def __init__(
        self,
        profile: Profile,
        policy: Policy,
        workload: Workload,
        too_long: set[int] | None = None,
        fast_forward: bool = True,
        progress: ProgressFn | None = None,
        cpu_costs: CpuCostModel | None = None,
        jitter: StepJitter | None = None,
        max_concurrency: int | None = None,
        env: simpy.Environment | None = None,
        server_class: Callable[..., Server] = Server,
        requests: list[Request] | None = None,
    ) -> None:
        """too_long: indexes of requests to reject on arrival as longer than max_model_len.
        cpu_costs: the CPU path of a hybrid policy (default: the profile's own CPU models).
        jitter: step-time noise for GPU steps (sim.jitter); None prices every step at the
        cost model's prediction. max_concurrency: at most this many requests outstanding
        (None: arrivals as the workload says). env, server_class, requests: for a cluster
        (sim.cluster), the shared clock, its replica core and the workload's requests built
        once."""
        self.profile = profile
        self.workload = workload
        self.with_prefix = policy.caches_prefixes
        self._requests = requests  # built on first use (`requests`); the plain loop streams them
        self.fast_forward = fast_forward
        self.jitter = jitter
        self.env = simpy.Environment() if env is None else env
        self.hybrid = "cpu" in policy.paths
        if self.hybrid and cpu_costs is None:
            cpu_costs = cpu_cost_model(profile)
        paths = execution_paths(profile, cpu_costs if self.hybrid else None)
        num_requests = len(workload) if requests is None else len(requests)
        self.server = server_class(policy, paths, num_requests, workload.arrival_s,
                                   too_long, progress)
        self._wake: simpy.Event | None = None  # the GPU idles until this
        self._cpu_wake: simpy.Event | None = None  # the CPU worker idles until this
        self.gate: ConcurrencyGate | None = None
        if max_concurrency is not None:
            self.gate = self.server.gate = ConcurrencyGate(max_concurrency, self._arrive)

    @property
    def recorder(self) -> Recorder:
        return self.server.recorder

    @property
    def requests(self) -> list[Request]:
        """Every request, built once (the SimPy processes and a cluster's router keep them)."""
        if self._requests is None:
            self._requests = self.workload.requests(with_prefix=self.with_prefix)
        return self._requests

    def run(self) -> SimResult:
        if not self.hybrid and self.gate is None:
            with cyclic_gc_paused():
                return self._run_gpu_only()
        gpu = self.start()
        self.env.run(until=gpu)
        return SimResult(self.server.recorder, self.workload, float(self.env.now),
                         self.with_prefix, self.requests)

    def _run_gpu_only(self) -> SimResult:
        """The GPU process alone, as a plain loop: with no CPU worker and no concurrency gate,
        arrivals are the only other events, and they are known in advance, so an index into
        them replaces SimPy. Times are the floats the SimPy processes compute (an arrival is
        delivered at `previous + (arrival_s - previous)`, a step ends at `start + busy_s`), so
        every output is byte-identical to the SimPy run; an arrival at the very instant a step
        ends is seen before the next decision."""
        server, begin_step = self.server, self.begin_step
        requests = (RequestStream(self.workload, self.with_prefix) if self._requests is None
                    else self._requests)
        n, i = len(requests), 0
        pending = requests[0] if n else None  # the next request to arrive: requests[i]
        now = delivered = 0.0  # the clock; when the next arrival is delivered
        if pending is not None and pending.arrival_s > 0.0:
            delivered = pending.arrival_s
        while True:
            while pending is not None and delivered <= now:
                server.arrive(pending)
                i += 1
                pending = requests[i] if i < n else None
                if pending is not None and pending.arrival_s > delivered:
                    delivered = delivered + (pending.arrival_s - delivered)
            decision = server.decide(now)
            if decision is None:
                break
            if isinstance(decision, Wait):
                server.check_wait(decision, now)
                wake = delivered if pending is not None else float("inf")
                if decision.until_s is not None:
                    wake = min(wake, now + (decision.until_s - now))
                now = wake
                continue
            durations, busy_s = begin_step(decision, now)
            start, now = now, now + busy_s
            server.end(decision, start, durations)
        return SimResult(server.recorder, self.workload, now, self.with_prefix, self._requests)

    def start(self, arrivals: bool = True) -> simpy.Process:
        """Add the processes to the clock; returns the GPU one, which ends with the work.
        arrivals=False: the caller delivers the requests (`deliver`; a cluster's router)."""
        if arrivals:
            self.env.process(self._arrivals())
        if self.hybrid:
            self.env.process(self._cpu())
        return self.env.process(self._gpu())

    def deliver(self, request: Request) -> None:
        """A request arrives now (from a router): into the server, the GPU and CPU woken."""
        self.server.arrive(request)
        self.wake()

    def wake(self) -> None:
        """Let idle processes decide again (an arrival, or arrivals closed)."""
        self._wake_gpu()
        self._wake_cpu()

    def begin_step(self, plan: Plan, start_s: float) -> tuple[list[float], float]:
        """Price plan's step (or run of decode steps) starting at start_s and tell the server
        it began: (the step durations, their sum: how long the GPU is busy)."""
        model = self.profile.cost_model(plan.layout, plan.phase, plan.device)
        stop_s = self.server.stop_s(start_s) if plan.max_repeats > 1 else float("inf")
        durations = price_run(plan, model, stop_s, self.jitter, self.fast_forward)
        busy_s = sum(durations) if len(durations) > 1 else durations[0]
        self.server.begin(plan, start_s, busy_s)
        return durations, busy_s

    # -- processes -------------------------------------------------------------------------

    def _arrivals(self):
        env = self.env
        for request in self.requests:
            if request.arrival_s > env.now:
                yield env.timeout(request.arrival_s - env.now)
            if self.gate is not None:
                self.gate.offer(request)
            else:
                self._arrive(request)

    def _gpu(self):
        env, server = self.env, self.server
        while True:
            decision = server.decide(env.now)
            if decision is None:
                return
            if isinstance(decision, Wait):
                if self.hybrid:
                    self._wake_cpu()  # this schedule may have routed requests to the CPU
                yield from self._idle(decision)
                continue
            start = env.now
            durations, busy_s = self.begin_step(decision, start)
            if self.hybrid:
                self._wake_cpu()
            yield env.timeout(busy_s)
            server.end(decision, start, durations)

    def _cpu(self):
        """The CPU worker: one CPU prefill (and its KV hand-off) at a time."""
        env, server = self.env, self.server
        while True:
            decision = server.decide_cpu(env.now)
            if isinstance(decision, Wait):
                self._cpu_wake = env.event()
                yield self._cpu_wake
                self._cpu_wake = None
                continue
            start = env.now
            duration = server.begin_cpu(decision, start)
            yield env.timeout(duration)
            server.end_cpu(decision, start, duration)
            self._wake_gpu()  # the GPU idles: the hand-off may give it work

    # -- helpers ---------------------------------------------------------------------------

    def _arrive(self, request: Request) -> None:
        self.server.arrive(request)
        self._wake_gpu()
        self._wake_cpu()

    def _wake_gpu(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _wake_cpu(self) -> None:
        if self._cpu_wake is not None and not self._cpu_wake.triggered:
            self._cpu_wake.succeed()

    def _idle(self, decision: Wait):
        env = self.env
        self._wake = env.event()
        # a CPU step about to start (its worker was just woken) will wake the GPU when done
        cpu_pending = self._cpu_wake is not None and self._cpu_wake.triggered
        self.server.check_wait(decision, env.now, cpu_pending)
        waits = [self._wake]
        if decision.until_s is not None:
            waits.append(env.timeout(decision.until_s - env.now))
        yield env.any_of(waits)
        self._wake = None
