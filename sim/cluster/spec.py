"""What a cluster run is: how many replicas, which router, which profile on each.

A leaf (it imports only the router names), so `batchsim.sim.run.RunSpec` can carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchsim.sim.cluster.router import ROUTERS
from batchsim.sim.errors import UsageError

MAX_REPLICAS = 1024
DEFAULT_ROUTER = "round_robin"


@dataclass(frozen=True)
class ClusterSpec:
    """replicas: servers behind the router (1 = the single-server simulator, unchanged);
    router: a name in sim.cluster.router.ROUTERS; profiles: one profile per replica for a mixed
    fleet (empty: every replica runs the run's profile)."""

    replicas: int = 1
    router: str = DEFAULT_ROUTER
    profiles: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        if (isinstance(self.replicas, bool) or not isinstance(self.replicas, int)
                or not 1 <= self.replicas <= MAX_REPLICAS):
            raise UsageError(f"--replicas must be an integer from 1 to {MAX_REPLICAS}, got "
                             f"{self.replicas!r}")
        if self.router not in ROUTERS:
            raise UsageError(f"unknown router {self.router!r}; routers: {', '.join(ROUTERS)}")
        if self.profiles and len(self.profiles) != self.replicas:
            raise UsageError(f"--profile given {len(self.profiles)} times for --replicas "
                             f"{self.replicas}: give one profile for every replica, or one for "
                             "all")

    def profile_of(self, replica: int, default: str | None) -> str | None:
        return self.profiles[replica] if self.profiles else default


def parse_replicas(text: str) -> int:
    """A --replicas / --vary replicas value."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--replicas {text!r}: not an integer") from None
    ClusterSpec(replicas=value)  # the range check and its message
    return value
