"""One replica of a cluster: the serving core, plus what a router may read of it.

`ReplicaServer` is `batchsim.sim.server.Server` with two differences. Its fast-forward stop is
the cluster's next arrival, whichever replica it goes to (`ArrivalCursor`): the router decides
only when the request arrives, so every replica's run of identical decode steps stops at the
first step ending at or after it, exactly as stepping one by one would; a router that can
tell that the next few arrivals cannot come here (least outstanding can) lets the run go on
past them. And it keeps the
counts a router sees (`ReplicaState`): outstanding and waiting requests and the KV use of its
last completed step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.sim.server import Server

if TYPE_CHECKING:
    from batchsim.policies.base import Plan, StepEvents


class ArrivalCursor:
    """Arrival times (sorted) that may be routed to a replica (the cluster's, or its own
    when the router's choices are fixed), and how many the router has delivered."""

    def __init__(self, arrival_s: np.ndarray) -> None:
        self.arrival_s = arrival_s
        self.num_routed = 0

    @property
    def next_s(self) -> float:
        return self.after(0)

    def after(self, skip: int) -> float:
        """Arrival time of the next arrival but `skip` (inf when there is none)."""
        k = self.num_routed + skip
        return float(self.arrival_s[k]) if k < len(self.arrival_s) else float("inf")


class ReplicaServer(Server):
    """A replica's serving core; see the module docstring."""

    def __init__(self, *args: Any, cursor: ArrivalCursor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor = cursor
        # the router's count of next arrivals that cannot come here (sim.cluster.router
        # Router.arrivals_elsewhere); None: the next one may
        self.arrivals_elsewhere: Callable[[], int] | None = None
        self.num_finished = 0
        self._started: set[int] = set()  # requests whose first prefill was scheduled
        self._kv_blocks = 0

    # -- what a router sees (sim.cluster.router.ReplicaState) ------------------------------

    @property
    def outstanding(self) -> int:
        return self.num_arrived - self.num_finished - len(self.recorder.reject_reason)

    @property
    def waiting(self) -> int:
        return self.num_arrived - len(self._started) - len(self.recorder.reject_reason)

    @property
    def kv_used_fraction(self) -> float:
        capacity = self.policy.kv_capacity_blocks
        return self._kv_blocks / capacity if capacity > 0 else 0.0

    # -- the core, counting ----------------------------------------------------------------

    @property
    def next_arrival_s(self) -> float:
        """The next arrival that may be routed here."""
        if self.arrivals_elsewhere is None:
            return self.cursor.next_s
        return self.cursor.after(self.arrivals_elsewhere())

    def begin(self, plan: Plan, start_s: float, expected_s: float) -> None:
        self._note_started(plan)
        super().begin(plan, start_s, expected_s)

    def end(self, plan: Plan, start_s: float, durations: list[float]) -> StepEvents:
        events = super().end(plan, start_s, durations)
        self.num_finished += len(events.finished)
        if events.kv_blocks_used:
            self._kv_blocks = events.kv_blocks_used[-1]
        return events

    def begin_cpu(self, plan: Plan, start_s: float) -> float:
        self._note_started(plan)
        return super().begin_cpu(plan, start_s)

    def end_cpu(self, plan: Plan, start_s: float, duration_s: float) -> StepEvents:
        events = super().end_cpu(plan, start_s, duration_s)
        self.num_finished += len(events.finished)
        return events

    def _note_started(self, plan: Plan) -> None:
        for chunk in plan.prefills:
            if chunk.start == 0:
                self._started.add(chunk.request.index)
