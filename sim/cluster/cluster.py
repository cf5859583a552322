"""Many replicas behind a router, on one clock.

Each replica is the single-server simulator (`batchsim.sim.simulator.Simulator`) with its own
policy instance, KV pool, cost model and recorder, started without its own arrivals process on
a clock shared with the others; its core is a `ReplicaServer`. One `router` process releases
the workload's requests at their arrival times, asks the router which replica serves each
(`sim.cluster.router`), and delivers it there. When the last request is delivered, every
replica is told arrivals are over, and the run ends when every replica's GPU process has.

Without a CPU path on any replica (every policy but hybrid) those processes run as one plain
loop (`sim.cluster.plain_loop`: their events in one heap, in the order SimPy runs them, with
the floats SimPy computes), so outputs are byte-identical either way; with one, they run on a
shared SimPy clock. `ClusterSimulator.plain_loop = False` forces SimPy (the tests compare).

One replica (`--replicas 1`) never comes here: `batchsim.sim.run.simulate` runs the plain
simulator, so its outputs stay byte for byte what they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import simpy

from batchsim.sim.cluster.plain_loop import PlainLoop
from batchsim.sim.cluster.replica import ArrivalCursor, ReplicaServer
from batchsim.sim.cluster.router import Router
from batchsim.sim.jitter import StepJitter
from batchsim.sim.simulator import Simulator, cyclic_gc_paused

if TYPE_CHECKING:
    from batchsim.policies.request import Request
    from batchsim.sim.run import Prepared
    from batchsim.sim.workload.workload import Workload


@dataclass
class ClusterResult:
    replicas: list[ReplicaServer]
    requests: list[Request]
    assignment: np.ndarray  # int64 [N requests]: the replica each was routed to
    sim_time_s: float


class ClusterSimulator:
    # False: the SimPy processes even where the plain loop applies (tests compare the two)
    plain_loop = True

    def __init__(self, preps: Sequence[Prepared], router: Router, workload: Workload,
                 fast_forward: bool = True, progress: Callable[[int], None] | None = None,
                 jitters: Sequence[StepJitter | None] | None = None) -> None:
        """preps: one prepared run per replica (its profile, policy, too-long set, CPU path);
        jitters: one step-jitter stream per replica (None: none)."""
        assert len(preps) == router.num_replicas, (len(preps), router.num_replicas)
        self.env = simpy.Environment()
        self.router = router
        self.workload = workload
        self.requests = workload.requests(
            with_prefix=any(p.policy.caches_prefixes for p in preps))
        self.assignment = np.full(len(self.requests), -1, dtype=np.int64)
        # a replica's decode runs stop at the next arrival that may be routed to it: its own
        # when the router's choices are fixed in advance, else the cluster's next arrival
        fixed = router.fixed_assignment(len(self.requests))
        cluster_cursor = ArrivalCursor(workload.arrival_s)
        self.cursors = ([ArrivalCursor(workload.arrival_s[fixed == r])
                         for r in range(len(preps))] if fixed is not None
                        else [cluster_cursor] * len(preps))
        self._done = [0] * len(preps)
        self._progress = progress
        # a signal that changes inside a decode run (KV use) is current only stepping one by one
        fast = fast_forward and not router.per_step_signal
        self.sims: list[Simulator] = []
        for r, prep in enumerate(preps):
            self.sims.append(Simulator(
                prep.profile, prep.policy, workload, prep.too_long, fast_forward=fast,
                progress=partial(self._count, r) if progress is not None else None,
                cpu_costs=prep.cpu_costs, jitter=jitters[r] if jitters else None,
                env=self.env, server_class=partial(ReplicaServer, cursor=self.cursors[r]),
                requests=self.requests))
        self.servers: list[ReplicaServer] = [sim.server for sim in self.sims]  # type: ignore[misc]
        if fixed is None:
            for r, (server, sim) in enumerate(zip(self.servers, self.sims, strict=True)):
                # a CPU step's finish lowers the count inside a GPU run: no look-ahead there
                if not sim.hybrid:
                    server.arrivals_elsewhere = partial(router.arrivals_elsewhere, r,
                                                        self.servers)

    def run(self) -> ClusterResult:
        if self.plain_loop and not any(sim.hybrid for sim in self.sims):
            with cyclic_gc_paused():
                end_s = PlainLoop(self).run()
            return ClusterResult(self.servers, self.requests, self.assignment, end_s)
        gpus = [sim.start(arrivals=False) for sim in self.sims]
        self.env.process(self._route())
        self.env.run(until=self.env.all_of(gpus))
        return ClusterResult(self.servers, self.requests, self.assignment, float(self.env.now))

    def assign(self, request: Request) -> int:
        """Route an arriving request: the replica the router picks, counted as routed there
        (before delivery: the replica's next fast-forward stop is then the next arrival)."""
        hashes = self.workload.hash_ids
        prefix = hashes[request.index] if hashes is not None else None
        r = self.router.route(request.index, self.servers, prefix)
        assert 0 <= r < len(self.sims), f"router {self.router.name} chose replica {r}"
        self.assignment[request.index] = r
        self.cursors[0 if self.cursors[0] is self.cursors[-1] else r].num_routed += 1
        return r

    def _route(self):
        env = self.env
        for request in self.requests:
            if request.arrival_s > env.now:
                yield env.timeout(request.arrival_s - env.now)
            self.sims[self.assign(request)].deliver(request)
        for sim in self.sims:
            sim.server.close_arrivals()
            sim.wake()

    def _count(self, replica: int, done: int) -> None:
        self._done[replica] = done
        assert self._progress is not None
        self._progress(sum(self._done))
