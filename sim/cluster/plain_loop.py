"""A cluster run without SimPy: the replicas' GPU processes and the router's, as one loop.

With no CPU path on any replica (every policy but hybrid) the SimPy run of
`batchsim.sim.cluster.cluster.ClusterSimulator` has few kinds of event: a replica's step
ends, the router's next arrival is due, and an idle replica wakes up (a delivery, or its
policy's timer). `PlainLoop` keeps those events in a heap of (time, order, kind, replica) and
does at each what the SimPy process would. `order` counts up as SimPy's event ids do, so
events at one instant run in SimPy's order (first scheduled, first run), down to the two hops
an idle replica takes to wake: its wake event, then the AnyOf condition (wake event or timer)
that resumes it. Every time is the float SimPy computes: a delivery at
`now + (arrival_s - now)`, a step end at `start + busy_s`, a timer at `now + (until_s - now)`.
At time 0 the processes start in SimPy's order, the replicas by index and then the router
(process initialisations are urgent events: they go before anything else at their time).
So outputs are byte-identical to the SimPy run (tests/sim/test_cluster_loop.py runs both).
"""

from __future__ import annotations

from heapq import heappop, heappush
from itertools import count
from typing import TYPE_CHECKING

from batchsim.policies.base import Wait

if TYPE_CHECKING:
    from batchsim.policies.base import Plan
    from batchsim.sim.cluster.cluster import ClusterSimulator

# events (kind): a replica's step (or decode run) ends; the router's next arrival is due; an
# idle replica's wake event fires; its timer (Wait.until_s) fires; it resumes (AnyOf fired)
STEP_END, ARRIVAL, WOKEN, TIMER, RESUME = range(5)
# a replica: busy (a step in flight); idle (its wake event pending); waking (wake event
# triggered, WOKEN queued); resuming (its AnyOf triggered, RESUME queued); done (returned)
BUSY, IDLE, WAKING, RESUMING, DONE = range(5)


class PlainLoop:
    """One cluster run: `run()` returns the simulated time at which the last replica is done."""

    def __init__(self, cluster: ClusterSimulator) -> None:
        self.cluster = cluster
        num_replicas = len(cluster.sims)
        self.state = [BUSY] * num_replicas
        self.timer = [-1] * num_replicas  # order of an idle replica's live timer event
        # each replica's step in flight: (plan, start_s, durations)
        self.steps: list[tuple[Plan, float, list[float]] | None] = [None] * num_replicas
        self.queue: list[tuple[float, int, int, int]] = []  # (time_s, order, kind, replica)
        self._order = count()
        self.num_routed = 0  # requests the router has delivered
        self.end_s = 0.0

    def run(self) -> float:
        for r in range(len(self.state)):
            self.serve(r, 0.0)
        self.route(0.0, due=False)
        queue, state, timer = self.queue, self.state, self.timer
        while queue:
            now, order, kind, r = heappop(queue)
            if kind == STEP_END:
                plan, start_s, durations = self.steps[r]  # type: ignore[misc]
                self.cluster.servers[r].end(plan, start_s, durations)
                self.serve(r, now)
            elif kind == ARRIVAL:
                self.route(now, due=True)
            elif kind == RESUME:
                self.serve(r, now)
            elif (kind == WOKEN and state[r] == WAKING) or (kind == TIMER and timer[r] == order):
                # the first of the two fires the AnyOf; the other is then a no-op
                state[r], timer[r] = RESUMING, -1
                self.push(now, RESUME, r)
        assert all(s == DONE for s in state), f"replicas not done when events ran out: {state}"
        return self.end_s

    def push(self, time_s: float, kind: int, replica: int = -1) -> int:
        order = next(self._order)
        heappush(self.queue, (time_s, order, kind, replica))
        return order

    def serve(self, r: int, now: float) -> None:
        """Replica r's GPU process from now to its next wait (Simulator._gpu)."""
        sim = self.cluster.sims[r]
        decision = sim.server.decide(now)
        if decision is None:
            self.state[r], self.end_s = DONE, now
        elif isinstance(decision, Wait):
            self.state[r] = IDLE
            sim.server.check_wait(decision, now)
            if decision.until_s is not None:
                self.timer[r] = self.push(now + (decision.until_s - now), TIMER, r)
        else:
            self.state[r] = BUSY
            durations, busy_s = sim.begin_step(decision, now)
            self.steps[r] = (decision, now, durations)
            self.push(now + busy_s, STEP_END, r)

    def route(self, now: float, due: bool) -> None:
        """The router's process from now to its next wait (ClusterSimulator._route); due: it
        was waiting for the next request's arrival, which is now."""
        cluster, requests = self.cluster, self.cluster.requests
        i, n = self.num_routed, len(requests)
        while i < n and (due or requests[i].arrival_s <= now):
            r = cluster.assign(requests[i])
            cluster.servers[r].arrive(requests[i])
            self.wake(r, now)
            i, due = i + 1, False
        self.num_routed = i
        if i < n:
            self.push(now + (requests[i].arrival_s - now), ARRIVAL)
            return
        for r, server in enumerate(cluster.servers):
            server.close_arrivals()
            self.wake(r, now)

    def wake(self, r: int, now: float) -> None:
        if self.state[r] == IDLE:
            self.state[r] = WAKING
            self.push(now, WOKEN, r)
