"""A prepared cluster run (`Prepared.replicas`) simulated into its tables and metrics.

Called by `batchsim.sim.run.simulate` when the run has more than one replica (which makes the
`RunOutput`; this module does not import it back). config.json is
replica 0's (the run's policy, knobs and workload) plus a `cluster` section: the router, and
each replica's profile and KV pool. Each replica draws its own step-jitter stream (seed + the
replica's index), so replica 0 draws what a single server would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from batchsim.sim.cluster.cluster import ClusterSimulator
from batchsim.sim.cluster.outputs import cluster_outputs
from batchsim.sim.cluster.router import PREFIX_MAX_IMBALANCE, make_router

if TYPE_CHECKING:
    import pandas as pd

    from batchsim.sim.jitter import StepJitter
    from batchsim.sim.recorder import Recorder
    from batchsim.sim.run import Prepared


def simulate_cluster(prep: Prepared, jitters: Sequence[StepJitter | None],
                     progress: Callable[[int], None] | None = None, fast_forward: bool = True
                     ) -> tuple[pd.DataFrame, dict[str, Any], Recorder, dict[str, Any]]:
    """(requests, metrics, pooled record: its steps_table() the steps, config.json's
    `cluster` section) of a prepared cluster run; jitters: one step-jitter stream per replica
    (sim.run makes them)."""
    cluster = prep.spec.cluster
    assert cluster is not None and len(prep.replicas) == cluster.replicas > 1, cluster
    router = make_router(cluster.router, cluster.replicas)
    sim = ClusterSimulator(prep.replicas, router, prep.workload, fast_forward, progress,
                           jitters)
    result = sim.run()
    requests, metrics, record = cluster_outputs(result, prep.replicas, prep.spec.goodput)
    section = cluster_config(prep, router.name, router.per_step_signal and fast_forward)
    return requests, metrics, record, section


def cluster_config(prep: Prepared, router: str, stepped: bool) -> dict[str, Any]:
    has_prefixes = prep.workload.hash_ids is not None
    section: dict[str, Any] = {
        "replicas": len(prep.replicas),
        "router": router,
        "replica_profiles": [p.profile.summary() for p in prep.replicas],
        "replica_kv_capacity_blocks": [p.policy.kv_capacity_blocks for p in prep.replicas],
    }
    if router == "prefix_affinity":
        section["prefix_source"] = ("the workload's hash_ids" if has_prefixes else
                                    "none (no hash_ids in the workload): least_outstanding")
        section["prefix_max_imbalance"] = PREFIX_MAX_IMBALANCE
    if stepped:
        section["fast_forward"] = "off: the router reads KV use, which changes every step"
    return section
