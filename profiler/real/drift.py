"""Machine drift: re-measure a few of the profile's own grid points right before a real point.

A validation compares a real run today with a cost model fitted to measurements taken earlier.
If the machine is slower now (other processes sharing cores, caches and memory bandwidth; a
different clock frequency; thermal state), every real step is slower and the simulation looks
wrong although the cost model is right for the machine as it was profiled. Re-measuring a few
grid points with the profile's own method and comparing with the profile's figures separates the
two: drift = median(time now / time in the profile). It is reported, never used to correct.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.profiler.profiling.grid import (
    PACKED_DECODE,
    PACKED_MIXED,
    PACKED_PREFILL,
    PADDED_PREFILL,
    GridPoint,
)
from batchsim.profiler.profiling.measure import PackedRunner, PaddedRunner, Repeats

if TYPE_CHECKING:
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.static_engine import StaticEngine

logger = logging.getLogger(__name__)

_ID = re.compile(r"^(?P<key>[a-z.]+):b(?P<b>\d+):t(?P<t>\d+):c(?P<c>\d+):p(?P<p>\d+)$")
_MAX_POINT_S = 0.3  # re-measure only cheap points: drift costs seconds, not minutes
_PER_KEY = 2


@dataclass(frozen=True)
class References:
    points: list[dict[str, Any]]  # the raw points to re-measure
    profiled_s: dict[str, float]  # the profile's time of every raw point, by id
    clock: str  # the profile's step clock: wall or thread


def blocks_needed(refs: References, block_size: int) -> int:
    """KV blocks of the paged engine the largest packed reference step holds."""
    need = 0
    for p in refs.points:
        g = _grid_point(p["id"])
        if g.key == PACKED_PREFILL:
            need = max(need, g.batch * -(-g.tokens // block_size))
        elif g.key in (PACKED_DECODE, PACKED_MIXED):
            blocks = g.batch * -(-(g.context + 1) // block_size)
            if g.key == PACKED_MIXED:
                blocks += -(-(g.prefix + g.tokens) // block_size)
            need = max(need, blocks)
    return need


def reference_points(profile_path: str, packed: bool, padded: bool) -> References:
    """A few cheap raw points of the profile per step kind the validation runs."""
    doc = json.loads(Path(profile_path).read_text())
    keys = ([PACKED_PREFILL, PACKED_DECODE, PACKED_MIXED] if packed else []) + (
        [PADDED_PREFILL] if padded else [])
    chosen = []
    for key in keys:
        pts = sorted((p for p in doc.get("points", []) if p["model"] == key
                      and p["time_s"] <= _MAX_POINT_S and _ID.match(p["id"])),
                     key=lambda p: p["time_s"])
        if pts:  # the cheapest and a middle one
            chosen += [pts[0], pts[len(pts) // 2]][: _PER_KEY] if len(pts) > 1 else pts
    return References(chosen, {p["id"]: float(p["time_s"]) for p in doc.get("points", [])},
                      str(doc.get("run", {}).get("timing") or "wall"))


def _grid_point(point_id: str) -> GridPoint:
    m = _ID.match(point_id)
    assert m is not None, point_id
    return GridPoint(m["key"], int(m["b"]), int(m["t"]), int(m["c"]), int(m["p"]))


def measure_drift(refs: References, paged: Engine | None, static: StaticEngine | None,
                  seed: int = 0) -> dict[str, Any]:
    """Re-measure the reference points now (1 warm-up + 3 repeats each, the profile's clock)."""
    rng = np.random.default_rng(seed)
    reps = Repeats(warmup=1, min_repeats=3, clock="thread" if refs.clock == "thread" else "wall")
    runners: dict[str, PackedRunner | PaddedRunner] = {}
    if paged is not None:
        runners["packed"] = PackedRunner(paged, rng, record_peak=False)
    if static is not None:
        runners["padded"] = PaddedRunner(static, rng)
    rows = []
    for p in refs.points:
        runner = runners.get(p["model"].split(".")[0])
        if runner is None:
            continue
        for rec in runner.measure(_grid_point(p["id"]), reps):
            was = refs.profiled_s.get(rec["id"])
            if was:  # a padded prefill also yields its decode record: compared if profiled
                rows.append({"id": rec["id"], "profiled_s": was, "now_s": rec["time_s"],
                             "ratio": rec["time_s"] / was})
    ratios = [r["ratio"] for r in rows]
    return {"ratio": float(np.median(ratios)) if ratios else None, "clock": reps.clock,
            "points": rows}


def bracket(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The drift over a point from measurements just before and just after it: `ratio` is the
    geometric mean of the two (None if either is), `points` both sets, marked by `when`."""
    rb, ra = before["ratio"], after["ratio"]
    return {"ratio": math.sqrt(rb * ra) if rb and ra else None, "before": rb, "after": ra,
            "clock": before["clock"],
            "points": [{**r, "when": "before"} for r in before["points"]]
            + [{**r, "when": "after"} for r in after["points"]]}
