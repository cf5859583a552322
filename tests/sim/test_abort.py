"""Every registered policy can abort requests (a server's client went away) without leaking KV."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsim.policies.base import Plan, Policy, Wait
from batchsim.policies.registry import available, get_policy, make_config
from batchsim.policies.request import Request
from batchsim.sim.profile import cpu_cost_model, execution_paths
from tests.conftest import fake_profile
from tests.sim.test_conformance import COSTS, KNOBS, KV_COPY, KV_TOKENS, MAX_LEN, knob_sets

CASES = [(p, i) for p in available() for i in range(len(knob_sets(p)))]

rows = st.lists(st.tuples(st.integers(1, 80), st.integers(1, 40), st.integers(0, 3),
                          st.one_of(st.none(), st.integers(0, 30))), min_size=1, max_size=20)


def make_policy(name: str, knobs: dict[str, str]) -> Policy:
    profile = fake_profile(kv_tokens=KV_TOKENS, max_model_len=MAX_LEN, costs=COSTS,
                           kv_copy=KV_COPY)
    policy = get_policy(name)(make_config(name, knobs), profile.memory, profile.max_model_len)
    if "cpu" in policy.paths:
        policy.bind_paths(execution_paths(profile, cpu_cost_model(profile)))
    return policy


def drive(policy: Policy, requests: list[Request], abort_at: dict[int, int]) -> dict[int, str]:
    """Step the policy (1 s per step, arrivals all at t=0, CPU steps instant), aborting request
    i before step abort_at[i] and again after every step while the policy says not yet.
    Returns how each request ended: finished, aborted or rejected."""
    fate: dict[int, str] = {}
    for r in requests:
        reason = policy.add_request(r, 0.0)
        if reason is not None:
            fate[r.index] = "rejected"
    pending: set[int] = set()
    by_index = {r.index: r for r in requests}
    t = 0.0
    for step in range(5000):
        pending |= {i for i, s in abort_at.items() if s == step and i not in fate}
        for i in sorted(pending):
            if policy.abort(by_index[i]):
                pending.discard(i)
                fate.setdefault(i, "aborted")
        for decision in ([policy.schedule_cpu(t, True)] if "cpu" in policy.paths else []):
            if isinstance(decision, Plan):
                record(policy.complete(decision, 1).finished, fate, pending)
        decision = policy.schedule(t, True)
        for r, _ in decision.rejected:
            fate[r.index] = "rejected"
        if isinstance(decision, Wait):
            if not policy.has_work():
                return fate
            t = decision.until_s if decision.until_s is not None else t + 1.0
            continue
        for r in [c.request for c in decision.prefills] + decision.decodes:
            assert fate.get(r.index) != "aborted", f"aborted request {r.index} was scheduled"
        events = policy.complete(decision, 1)
        assert max(events.kv_blocks_used) <= policy.kv_capacity_blocks
        record(events.finished, fate, pending)
        t += 1.0
    raise AssertionError("the policy never ran out of work")


def record(finished: list, fate: dict[int, str], pending: set[int]) -> None:
    for r, _ in finished:
        assert r.index not in fate, f"request {r.index} ended twice ({fate[r.index]}, finished)"
        fate[r.index] = "finished"
        pending.discard(r.index)


def probe_trace(policy: Policy) -> list[tuple[int, int, int]]:
    """(prefill chunks, decodes, KV blocks) of every step of a fixed probe workload."""
    probe = [Request(1000 + i, 0.0, 60, 30) for i in range(8)]
    for r in probe:
        policy.add_request(r, 0.0)
    trace = []
    for _ in range(5000):
        decision = policy.schedule_cpu(0.0, True) if "cpu" in policy.paths else Wait()
        if isinstance(decision, Plan):
            policy.complete(decision, 1)
        decision = policy.schedule(0.0, True)
        if isinstance(decision, Wait):
            if not policy.has_work():
                return trace
            continue
        events = policy.complete(decision, 1)
        trace.append((len(decision.prefills), len(decision.decodes), events.kv_blocks_used[0]))
    raise AssertionError("probe did not finish")


@pytest.mark.parametrize(("policy_name", "knob_index"), CASES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows)
def test_abort_frees_everything(policy_name, knob_index, rows):
    """Aborted requests are never scheduled again, every request ends exactly once, and after
    the aborts the policy behaves exactly as a fresh one (no KV block or queue slot leaked)."""
    knobs = knob_sets(policy_name)[knob_index]
    policy = make_policy(policy_name, knobs)
    requests = [Request(i, 0.0, n_in, min(n_out, MAX_LEN - n_in) or 1, p)
                for i, (n_in, n_out, p, _) in enumerate(rows)]
    abort_at = {i: s for i, (*_, s) in enumerate(rows) if s is not None}
    fate = drive(policy, requests, abort_at)
    assert set(fate) == {r.index for r in requests}, "a request never ended"
    for i, how in fate.items():
        if how == "aborted":
            assert i in abort_at
    assert probe_trace(policy) == probe_trace(make_policy(policy_name, knobs))


@pytest.mark.parametrize("policy_name", available())
def test_abort_of_unknown_request_is_a_no_op(policy_name):
    """Aborting a request the policy never saw (or already finished) changes nothing."""
    policy = make_policy(policy_name, KNOBS.get(policy_name, [{}])[0])
    assert policy.abort(Request(99, 0.0, 10, 5)) is True
    assert not policy.has_work()
