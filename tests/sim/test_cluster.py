"""Many replicas behind a router: hand-worked router choices and timelines (1 ms per prefill
token, 5 ms per decode step: tests/conftest.py), throughput under saturation, fast-forward equal
to stepping, and the outputs a cluster adds."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.cluster.router import PREFIX_MAX_IMBALANCE, ROUTERS, make_router
from batchsim.sim.cluster.spec import ClusterSpec
from batchsim.sim.errors import UsageError
from batchsim.sim.run import Prepared, RunSpec, prepare, simulate
from batchsim.sim.sweep.sweep import point_cluster
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.sim.workload.workload import PrefixBlocks
from tests.conftest import fake_profile, make_workload

SYNC = {"async_scheduling": "false"}  # one decision per step, as the hand timelines assume
# A: a 40-token prompt (40 ms of prefill); B, C, D: 4-token prompts; two tokens each
ROWS = [(0.0, 40, 2), (0.001, 4, 2), (0.012, 4, 2), (0.013, 4, 2)]


def cluster_run(rows, router: str, replicas: int = 2, knobs=None, fast_forward=True,
                workload=None):
    profile = fake_profile()
    workload = workload if workload is not None else make_workload(rows)
    spec = RunSpec(policy="continuous", cluster=ClusterSpec(replicas, router))

    def fresh() -> Prepared:
        config = make_config("continuous", knobs if knobs is not None else SYNC)
        policy = get_policy("continuous")(config, profile.memory, profile.max_model_len)
        return Prepared(spec, profile, policy, workload, set())

    prep = fresh()
    prep.replicas = [fresh() for _ in range(replicas)]
    return simulate(prep, fast_forward=fast_forward)


def ms(x: float) -> float:
    return pytest.approx(x, abs=1e-9)


def test_least_outstanding_timeline_by_hand():
    """A (long prefill) -> 0; B -> 1 (0 has one in flight); at 12 ms B is done, so C -> 1;
    at 13 ms both have one, the tie goes to 0: D waits behind A's prefill and rides with A's
    decode (5 + 4 ms mixed step at 40 ms). Round robin would have sent C to 0 and D to 1."""
    out = cluster_run(ROWS, "least_outstanding")
    req = out.requests.set_index("id")
    assert list(req["replica"]) == [0, 1, 1, 0]
    assert list(req["ttft_ms"]) == [ms(40), ms(4), ms(4), ms(36)]
    assert list(req["e2el_ms"]) == [ms(49), ms(9), ms(9), ms(41)]
    assert req.loc["r3", "queue_ms"] == ms(27)
    steps = out.steps
    assert list(steps["replica"]) == [0, 0, 0, 1, 1, 1, 1]  # replica-major, each in time
    assert list(steps["start_s"]) == [ms(0), ms(0.040), ms(0.049), ms(0.001), ms(0.005),
                                      ms(0.012), ms(0.016)]
    assert list(steps["step"]) == [0, 1, 2, 0, 1, 2, 3]
    m = out.metrics
    # busy 54 ms on replica 0 and 18 ms on replica 1, over a 54 ms run
    assert m["gpu_busy_fraction"] == ms((54 + 18) / (2 * 54))
    assert [r["num_requests"] for r in m["replicas"]] == [2, 2]
    assert m["replicas"][1]["e2el_p99_ms"] == ms(9)
    assert m["completed"] == 4 and out.config["cluster"]["router"] == "least_outstanding"


def test_round_robin_ignores_load():
    out = cluster_run(ROWS, "round_robin")
    req = out.requests.set_index("id")
    assert list(req["replica"]) == [0, 1, 0, 1]
    # C waits for A's 40 ms prefill and joins A's decode: first token at 49 ms
    assert req.loc["r2", "ttft_ms"] == ms(49 - 12)


def test_least_kv_reads_the_last_completed_step():
    """At 12 ms replica 0 is still inside A's prefill and has reported no step (no KV), while
    replica 1's last step held B's block: C and D both go to 0, behind A. A real router's
    scraped KV gauge lags the same way; least_outstanding does not have this blind spot."""
    out = cluster_run(ROWS, "least_kv")
    assert list(out.requests["replica"]) == [0, 1, 0, 0]
    assert out.config["cluster"]["fast_forward"].startswith("off")


def _prefixed(rows, hashes):
    workload = make_workload(rows)
    lengths = [len(h) for h in hashes]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    values = np.array([b for h in hashes for b in h], dtype=np.int64)
    return dataclasses.replace(workload, hash_ids=PrefixBlocks(values, offsets))


def test_prefix_affinity_follows_the_prefix_then_load():
    """A [1,2] -> 0 (nothing known: least outstanding); B [3] -> 1; C [1,2,9] matches two of
    A's blocks on 0; D [3,4] matches B's on 1; E has no hashes: least outstanding (tie -> 0)."""
    rows = [(0.0, 4, 2), (0.0001, 4, 2), (0.0002, 4, 2), (0.0003, 4, 2), (0.0004, 4, 2)]
    workload = _prefixed(rows, [[1, 2], [3], [1, 2, 9], [3, 4], []])
    out = cluster_run(rows, "prefix_affinity", workload=workload)
    assert list(out.requests["replica"]) == [0, 1, 0, 1, 0]
    assert out.config["cluster"]["prefix_source"] == "the workload's hash_ids"


def state(outstanding: int, waiting: int = 0, kv: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(outstanding=outstanding, waiting=waiting, kv_used_fraction=kv)


def test_router_choices_on_given_states():
    lor = make_router("least_outstanding", 3)
    assert lor.route(0, [state(2), state(1), state(1)], None) == 1  # tie -> lower index
    kv = make_router("least_kv", 3)
    assert kv.route(0, [state(0, kv=0.5), state(9, kv=0.1), state(0, kv=0.3)], None) == 1
    assert kv.route(0, [state(5, 1, 0.1), state(1, 2, 0.1), state(9, 1, 0.1)], None) == 0
    rr = make_router("round_robin", 3)
    assert [rr.route(i, [state(0)] * 3, None) for i in range(5)] == [0, 1, 2, 0, 1]


def test_prefix_affinity_passes_over_an_overloaded_replica():
    router = make_router("prefix_affinity", 2)
    assert router.route(0, [state(0), state(0)], [7, 8]) == 0
    # replica 0 holds the prefix but is PREFIX_MAX_IMBALANCE + 1 requests above replica 1
    busy = [state(PREFIX_MAX_IMBALANCE + 1), state(0)]
    assert router.route(1, busy, [7, 8]) == 1  # and now replica 1 holds it too
    fresh = make_router("prefix_affinity", 2)
    assert fresh.route(0, [state(0), state(0)], [7, 8]) == 0
    assert fresh.route(1, [state(PREFIX_MAX_IMBALANCE), state(0)], [7]) == 0  # within limit


def test_two_replicas_double_throughput_under_saturation():
    """Everything at t=0, small batches: each replica is saturated, so two serve the same
    requests in half the time."""
    def throughput(replicas: int) -> float:
        spec = RunSpec(policy="continuous", knobs={"max_num_seqs": "4"},
                       synthetic=SyntheticSpec(num_requests=64, request_rate=float("inf"),
                                               input_len=256, output_len=64, range_ratio=0.0),
                       cluster=ClusterSpec(replicas, "round_robin") if replicas > 1 else None)
        return simulate(prepare(spec)).metrics["request_throughput"]

    one, two = throughput(1), throughput(2)
    assert two / one == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding", "prefix_affinity"])
def test_fast_forward_equals_stepping_in_a_cluster(router):
    """A replica's decode run stops at the cluster's next arrival, wherever it goes."""
    spec = RunSpec(policy="continuous", synthetic=SyntheticSpec(
        num_requests=120, request_rate=30, input_len=300, output_len=40, range_ratio=0.8),
        seed=3, cluster=ClusterSpec(3, router))
    fast = simulate(prepare(spec), fast_forward=True)
    slow = simulate(prepare(spec), fast_forward=False)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)


def test_one_replica_is_the_single_server():
    spec = RunSpec(policy="continuous", synthetic=SyntheticSpec(num_requests=50,
                                                                request_rate=20))
    plain = simulate(prepare(spec))
    one = simulate(prepare(dataclasses.replace(spec, cluster=ClusterSpec(1))))
    pd.testing.assert_frame_equal(plain.requests, one.requests)
    assert "replica" not in one.requests and "replicas" not in one.metrics
    assert "cluster" not in one.config


def test_cluster_specs_refuse_impossible_values():
    with pytest.raises(UsageError, match="--replicas must be an integer from 1"):
        ClusterSpec(0)
    with pytest.raises(UsageError, match="unknown router 'random'"):
        ClusterSpec(2, "random")
    with pytest.raises(UsageError, match="--profile given 2 times for --replicas 3"):
        ClusterSpec(3, profiles=("a.json", "b.json"))
    assert set(ROUTERS) == {"round_robin", "least_outstanding", "least_kv", "prefix_affinity"}


def test_sweep_dimensions_become_the_points_cluster():
    knobs = {"max_num_seqs": "8", "replicas": "4", "router": "least_kv"}
    cluster = point_cluster(None, knobs)
    assert cluster == ClusterSpec(4, "least_kv") and knobs == {"max_num_seqs": "8"}
    assert point_cluster(ClusterSpec(2), {"replicas": "1"}) is None
    assert point_cluster(ClusterSpec(2, "least_kv"), {}) == ClusterSpec(2, "least_kv")
    with pytest.raises(UsageError, match="--replicas 'x': not an integer"):
        point_cluster(None, {"replicas": "x"})


def test_least_outstanding_knows_which_next_arrivals_cannot_come_here():
    """Replica 2 (3 in flight) wins only once replicas 0 (1) and 1 (2), which win ties, both
    hold 4: 3 + 2 arrivals go elsewhere first; the least loaded replica gets any, so none."""
    lor = make_router("least_outstanding", 3)
    states = [state(1), state(2), state(3)]
    assert lor.arrivals_elsewhere(2, states) == 3 + 2
    assert lor.arrivals_elsewhere(0, states) == 0
    assert make_router("prefix_affinity", 3).arrivals_elsewhere(2, states) == 0


@pytest.mark.parametrize("rate", [60.0, 400.0])
def test_least_outstanding_look_ahead_equals_stepping_under_load(rate):
    spec = RunSpec(policy="continuous", knobs={"max_num_seqs": "16"}, synthetic=SyntheticSpec(
        num_requests=200, request_rate=rate, burstiness=0.5, input_len=400, output_len=60,
        range_ratio=0.9), seed=5, cluster=ClusterSpec(4, "least_outstanding"))
    fast = simulate(prepare(spec), fast_forward=True)
    slow = simulate(prepare(spec), fast_forward=False)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)


def test_each_replica_caches_its_own_prefixes_and_the_cluster_sums_them():
    """4 shared 1024-token prompts, prefix caching on: one server misses each prompt once;
    two round-robin replicas miss each on both, 4 x 1024 tokens fewer hits; the rates are
    the pooled counts' ratios."""
    syn = SyntheticSpec(num_requests=200, request_rate=20.0, input_len=1200, output_len=20,
                        prefix_len=1024, num_prefix_groups=4)

    def cache(replicas: int) -> dict:
        spec = RunSpec(policy="continuous", knobs={"enable_prefix_caching": "true"},
                       synthetic=syn, cluster=ClusterSpec(replicas, "round_robin"), seed=1)
        return simulate(prepare(spec)).metrics["prefix_cache"]

    one, two = cache(1), cache(2)
    assert one["queries"] == two["queries"] and one["requests"] == two["requests"] == 200
    assert two["hits"] == one["hits"] - 4 * 1024
    assert two["hit_rate"] == two["hits"] / two["queries"]
    assert two["block_hit_rate"] == two["hit_blocks"] / two["query_blocks"]


def test_max_concurrency_is_refused_with_replicas():
    with pytest.raises(ValueError, match="--max-concurrency applies to one server"):
        RunSpec(policy="continuous", max_concurrency=4, cluster=ClusterSpec(2, "round_robin"))
