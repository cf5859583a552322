"""Capacity planning: the fewest replicas, and the knobs, that meet an SLO at one request rate.

`batchsim plan` (and `plan_capacity` here) runs the sweep's grid (policies × varied knob
values, routers included) at one rate with 1, 2, 3, ... replicas, in that order, and stops at
the first replica count where some configuration keeps at least `SLO_TARGET` (99%) of its
requests within the SLO: the same test, and the same SLO wording, as the sweep's
recommendation (`sim.sweep.analysis`). Among the configurations that meet it, the highest
attainment wins, then the lowest p99 E2EL. The search is linear because each step is one small
sweep and the answer is usually a handful of replicas; every point tested is kept in the table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from batchsim.sim.cluster.spec import MAX_REPLICAS
from batchsim.sim.errors import UsageError
from batchsim.sim.sweep.analysis import SLO_TARGET, slo_text
from batchsim.sim.sweep.sweep import Configuration, SweepSpec, check, run_sweep


@dataclass(frozen=True)
class CapacityPlan:
    """What the search found; replicas is None when no count up to the limit meets the SLO."""

    replicas: int | None
    best: dict[str, Any]  # the chosen row (or, if none meets it, the best row at the limit)
    table: pd.DataFrame  # every point tested, replica counts ascending
    sentence: str


def with_replicas(config: Configuration, replicas: int) -> Configuration:
    """The configuration on `replicas` replicas (its router, if varied, kept)."""
    knobs = tuple((k, v) for k, v in config.knobs if k != "replicas")
    return Configuration(config.policy, (*knobs, ("replicas", str(replicas))), config.name)


def _best(rows: pd.DataFrame) -> pd.Series:
    ranked = rows.assign(latency_key=-rows["e2el_p99_ms"].fillna(math.inf))
    ranked = ranked.sort_values(["slo_attainment", "latency_key"], ascending=False,
                                kind="stable")
    return ranked.iloc[0]


def plan_capacity(sweep: SweepSpec, max_replicas: int = 16, workers: int | None = None,
                  on_count: Callable[[int, pd.DataFrame], None] | None = None,
                  **run_options: Any) -> CapacityPlan:
    """Search replica counts 1..max_replicas for sweep's configurations at its one rate.

    on_count(n, rows): called after each replica count with its rows (for progress lines);
    run_options: run_sweep's (backend, address).
    """
    if not sweep.base.goodput:
        raise UsageError("plan needs --goodput (e.g. ttft:500 tpot:50): the SLO to meet")
    if len(sweep.rates) != 1 or math.isinf(sweep.rates[0]):
        raise UsageError("plan answers for one finite --request-rate R")
    if not 1 <= max_replicas <= MAX_REPLICAS:
        raise UsageError(f"--max-replicas must be from 1 to {MAX_REPLICAS}, got {max_replicas}")
    slo = dict(sweep.base.goodput)
    parts: list[pd.DataFrame] = []
    found: int | None = None
    for n in range(1, max_replicas + 1):
        # one replica: the router does not matter, so each configuration runs once
        configs = list(dict.fromkeys(
            with_replicas(c, n) if n > 1 else
            Configuration(c.policy, (*((k, v) for k, v in c.knobs
                                       if k not in ("replicas", "router")), ("replicas", "1")),
                          c.name)
            for c in sweep.configurations))
        step = dataclasses.replace(sweep, configurations=tuple(configs))
        rows = run_sweep(step, workers, points=check(step), **run_options)
        parts.append(rows)
        if on_count is not None:
            on_count(n, rows)
        if (rows["slo_attainment"] >= SLO_TARGET).any():
            found = n
            break
    table = pd.concat(parts, ignore_index=True)
    table["point"] = range(len(table))
    if "router" in table:  # beside replicas (the one-replica rows have none)
        columns = [c for c in table.columns if c != "router"]
        columns.insert(columns.index("replicas") + 1, "router")
        table = table[columns]
    last = parts[-1]
    rate = sweep.rates[0]
    if found is not None:
        meets = last[last["slo_attainment"] >= SLO_TARGET]
        best = _best(meets)
        sentence = (f"Capacity plan: {found} replica{'s' if found > 1 else ''} running "
                    f"{best['config']} keep{'' if found > 1 else 's'} "
                    f"{best['slo_attainment']:.1%} of requests within {slo_text(slo)} at "
                    f"{rate:,.3g} req/s (target {SLO_TARGET:.0%}; {len(meets)} of {len(last)} "
                    f"configurations meet it at {found}")
        if found > 1:
            below = _best(parts[-2])
            sentence += (f"; with {found - 1} the best, {below['config']}, keeps "
                         f"{below['slo_attainment']:.1%}")
        sentence += ")."
    else:
        best = _best(last)
        sentence = (f"No configuration of up to {max_replicas} replicas keeps "
                    f"{SLO_TARGET:.0%} of requests within {slo_text(slo)} at {rate:,.3g} "
                    f"req/s: the best at {max_replicas}, {best['config']}, keeps "
                    f"{best['slo_attainment']:.1%}; raise --max-replicas, relax the SLO or "
                    "try other knobs.")
    return CapacityPlan(found, {str(k): v for k, v in best.items()}, table, sentence)
