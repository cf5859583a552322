"""The engine loop's per-step hand-off, on a fake engine: exact tokens, EOS, aborts, the serve
recorder; and the engine process's channel: the pipe is polled before a step only when the
parent counted a message, and a step's message reads back with `Connection.recv`."""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

from batchsim.policies.base import Plan
from batchsim.policies.registry import get_policy, make_config
from batchsim.profiler.real.plan_runner import StepOutput
from batchsim.serve.engine_loop import EngineLoop, ServeRecorder
from batchsim.serve.engine_process import _Channel, _Tag
from batchsim.serve.events import Batch, Event
from batchsim.serve.live_stats import LiveStats
from batchsim.serve.protocol import GenerationRequest
from batchsim.serve.stats_relay import StatsRelay
from tests.conftest import fake_profile

EOS = 7


class FakeRunner:
    """Every row samples token 100 + (its request's index) except request 3's third token: EOS."""

    def __init__(self) -> None:
        self.sampled: dict[int, int] = {}
        self.released: list[int] = []

    def add(self, index: int, prompt: list[int]) -> None:
        self.sampled[index] = 0

    def run(self, plan: Plan) -> StepOutput:
        tokens = {}
        for r in [c.request for c in plan.prefills if c.start + c.num_tokens
                  >= c.request.input_tokens] + [r for r in plan.decodes]:
            self.sampled[r.index] += 1
            tokens[r.index] = EOS if (r.index, self.sampled[r.index]) == (3, 3) else 100 + r.index
        return StepOutput(tokens, 0.0, None)  # type: ignore[arg-type]

    def release(self, index: int) -> None:
        self.released.append(index)

    def kv_usage(self) -> float | None:
        return None


def serve(requests: list[GenerationRequest], **knobs: str) -> tuple[dict[int, list[Event]],
                                                                     EngineLoop, FakeRunner]:
    profile = fake_profile(kv_tokens=4096, max_model_len=512)
    policy = get_policy("continuous")(make_config("continuous", {"max_num_seqs": "4", **knobs}),
                                      profile.memory, profile.max_model_len)
    runner = FakeRunner()
    loop = EngineLoop(policy, runner, LiveStats("m"), eos_token_id=EOS)  # type: ignore[arg-type]
    got: dict[int, list[Event]] = {}
    done = threading.Event()

    def sink_for(i: int) -> Any:
        def sink(event: Event) -> None:
            got[i].append(event)
            if event.reason is not None and sum(e[-1].reason is not None for e in got.values()
                                                if e) == len(requests):
                done.set()
        return sink

    loop.start()
    for i, gen in enumerate(requests):
        got[i] = []
        loop.submit(gen, sink_for(i))
    assert done.wait(60), got
    loop.drain(0)
    assert loop.join(30)
    return got, loop, runner


def test_each_request_gets_exactly_its_tokens_and_ends_once():
    gens = [GenerationRequest("completion", [1] * (5 + i), 2 + i, 0, i != 3, True, True, 0)
            for i in range(10)]
    got, loop, runner = serve(gens)
    for i, events in got.items():
        assert [e.reason for e in events[:-1]] == [None] * (len(events) - 1)
        tokens = [e.token for e in events if e.token >= 0]
        last = events[-1]
        if i == 3:  # EOS as its third token, min_tokens 0: stops there, EOS included
            assert tokens == [103, 103, EOS] and last.reason == "stop"
        else:
            assert tokens == [100 + i] * (2 + i) and last.reason == "length", (i, events)
        assert last.kind == "token" and last.timing is not None
        ttft, e2e = last.timing["ttft_s"], last.timing["e2e_s"]
        assert ttft is not None and e2e is not None and 0 <= ttft <= e2e
    assert loop.stats.generation_tokens == sum(2 + i for i in range(10) if i != 3) + 3
    assert sorted(runner.released) == list(range(10))
    # the serve recorder keeps no per-step or per-request rows (a long-lived server's memory)
    recorder = loop.server.recorder
    assert isinstance(recorder, ServeRecorder)
    assert recorder.num_steps == loop.stats.steps > 0
    assert recorder.num_requests == 10 and len(recorder.finish_s) == 0
    assert loop.stats.itl.count == sum(1 + i for i in range(10) if i != 3) + 2


def test_min_tokens_keeps_a_request_past_eos():
    gens = [GenerationRequest("completion", [1] * 4, 5, 4, False, True, True, 0)
            for _ in range(4)]
    got, _, _ = serve(gens)
    assert [e.token for e in got[3]] == [103, 103, EOS, 103, 103]
    assert got[3][-1].reason == "length"


class FakeLoop:
    num_taken = 0
    num_waiting = 0

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def submit(self, gen: Any, sink: Any, arrival_s: float, index: int) -> int:
        self.calls.append(("submit", index))
        return index

    def abort(self, index: int) -> None:
        self.calls.append(("abort", index))

    def drain(self, grace_s: float) -> None:
        self.calls.append(("drain", grace_s))


def test_the_channel_polls_before_a_step_only_when_the_parent_counted_a_message():
    parent, child = mp.Pipe()
    num_sent = mp.get_context("spawn").RawValue("Q", 0)
    channel = _Channel(child, StatsRelay(), num_sent)
    channel.loop = loop = FakeLoop()
    parent.send([("abort", 5)])  # written, not yet counted: the step does not look
    channel.receive(0.0)
    assert loop.calls == []
    num_sent.value += 1  # counted: the next step finds it
    channel.receive(0.0)
    assert loop.calls == [("abort", 5)]
    channel.receive(0.0)  # nothing new: no poll, nothing applied twice
    assert loop.calls == [("abort", 5)]
    parent.send([("abort", 6), ("drain", 1.5)])  # uncounted, but the idle wait polls
    channel.receive(0.05)
    assert loop.calls == [("abort", 5), ("abort", 6), ("drain", 1.5)]
    unchecked = _Channel(child, StatsRelay())  # no count: polls before every step
    unchecked.loop = loop
    parent.send([("abort", 7)])
    unchecked.receive(0.0)
    assert loop.calls[-1] == ("abort", 7)


def test_a_step_message_reads_back_with_recv_and_a_closed_parent_drains_once():
    parent, child = mp.Pipe()
    relay = StatsRelay()
    channel = _Channel(child, relay)
    channel.loop = loop = FakeLoop()
    relay.admitted(3)
    end = Event("token", 9, "length", "", {"e2e_s": 0.5})
    channel.post(Batch(tokens=[(_Tag(1), 4), (_Tag(2), 5)], ends=[(_Tag(3), end)]))
    assert parent.recv() == ("step", [1, 2], [4, 5], [(3, "token", 9, "length", "",
                                                       {"e2e_s": 0.5})],
                             [("admitted", (3,))], 0, 0)
    channel.post(Batch())  # nothing to say: no message
    assert not parent.poll(0.05)
    parent.close()
    channel.post(Batch(tokens=[(_Tag(1), 4)]))
    channel.post(Batch(tokens=[(_Tag(1), 4)]))
    assert loop.calls == [("drain", 0.0)]
