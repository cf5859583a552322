"""Did the run keep up with its arrivals? A server that cannot serves slower than requests
arrive, its backlog grows for as long as the run lasts, and every latency then depends on the
run's length rather than on the policy: such numbers must not be read as steady state.

Over the arrival window [first arrival, last arrival]:
  arrival rate A = (N - 1) / window                    (the rate of --request-rate / --target-rate)
  served rate  S = requests finished by the last arrival / window
  backlog B(t)   = requests arrived by t - requests finished (or rejected) by t
The run is overloaded when S < 0.9 A, the backlog at the last arrival is over 10% of all
requests, and it is more than 1.5x the backlog at the window's middle (a backlog that grows,
not one that a burst or a short run leaves in flight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # tables are passed in; importing pandas here costs the CLI ~0.3 s


@dataclass(frozen=True)
class Overload:
    arrival_rate: float  # req/s over the arrival window
    served_rate: float  # req/s finished within it
    backlog: int  # requests waiting or running at the last arrival
    num_requests: int

    def message(self) -> str:
        share = self.backlog / self.num_requests
        return (f"the server did not keep up with its arrivals: it finished "
                f"{self.served_rate:.3g} req/s while {self.arrival_rate:.3g} req/s arrived, and "
                f"at the last arrival {self.backlog:,} requests ({share:.0%}) were still waiting "
                "or running, so the latencies grow with the run's length (lower the load, or "
                "give the policy more capacity)")


def overload(requests: pd.DataFrame) -> Overload | None:
    """The overload found in a run's requests table (arrival_s, finish_s; NaN: rejected), or
    None when the run kept up (or has no arrival window: all at t=0)."""
    arrival = np.sort(requests["arrival_s"].to_numpy(dtype=float))
    n = len(arrival)
    if n < 2 or not arrival[-1] > arrival[0]:
        return None
    finish = requests["finish_s"].to_numpy(dtype=float)
    # a rejected request (no finish) leaves the server when it arrives
    done = np.sort(np.where(np.isnan(finish), requests["arrival_s"].to_numpy(dtype=float),
                            finish))
    first, last = arrival[0], arrival[-1]
    mid = (first + last) / 2

    def backlog(t: float) -> int:
        return int(np.searchsorted(arrival, t, side="right") - np.searchsorted(done, t, "right"))

    window = last - first
    arrival_rate = (n - 1) / window
    served_rate = int(np.searchsorted(done, last, side="right")) / window
    end = backlog(last)
    if served_rate < 0.9 * arrival_rate and end > 0.1 * n and end > 1.5 * backlog(mid):
        return Overload(arrival_rate, served_rate, end, n)
    return None
