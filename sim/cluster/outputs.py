"""A cluster run's tables and metrics: every replica's, and the cluster's as one server.

The cluster's requests table is every request's row from the replica that served it, in
workload order, plus a `replica` column; its steps table is replica 0's steps, then replica
1's, ..., each in time order with `step` numbering the replica's own steps, plus `replica`.
The cluster's metrics are `batchsim.sim.metrics.summarize` over those tables, with two figures
that are per device made per replica: `gpu_busy_fraction` (and `cpu_busy_fraction`) is the
mean over replicas, `max_kv_utilization` the highest replica's (each against its own pool);
`prefill_time_share` and `mean_batch_size` pool every replica's steps. A
`replicas` list holds each replica's own metrics, the rows of the report's replica table.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from batchsim.policies.prefix_cache import PrefixCacheStats
from batchsim.sim.metrics import summarize
from batchsim.sim.recorder import DEVICES, Recorder
from batchsim.sim.samples import ItlSampleCache

if TYPE_CHECKING:
    from batchsim.sim.cluster.cluster import ClusterResult
    from batchsim.sim.run import Prepared

# the per-replica figures kept in metrics.json's `replicas` rows (all from summarize)
REPLICA_KEYS = ("num_requests", "completed", "rejected", "request_throughput",
                "output_token_throughput", "gpu_busy_fraction", "mean_batch_size",
                "max_kv_utilization", "preemptions")
REPLICA_LATENCIES = (("ttft_ms", ("mean", "p99")), ("tpot_ms", ("mean", "p99")),
                     ("e2el_ms", ("mean", "p99")))


class ClusterRecord(ItlSampleCache):
    """What summarize reads of a recorder (ITL samples, CPU steps, whether prefill paths are
    recorded), pooled over one or more replicas; each replica's ITL samples are computed once."""

    def __init__(self, recorders: Sequence[Recorder],
                 itl: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                 assignment: np.ndarray | None = None) -> None:
        """assignment: the replica of every request (for token_times_s of a cluster)."""
        self.recorders = recorders
        self.assignment = assignment
        self.prefill_paths = any(r.prefill_paths for r in recorders)
        self.cpu_steps = [step for r in recorders for step in r.cpu_steps]
        self.itl = list(itl) if itl is not None else [r.itl_samples() for r in recorders]
        self._steps: pd.DataFrame | None = None

    def steps_table(self) -> pd.DataFrame:
        """Replica 0's steps, then replica 1's, ..., each with its `replica` (a cluster run's
        steps table: built when first asked for, as a single server's is)."""
        if len(self.recorders) == 1:
            return self.recorders[0].steps_table()
        if self._steps is None:
            self._steps = pd.concat([rec.steps_table().assign(replica=np.int64(r))
                                     for r, rec in enumerate(self.recorders)],
                                    ignore_index=True)
        return self._steps

    def step_columns(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Recorder.step_columns, the replicas' in steps_table's order."""
        parts = [rec.step_columns(names) for rec in self.recorders]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in names}

    def token_times_s(self, indexes: Sequence[int]) -> list[np.ndarray]:
        """Recorder.token_times_s, each request's from the replica that served it."""
        if len(self.recorders) == 1:
            return self.recorders[0].token_times_s(indexes)
        assert self.assignment is not None, "a cluster record needs the assignment"
        out: list[np.ndarray] = [np.zeros(0)] * len(indexes)
        for r, rec in enumerate(self.recorders):
            slots = [k for k, i in enumerate(indexes) if self.assignment[i] == r]
            for k, times in zip(slots, rec.token_times_s([indexes[k] for k in slots]),
                                strict=True):
                out[k] = times
        return out

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.itl) == 1:
            return self.itl[0]
        return (np.concatenate([v for v, _ in self.itl]),
                np.concatenate([w for _, w in self.itl]).astype(np.int64))


def request_record(recorders: Sequence[Recorder], assignment: np.ndarray) -> Recorder:
    """A recorder holding every request's own record from the replica that served it (the
    per-request fields only: it makes the cluster's requests table in one pass)."""
    n = len(assignment)
    merged = Recorder(n, prefill_paths=any(r.prefill_paths for r in recorders))
    fields = ("first_sched_s", "first_token_s", "finish_s", "num_preemptions")
    columns = {f: np.asarray(getattr(merged, f)) for f in fields}
    for r, rec in enumerate(recorders):
        mine = assignment == r
        for f in fields:
            columns[f][mine] = np.asarray(getattr(rec, f))[mine]
        merged.reject_reason.update(rec.reject_reason)
        merged.reject_s.update(rec.reject_s)
        merged.cpu_tokens.extend(rec.cpu_tokens)
    for f in fields:  # back into the recorder's typed arrays
        setattr(merged, f, array(getattr(merged, f).typecode, columns[f].tolist()))
    return merged


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
                    ) -> tuple[pd.DataFrame, dict[str, Any], Recorder]:
    """(requests table, metrics, pooled record: its steps_table() the steps table) of a
    cluster run."""
    source = preps[0].profile.source
    sources = {p.profile.source for p in preps}
    if len(sources) > 1:
        source = "+".join(sorted(sources))  # a mixed fleet says so in every output
    recorders = [server.recorder for server in result.replicas]
    requests_df = request_record(recorders, result.assignment).requests_table(result.requests)
    rows, records = [], []
    busy: list[float] = []  # GPU seconds per replica
    num_steps: list[int] = []  # GPU steps per replica
    prefill_share: list[float] = []
    for r, (rec, prep) in enumerate(zip(recorders, preps, strict=True)):
        requests = requests_df.iloc[np.flatnonzero(result.assignment == r)]
        records.append(ClusterRecord([rec]))
        # the step figures from the run records, without a steps table (as a single server's)
        metrics = summarize(cast("Recorder", records[-1]), requests, None,
                            prep.policy.kv_capacity_blocks, prep.profile.source, goodput,
                            itl=False)
        rows.append(replica_row(r, prep, metrics))
        steps = rec.step_columns(("duration_s", "device"))
        gpu = steps["device"] == DEVICES.index("gpu")
        busy.append(float(steps["duration_s"][gpu].sum()))
        num_steps.append(int(gpu.sum()))
        prefill_share.append(metrics["prefill_time_share"])
    requests_df["replica"] = result.assignment
    record = cast("Recorder", ClusterRecord(recorders, [c.itl[0] for c in records],
                                            result.assignment))
    # the request figures over every request; the step figures (an empty steps table here)
    # from the replicas' own: one pass over the steps, not two
    metrics = summarize(record, requests_df, Recorder(0).steps_table(), 1, source, goodput)
    n, duration, total_busy = len(preps), metrics["duration_s"], sum(busy)
    metrics["gpu_busy_fraction"] = total_busy / (n * duration) if duration > 0 else 0.0
    metrics["prefill_time_share"] = (sum(b * f for b, f in zip(busy, prefill_share, strict=True))
                                     / total_busy if total_busy > 0 else 0.0)
    metrics["mean_batch_size"] = (sum(row["mean_batch_size"] * k for row, k in
                                      zip(rows, num_steps, strict=True)) / sum(num_steps)
                                  if sum(num_steps) else 0.0)
    metrics["max_kv_utilization"] = max(row["max_kv_utilization"] for row in rows)
    if "cpu_busy_fraction" in metrics:
        cpu_busy = sum(step[1] for rec in recorders for step in rec.cpu_steps)
        metrics["cpu_busy_fraction"] = cpu_busy / (n * duration) if duration > 0 else 0.0
    caches = [prep.policy.extra_metrics().get("prefix_cache") for prep in preps]
    if any(caches):
        metrics["prefix_cache"] = pooled_prefix_cache(
            [cast("Mapping[str, Any]", c) for c in caches if c])
    metrics["replicas"] = rows
    return requests_df, metrics, record


def pooled_prefix_cache(per_replica: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The replicas' prefix-cache counts summed, summarised as one server's (rates from the
    sums)."""
    names = [f.name for f in fields(PrefixCacheStats)]
    return dict(PrefixCacheStats(**{n: sum(c[n] for c in per_replica) for n in names}).summary())
