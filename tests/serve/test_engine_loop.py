"""The engine loop's per-step hand-off, on a fake engine: exact tokens, EOS, aborts, the serve
recorder; and the engine process's channel: before a step it reads exactly the messages the
parent counted, framed messages come back whole however the pipe splits them, and a step's
message reads back on the parent's side."""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

import pytest

from batchsim.policies.base import Plan
from batchsim.policies.registry import get_policy, make_config
from batchsim.profiler.real.plan_runner import StepOutput
from batchsim.serve.engine_loop import EngineLoop, ServeRecorder
from batchsim.serve.engine_process import FramedPipe, _Channel, _Tag
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


def recount(loop: EngineLoop) -> tuple[int, int]:
    """(running, waiting) counted over every live request, as the loop keeps them."""
    live = [x for x in loop._live.values() if not x.done]
    return sum(x.running for x in live), sum(not x.running for x in live)


def serve(requests: list[GenerationRequest], kv_tokens: int = 4096, abort: tuple[int, ...] = (),
          **knobs: str) -> tuple[dict[int, list[Event]], EngineLoop, FakeRunner]:
    """Run requests through a loop on the fake engine (abort: request numbers aborted right
    after they are submitted); at every hand-off, the loop's running and waiting counts must
    equal a count over its live requests."""
    profile = fake_profile(kv_tokens=kv_tokens, max_model_len=512)
    policy = get_policy("continuous")(make_config("continuous", {"max_num_seqs": "4", **knobs}),
                                      profile.memory, profile.max_model_len)
    runner = FakeRunner()
    mismatches: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def post(batch: Batch) -> None:
        kept, counted = (loop._num_running, loop._num_queued), recount(loop)
        if kept != counted:
            mismatches.append((kept, counted))
        batch.deliver()

    loop = EngineLoop(policy, runner, LiveStats("m"), eos_token_id=EOS,  # type: ignore[arg-type]
                      post=post)
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
        index = loop.submit(gen, sink_for(i))
        if i in abort:
            loop.abort(index)
    assert done.wait(60), got
    loop.drain(0)
    assert loop.join(30)
    assert mismatches == []
    assert (loop._num_running, loop._num_queued) == (0, 0)
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


def test_running_and_waiting_counts_follow_preemption_aborts_and_eos():
    gens = [GenerationRequest("completion", [1] * 24, 40, 0, i != 3, True, True, 0)
            for i in range(8)]
    got, loop, _ = serve(gens, kv_tokens=160, abort=(1, 6))  # room for ~2 of 4 at their end
    assert loop.stats.preemptions > 0  # the counts were checked through preemptions
    assert got[1][-1].reason == "abort" and got[6][-1].reason == "abort"
    assert got[3][-1].reason == "stop"
    assert [e.reason for e in got[0]][-1] == "length"


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


def pipes() -> tuple[FramedPipe, FramedPipe, FramedPipe, FramedPipe]:
    """(parent's command writer, child's command reader, child's step writer, parent's step
    reader), as `EngineProcess` makes them."""
    commands_r, commands_w = mp.Pipe(duplex=False)
    steps_r, steps_w = mp.Pipe(duplex=False)
    return (FramedPipe(commands_w), FramedPipe(commands_r), FramedPipe(steps_w),
            FramedPipe(steps_r))


def test_the_channel_reads_before_a_step_only_the_messages_the_parent_counted():
    parent, commands, steps, _ = pipes()
    num_sent = mp.get_context("spawn").RawValue("Q", 0)
    channel = _Channel(commands, steps, StatsRelay(), num_sent)
    channel.loop = loop = FakeLoop()
    parent.send([("abort", 5)])  # written, not yet counted: the step does not look
    channel.receive(0.0)
    assert loop.calls == []
    parent.send([("abort", 6)])
    num_sent.value += 1  # one counted: the next step applies exactly that one
    channel.receive(0.0)
    assert loop.calls == [("abort", 5)]
    channel.receive(0.0)  # nothing new counted: nothing read, nothing applied twice
    assert loop.calls == [("abort", 5)]
    num_sent.value += 1  # already read with the first: applied without a read
    channel.receive(0.0)
    assert loop.calls == [("abort", 5), ("abort", 6)]
    parent.send([("abort", 7), ("drain", 1.5)])  # uncounted, but the idle wait reads it
    channel.receive(0.05)
    assert loop.calls[2:] == [("abort", 7), ("drain", 1.5)]
    channel.receive(0.01)  # idle, nothing came: returns after the timeout
    assert len(loop.calls) == 4
    num_sent.value += 1  # the idle wait applied it: the step does not wait for it again
    channel.receive(0.0)
    assert len(loop.calls) == 4


def test_the_channel_without_a_count_reads_before_every_step():
    parent, commands, steps, _ = pipes()
    unchecked = _Channel(commands, steps, StatsRelay())
    unchecked.loop = loop = FakeLoop()
    unchecked.receive(0.0)  # nothing there: does not block
    parent.send([("abort", 7)])
    unchecked.receive(0.0)
    assert loop.calls == [("abort", 7)]


def test_framed_messages_survive_partial_reads_and_outgrow_the_pipe_buffer():
    writer, reader, _, _ = pipes()
    # ~200 KB pickled (distinct strings: pickle would write one repeated string once): more
    # than a pipe holds, and than one read takes
    big = ["x" * 1000 + str(i) for i in range(200)]
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.extend(reader.recv() for _ in range(3)))
    thread.start()
    writer.send([1])
    writer.send(big)
    writer.send({"after": True})
    thread.join(10)
    assert done == [[1], big, {"after": True}]
    writer.close()
    with pytest.raises(EOFError):
        reader.recv()


def test_a_step_message_reads_back_and_a_closed_parent_drains_once():
    _, commands, steps, parent = pipes()
    relay = StatsRelay()
    channel = _Channel(commands, steps, relay)
    channel.loop = loop = FakeLoop()
    relay.admitted(3)
    end = Event("token", 9, "length", "", {"e2e_s": 0.5})
    channel.post(Batch(tokens=[(_Tag(1), 4), (_Tag(2), 5)], ends=[(_Tag(3), end)]))
    assert parent.recv() == ("step", [1, 2], [4, 5], [(3, "token", 9, "length", "",
                                                       {"e2e_s": 0.5})],
                             [("admitted", (3,))], 0, 0)
    channel.post(Batch())  # nothing to say: no message
    assert not parent.conn.poll(0.05)
    parent.close()
    channel.post(Batch(tokens=[(_Tag(1), 4)]))
    channel.post(Batch(tokens=[(_Tag(1), 4)]))
    assert loop.calls == [("drain", 0.0)]
