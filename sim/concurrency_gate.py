"""Closed-loop clients: at most N requests outstanding, as `vllm bench serve --max-concurrency`.

A request is outstanding from its arrival until it finishes or is rejected. A request whose
arrival time (the workload's) comes while N are outstanding waits, in arrival order, for the
next one to leave, and arrives at that moment: its `arrival_s` becomes that time, so its TTFT
and E2E are measured from when it was really sent, as the bench client measures them. Arrival
times are otherwise the workload's. The gate knows no clock: the driver offers each request at
its arrival time and the serving core (`Server.gate`) reports each departure with its time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from batchsim.policies.request import Request


class ConcurrencyGate:
    """Holds arrivals back while max_concurrency requests are outstanding."""

    def __init__(self, max_concurrency: int, arrive: Callable[[Request], None]) -> None:
        """arrive: hands a request to the server (the driver's, which also wakes its paths)."""
        assert max_concurrency >= 1, max_concurrency
        self.max_concurrency = max_concurrency
        self.arrive = arrive
        self.outstanding = 0
        self.held: deque[Request] = deque()  # due, waiting for a slot, in arrival order

    @property
    def full(self) -> bool:
        """No request can arrive before one leaves (so a decode run need not stop for the
        next scheduled arrival: a departure ends it anyway)."""
        return self.outstanding >= self.max_concurrency

    def offer(self, request: Request) -> None:
        """The request's arrival time has come: it arrives now, or waits for a slot."""
        if self.full:
            self.held.append(request)
        else:
            self._send(request)

    def left(self, at_s: float) -> None:
        """A request finished or was rejected at at_s: the next held one arrives then."""
        self.outstanding -= 1
        assert self.outstanding >= 0, "more departures than arrivals"
        if self.held:
            request = self.held.popleft()
            request.arrival_s = max(request.arrival_s, at_s)
            self._send(request)

    def _send(self, request: Request) -> None:
        self.outstanding += 1
        self.arrive(request)
