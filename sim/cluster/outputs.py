"""A cluster run's tables and metrics: every replica's, and the cluster's as one server.

The cluster's requests table is every request's row from the replica that served it, in
workload order, plus a `replica` column; its steps table is every replica's steps in start
order (ties: lower replica first), `step` numbering each replica's own steps, plus `replica`.
The cluster's metrics are `batchsim.sim.metrics.summarize` over those tables, with two figures
that are per device made per replica: `gpu_busy_fraction` (and `cpu_busy_fraction`) is the
mean over replicas, `max_kv_utilization` the highest replica's (each against its own pool). A
`replicas` list holds each replica's own metrics, the rows of the report's replica table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from batchsim.sim.metrics import summarize

if TYPE_CHECKING:
    from batchsim.sim.cluster.cluster import ClusterResult
    from batchsim.sim.recorder import Recorder
    from batchsim.sim.run import Prepared

# the per-replica figures kept in metrics.json's `replicas` rows (all from summarize)
REPLICA_KEYS = ("num_requests", "completed", "rejected", "request_throughput",
                "output_token_throughput", "gpu_busy_fraction", "mean_batch_size",
                "max_kv_utilization", "preemptions")
REPLICA_LATENCIES = (("ttft_ms", ("mean", "p99")), ("tpot_ms", ("mean", "p99")),
                     ("e2el_ms", ("mean", "p99")))


class ClusterRecord:
    """What summarize reads of a recorder, pooled over the replicas."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self.recorders = recorders
        self.prefill_paths = any(r.prefill_paths for r in recorders)
        self.cpu_steps = [step for r in recorders for step in r.cpu_steps]

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [r.itl_samples() for r in self.recorders]
        return (np.concatenate([v for v, _ in parts]),
                np.concatenate([w for _, w in parts]).astype(np.int64))


def replica_row(replica: int, prep: Prepared, metrics: Mapping[str, Any]) -> dict[str, Any]:
    profile = prep.profile.summary()
    row: dict[str, Any] = {"replica": replica, "profile": profile["path"],
                           "device": profile["device"]}
    row.update({k: metrics[k] for k in REPLICA_KEYS})
    for key, stats in REPLICA_LATENCIES:
        for stat in stats:
            row[f"{key.removesuffix('_ms')}_{stat}_ms"] = metrics[key][stat]
    if "goodput" in metrics:
        row["good_requests"] = metrics["goodput"]["good_requests"]
    return row


def cluster_outputs(result: ClusterResult, preps: Sequence[Prepared],
                    goodput: Mapping[str, float] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Recorder]:
    """(requests table, steps table, metrics, pooled record) of a cluster run."""
    source = preps[0].profile.source
    sources = {p.profile.source for p in preps}
    if len(sources) > 1:
        source = "+".join(sorted(sources))  # a mixed fleet says so in every output
    request_parts, step_parts, rows, busy = [], [], [], []
    for r, (server, prep) in enumerate(zip(result.replicas, preps, strict=True)):
        rec = server.recorder
        mine = np.flatnonzero(result.assignment == r)
        requests = rec.requests_table(result.requests).iloc[mine]
        steps = rec.steps_table()
        metrics = summarize(rec, requests, steps, prep.policy.kv_capacity_blocks,
                            prep.profile.source, goodput)
        rows.append(replica_row(r, prep, metrics))
        busy.append(float(steps["duration_s"].to_numpy()[
            (steps["device"] == "gpu").to_numpy()].sum()))
        steps["replica"] = np.int64(r)
        request_parts.append(requests)
        step_parts.append(steps)
    requests_df = pd.concat(request_parts).sort_index(kind="stable")
    requests_df["replica"] = result.assignment
    requests_df = requests_df.reset_index(drop=True)
    steps_df = pd.concat(step_parts, ignore_index=True)
    steps_df = steps_df.iloc[np.argsort(steps_df["start_s"].to_numpy(), kind="stable")]
    steps_df = steps_df.reset_index(drop=True)
    record = cast("Recorder", ClusterRecord([s.recorder for s in result.replicas]))
    metrics = summarize(record, requests_df, steps_df, 1, source, goodput)
    n = len(preps)
    duration = metrics["duration_s"]
    metrics["gpu_busy_fraction"] = sum(busy) / (n * duration) if duration > 0 else 0.0
    if "cpu_busy_fraction" in metrics:
        metrics["cpu_busy_fraction"] /= n
    metrics["max_kv_utilization"] = max(row["max_kv_utilization"] for row in rows)
    metrics["replicas"] = rows
    return requests_df, steps_df, metrics, record
