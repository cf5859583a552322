"""The cluster's plain loop (sim.cluster.plain_loop) gives the SimPy run's outputs exactly: the
same requests and steps tables, metrics and config, for every router, with prefix caching on
and off, fast-forward on and off, a KV pool tight enough to preempt, per-policy timers, step
jitter, rejected requests, a mixed fleet, and timelines full of ties (steps ending as requests
arrive, on a fake profile whose costs are whole milliseconds)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsim.policies.registry import available, get_policy, make_config
from batchsim.sim.cluster.cluster import ClusterSimulator
from batchsim.sim.cluster.plain_loop import PlainLoop
from batchsim.sim.cluster.router import ROUTERS
from batchsim.sim.cluster.spec import ClusterSpec
from batchsim.sim.run import Prepared, RunOutput, RunSpec, prepare, simulate
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.sim.workload.workload import HASH_BLOCK_TOKENS, PrefixBlocks, Workload
from tests.conftest import fake_profile, make_workload
from tests.sim.test_conformance import knob_sets
from tests.sim.test_jitter import PROFILE as JITTER_PROFILE


def both_ways(monkeypatch, make: Callable[[], Prepared], fast_forward: bool = True) -> RunOutput:
    """Run make()'s prepared cluster on SimPy and on the plain loop; assert the outputs equal."""
    runs = []
    calls: list[int] = []
    real_run = PlainLoop.run
    monkeypatch.setattr(PlainLoop, "run", lambda self: calls.append(1) or real_run(self))
    for plain in (False, True):
        monkeypatch.setattr(ClusterSimulator, "plain_loop", plain)
        runs.append(simulate(make(), fast_forward=fast_forward))
    assert calls == [1], "the plain loop ran once, the SimPy run without it"
    old, new = runs
    pd.testing.assert_frame_equal(old.requests, new.requests, check_exact=True)
    pd.testing.assert_frame_equal(old.steps, new.steps, check_exact=True)
    assert json.dumps(old.metrics, sort_keys=True, default=repr) == json.dumps(
        new.metrics, sort_keys=True, default=repr)
    assert old.config == new.config
    return new


def with_hash_ids(workload: Workload, num_groups: int = 4, seed: int = 0) -> Workload:
    """Mooncake-style prefix hashes: each prompt's first two 512-token blocks are one of
    num_groups shared pairs, the rest its own."""
    rng = np.random.default_rng(seed)
    lists, fresh = [], 1000
    for tokens in workload.input_tokens:
        num_blocks = int(tokens) // HASH_BLOCK_TOKENS
        group = int(rng.integers(num_groups))
        own = list(range(fresh, fresh + max(0, num_blocks - 2)))
        fresh += len(own)
        lists.append([2 * group, 2 * group + 1][:num_blocks] + own)
    offsets = np.concatenate(([0], np.cumsum([len(h) for h in lists]))).astype(np.int64)
    values = np.array([b for h in lists for b in h], dtype=np.int64)
    return dataclasses.replace(workload, hash_ids=PrefixBlocks(values, offsets))


def spec_run(spec: RunSpec, hashes: bool = False) -> Callable[[], Prepared]:
    workload = prepare(spec).workload
    if hashes:
        workload = with_hash_ids(workload)
    return lambda: prepare(spec, workload)


BURSTY = SyntheticSpec(num_requests=160, request_rate=40.0, burstiness=0.5, input_len=1500,
                       output_len=40, range_ratio=0.6, prefix_len=1024, num_prefix_groups=4)


@pytest.mark.parametrize("fast_forward", [True, False])
@pytest.mark.parametrize("caching", ["true", "false"])
@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_with_and_without_caching_and_fast_forward(monkeypatch, router, caching,
                                                                 fast_forward):
    spec = RunSpec(policy="continuous", knobs={"enable_prefix_caching": caching},
                   synthetic=BURSTY, seed=2, cluster=ClusterSpec(3, router))
    out = both_ways(monkeypatch, spec_run(spec, hashes=True), fast_forward)
    assert out.metrics["completed"] == 160


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_a_tight_kv_pool_that_preempts(monkeypatch, router):
    spec = RunSpec(policy="continuous", knobs={"num_gpu_blocks_override": "400"},
                   synthetic=dataclasses.replace(BURSTY, request_rate=200.0, output_len=300),
                   seed=4, cluster=ClusterSpec(4, router))
    out = both_ways(monkeypatch, spec_run(spec))
    assert out.metrics["preemptions"] > 0


@pytest.mark.parametrize("router", ["least_outstanding", "least_kv"])
def test_a_mixed_fleet(monkeypatch, router):
    spec = RunSpec(policy="continuous", synthetic=dataclasses.replace(BURSTY, request_rate=8.0),
                   cluster=ClusterSpec(2, router, profiles=("qwen2.5-0.5b-h100-analytic",
                                                            "qwen2.5-0.5b-cpu")))
    both_ways(monkeypatch, spec_run(spec))


@pytest.mark.parametrize("policy, knobs", [
    ("static", {"max_batch_size": "4", "max_batch_wait_ms": "30"}),
    ("dynamic", {"max_queue_delay_microseconds": "20000"}),
    ("shortest_prompt", {}),
])
@pytest.mark.parametrize("router", ["round_robin", "least_outstanding"])
def test_policies_that_wait_on_timers(monkeypatch, policy, knobs, router):
    spec = RunSpec(policy=policy, knobs=knobs,
                   synthetic=dataclasses.replace(BURSTY, num_requests=120, prefix_len=0,
                                                 num_prefix_groups=0),
                   seed=1, cluster=ClusterSpec(3, router))
    both_ways(monkeypatch, spec_run(spec))


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_step_jitter_and_requests_rejected_as_too_long(monkeypatch, router):
    syn = SyntheticSpec(num_requests=120, request_rate=30.0, input_len=600, output_len=30,
                        range_ratio=0.9)
    spec = RunSpec(policy="continuous", profile=str(JITTER_PROFILE), synthetic=syn, seed=3,
                   step_jitter=True, reject_too_long=True, cluster=ClusterSpec(3, router))
    out = both_ways(monkeypatch, spec_run(spec))
    assert "step_jitter" in out.config


# whole milliseconds on the fake profile (1 ms per prefill token, 5 ms per decode step):
# arrivals on a 1 ms grid, several at once, land exactly where steps end
TIES = [(0.0, 4, 2)] * 3 + [(0.001 * k, 4 + k % 3, 1 + k % 4) for k in range(1, 60)] + [
    (0.005 * k, 8, 3) for k in range(1, 30)] + [(0.2, 1, 1)] * 5


def hand_run(rows, router: str, replicas: int, knobs: dict[str, str]) -> Callable[[], Prepared]:
    profile = fake_profile(kv_tokens=400)
    workload = make_workload(rows)
    spec = RunSpec(policy="continuous", cluster=ClusterSpec(replicas, router))

    def fresh() -> Prepared:
        config = make_config("continuous", knobs)
        policy = get_policy("continuous")(config, profile.memory, profile.max_model_len)
        return Prepared(spec, profile, policy, workload, set())

    def make() -> Prepared:
        prep = fresh()
        prep.replicas = [fresh() for _ in range(replicas)]
        return prep
    return make


@pytest.mark.parametrize("knobs", [{"async_scheduling": "false"}, {}])
@pytest.mark.parametrize("fast_forward", [True, False])
@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_timelines_full_of_ties(monkeypatch, router, fast_forward, knobs):
    both_ways(monkeypatch, hand_run(TIES, router, 3, knobs), fast_forward)


def test_all_at_once_and_no_requests_for_some_replicas(monkeypatch):
    """Everything arrives at t=0 to eight replicas; then two requests for eight replicas."""
    both_ways(monkeypatch, hand_run([(0.0, 6, 3)] * 40, "least_outstanding", 8, {}))
    both_ways(monkeypatch, hand_run([(0.0, 6, 3), (0.003, 2, 2)], "round_robin", 8, {}))


def test_replicas_with_a_cpu_path_stay_on_simpy(monkeypatch):
    """Hybrid's CPU worker is a SimPy process of its own: the plain loop is not used."""
    def refuse(self):
        raise AssertionError("the plain loop ran a hybrid cluster")
    monkeypatch.setattr(PlainLoop, "run", refuse)
    spec = RunSpec(policy="hybrid", profile="qwen2.5-0.5b-h100-analytic",
                   cpu_profile="qwen2.5-0.5b-cpu", kv_copy_gbps=10.0, seed=2,
                   cluster=ClusterSpec(2),
                   synthetic=SyntheticSpec(num_requests=40, request_rate=20.0, input_len=600,
                                           output_len=20))
    assert simulate(prepare(spec)).metrics["completed"] == 40


# every registered policy without a CPU path, with the conformance test's knob sets
PLAIN_CASES = [(p, i) for p in available() if "cpu" not in get_policy(p).paths
               for i in range(len(knob_sets(p)))]
# (arrival in whole ms, prompt tokens, output tokens): ties everywhere on the fake profile
TIMELINES = st.lists(st.tuples(st.integers(0, 60).map(lambda ms: ms / 1000),
                               st.integers(1, 40), st.integers(1, 6)), min_size=1, max_size=30)


@pytest.mark.parametrize(("policy", "knob_index"), PLAIN_CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=TIMELINES, router=st.sampled_from(sorted(ROUTERS)), replicas=st.integers(2, 4),
       fast_forward=st.booleans())
def test_every_policy_on_random_timelines(policy, knob_index, rows, router, replicas,
                                          fast_forward):
    profile = fake_profile(kv_tokens=400, max_model_len=120)
    workload = make_workload(rows)
    spec = RunSpec(policy=policy, cluster=ClusterSpec(replicas, router))

    def fresh() -> Prepared:
        config = make_config(policy, knob_sets(policy)[knob_index])
        return Prepared(spec, profile, get_policy(policy)(config, profile.memory, 120),
                        workload, set())

    def make() -> Prepared:
        prep = fresh()
        prep.replicas = [fresh() for _ in range(replicas)]
        return prep
    with pytest.MonkeyPatch.context() as monkeypatch:  # undone after every example
        both_ways(monkeypatch, make, fast_forward)
