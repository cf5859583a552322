"""Routers: which replica of a cluster serves an arriving request.

A router sees what a real one sees, through each replica's `ReplicaState`: requests it has
routed there and not seen finish (outstanding), those not yet started (waiting), the KV use
the replica last reported, and, for prefix affinity, the prompt's prefix-block hashes. It has
no clock of its own and no randomness; ties go to the lowest replica index, so a run is
deterministic.

The references: Vidur's global schedulers (round-robin, least outstanding requests; its
random one needs a seed and is not here) and llm-d's prefix-cache-aware routing (its
inference scheduler scores replicas by the prompt's prefix blocks it believes each one holds,
beside load scorers). `prefix_affinity` is a lexicographic simplification of that: the longest
run of leading prefix blocks the router has sent to a replica wins, load breaks ties, and a
replica more than `PREFIX_MAX_IMBALANCE` outstanding requests above the least loaded one is
passed over.

Prefix hashes come from the workload's `hash_ids` (Mooncake traces, the native format's
optional field): the router's index is its own memory of where it sent each hash, without
evictions, since it cannot see a replica's cache. A request without hashes (every synthetic
workload, until requests carry prefix blocks of their own) is routed by least outstanding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Protocol

import numpy as np

from batchsim.sim.errors import UsageError

Prefix = Sequence[int] | np.ndarray  # a prompt's prefix-block hashes, first block first

# A replica whose outstanding count exceeds the least loaded one's by more than this loses its
# prefix affinity for the request (llm-d weighs prefix hits against load in the same spirit).
PREFIX_MAX_IMBALANCE = 8


class ReplicaState(Protocol):
    """What a router may read of a replica at an arrival."""

    @property
    def outstanding(self) -> int:
        """Requests routed here and neither finished nor rejected."""

    @property
    def waiting(self) -> int:
        """Requests routed here whose first prefill has not been scheduled."""

    @property
    def kv_used_fraction(self) -> float:
        """KV blocks in use at the replica's last completed step / its KV capacity."""




class Router(ABC):
    """Picks a replica per arrival; one instance per run (it may keep state)."""

    name: ClassVar[str]
    # True when the router reads a signal that changes inside a run of identical decode steps
    # (KV use): the cluster then prices steps one by one so the signal is current
    per_step_signal: ClassVar[bool] = False

    def __init__(self, num_replicas: int) -> None:
        self.num_replicas = num_replicas

    @abstractmethod
    def route(self, index: int, replicas: Sequence[ReplicaState],
              prefix: Prefix | None) -> int:
        """The replica (0-based) for request `index`, given the replicas' states now."""

    def fixed_assignment(self, num_requests: int) -> np.ndarray | None:
        """The replica of every request, when it does not depend on the replicas' states
        (then each replica knows its own next arrival, as a single server does); None when
        it does."""
        return None

    def arrivals_elsewhere(self, replica: int, replicas: Sequence[ReplicaState]) -> int:
        """How many of the next arrivals certainly go to other replicas than `replica`,
        whatever finishes before they arrive (finishes only lower outstanding counts): its run
        of decode steps need not stop at them. 0 (the default): any of them may come here."""
        return 0


def least_outstanding(replicas: Sequence[ReplicaState],
                      among: Sequence[int] | None = None) -> int:
    """The replica with the fewest outstanding requests (lowest index on a tie)."""
    candidates = range(len(replicas)) if among is None else among
    return min(candidates, key=lambda r: (replicas[r].outstanding, r))


class RoundRobin(Router):
    """Replica i mod N for the i-th arrival: blind to load."""

    name = "round_robin"

    def __init__(self, num_replicas: int) -> None:
        super().__init__(num_replicas)
        self._next = 0

    def route(self, index: int, replicas: Sequence[ReplicaState],
              prefix: Prefix | None) -> int:
        r = self._next
        self._next = (r + 1) % self.num_replicas
        return r

    def fixed_assignment(self, num_requests: int) -> np.ndarray | None:
        return np.arange(num_requests, dtype=np.int64) % self.num_replicas


class LeastOutstanding(Router):
    """Vidur's LOR: the replica with the fewest requests in flight."""

    name = "least_outstanding"

    def route(self, index: int, replicas: Sequence[ReplicaState],
              prefix: Prefix | None) -> int:
        return least_outstanding(replicas)

    def arrivals_elsewhere(self, replica: int, replicas: Sequence[ReplicaState]) -> int:
        """Replica r wins an arrival only once every q has (outstanding, q) above r's: q needs
        o_r - o_q more arrivals (one more if q < r, which wins ties), each arrival adds one to
        one replica, and until r's run ends its own count stays put."""
        mine = replicas[replica].outstanding
        return sum(max(0, mine - state.outstanding + (q < replica))
                   for q, state in enumerate(replicas) if q != replica)


class LeastKv(Router):
    """The replica with the lowest KV use it last reported; then fewer waiting, then fewer
    outstanding requests (several arrivals within one step all see the same KV figures)."""

    name = "least_kv"
    per_step_signal = True

    def route(self, index: int, replicas: Sequence[ReplicaState],
              prefix: Prefix | None) -> int:
        return min(range(len(replicas)), key=lambda r: (
            replicas[r].kv_used_fraction, replicas[r].waiting, replicas[r].outstanding, r))


class PrefixAffinity(Router):
    """The replica the router sent the longest run of this prompt's leading prefix blocks to;
    least outstanding when none (or no hashes), or when that replica is overloaded."""

    name = "prefix_affinity"

    def __init__(self, num_replicas: int) -> None:
        super().__init__(num_replicas)
        self._sent: list[set[int]] = [set() for _ in range(num_replicas)]

    def matched_blocks(self, replica: int, prefix: Prefix) -> int:
        """Leading blocks of prefix the router has sent to replica before."""
        sent, n = self._sent[replica], 0
        for block in prefix:
            if block not in sent:
                break
            n += 1
        return n

    def route(self, index: int, replicas: Sequence[ReplicaState],
              prefix: Prefix | None) -> int:
        if prefix is None or len(prefix) == 0:
            return least_outstanding(replicas)
        least = least_outstanding(replicas)
        limit = replicas[least].outstanding + PREFIX_MAX_IMBALANCE
        scores = [self.matched_blocks(r, prefix) if replicas[r].outstanding <= limit else 0
                  for r in range(len(replicas))]
        best = max(scores)
        chosen = (least if best == 0 else
                  least_outstanding(replicas, [r for r, s in enumerate(scores) if s == best]))
        self._sent[chosen].update(int(b) for b in prefix)
        return chosen


ROUTERS: dict[str, type[Router]] = {
    cls.name: cls for cls in (RoundRobin, LeastOutstanding, LeastKv, PrefixAffinity)}


def make_router(name: str, num_replicas: int) -> Router:
    if name not in ROUTERS:
        raise UsageError(f"unknown router {name!r}; routers: {', '.join(ROUTERS)}")
    return ROUTERS[name](num_replicas)
