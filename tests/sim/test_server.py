"""The serving core on its own: any driver that follows its contract gets the simulator's run."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from batchsim.policies.base import Plan, Policy, StepEvents, Wait
from batchsim.policies.registry import get_policy, make_config
from batchsim.policies.request import Request
from batchsim.sim.profile import Profile, execution_paths
from batchsim.sim.run import Prepared, RunSpec, simulate
from batchsim.sim.server import TOO_LONG, Server
from tests.conftest import fake_profile, make_workload

ROWS = [(0.0, 10, 3), (0.012, 5, 2), (0.013, 7, 4), (0.2, 3, 5)]


def _policy(name: str, profile: Profile) -> Policy:
    return get_policy(name)(make_config(name, {}), profile.memory, profile.max_model_len)


def live_run(name: str, profile: Profile) -> Server:
    """A driver whose requests are not known in advance: each is pushed when its time comes,
    one step per plan, a hand-rolled clock (what a live HTTP server does with a wall clock)."""
    server = Server(_policy(name, profile), execution_paths(profile))
    pending = make_workload(ROWS).requests()
    t = 0.0
    while True:
        while pending and pending[0].arrival_s <= t:
            server.arrive(pending.pop(0))
        if not pending:
            server.close_arrivals()
        decision = server.decide(t)
        if decision is None:
            return server
        if isinstance(decision, Wait):
            server.check_wait(decision, t)
            t = min(decision.until_s or math.inf, pending[0].arrival_s if pending else math.inf)
            continue
        cost = profile.cost_model(decision.layout, decision.phase).predict(decision.shape)
        server.begin(decision, t, cost)
        server.end(decision, t, [cost])
        t += cost


@pytest.mark.parametrize("name", ["continuous", "static", "dynamic"])
def test_a_live_driver_gets_the_simulators_run(name):
    """Pushing arrivals one by one into a server with no workload gives the simulator's tables."""
    profile = fake_profile()
    server = live_run(name, profile)
    prep = Prepared(RunSpec(policy=name), profile, _policy(name, profile),
                    make_workload(ROWS), set())
    sim = simulate(prep, fast_forward=False)
    requests = make_workload(ROWS).requests()
    pd.testing.assert_frame_equal(server.recorder.requests_table(requests), sim.requests)
    pd.testing.assert_frame_equal(server.recorder.steps_table(), sim.steps)


def test_too_long_requests_are_rejected_on_arrival():
    """A request marked too long never reaches the policy; it is rejected at admission time."""
    profile = fake_profile()
    work = make_workload(ROWS[:2])
    server = Server(_policy("continuous", profile), execution_paths(profile), len(work),
                    work.arrival_s, too_long={1})
    for r in work.requests():
        server.arrive(r)
    server.admit(0.5)
    assert server.recorder.reject_reason == {1: TOO_LONG}
    assert server.recorder.reject_s == {1: 0.5}
    assert server.arrivals_done and server.next_arrival_s == math.inf


class _Hoarder(Policy):
    """Takes every request and never runs one: the bug check_wait exists for."""

    name = "hoarder"
    config_class = object

    def __init__(self) -> None:
        self.held: list[Request] = []

    def add_request(self, request: Request, now_s: float) -> str | None:
        self.held.append(request)
        return None

    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        return Wait()

    def complete(self, plan: Plan, num_steps: int) -> StepEvents:
        raise AssertionError("never planned")

    def has_work(self) -> bool:
        return bool(self.held)

    @property
    def kv_capacity_blocks(self) -> int:
        return 1


def test_waiting_with_work_and_nothing_to_come_is_a_policy_bug():
    """Once arrivals are closed, a Wait with no wake-up time and no CPU step raises."""
    profile = fake_profile()
    server = Server(_Hoarder(), execution_paths(profile))
    server.arrive(make_workload(ROWS[:1]).requests()[0])
    decision = server.decide(0.0)
    assert isinstance(decision, Wait)
    server.check_wait(decision, 0.0)  # more may arrive: fine
    server.close_arrivals()
    with pytest.raises(AssertionError, match="stuck"):
        server.check_wait(decision, 0.0)
    with pytest.raises(AssertionError, match="until"):
        server.check_wait(Wait(until_s=0.0), 0.0)
