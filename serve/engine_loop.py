"""The serving driver: one policy and the real engines on the wall clock, arrivals from HTTP.

It is the serving core's third driver (`batchsim.sim.server.Server`, beside the simulator and
the validation executor): the core admits, decides, and accounts for each step; this driver only
says how time passes (the wall clock; arrivals pushed by HTTP handlers) and how a step runs (the
engines, `profiler.real.plan_runner`), and hands tokens back to the handlers.

The loop runs in its own thread (`start`) or in the calling thread (`run`: the engine process
of `serve.engine_process`), so the asyncio event loop never waits for a step. HTTP handlers
call `submit` (thread-safe: the request goes into an inbox and the loop is woken) and `abort`;
in the engine process the loop's own thread makes those calls, through `receive` (one thread,
no GIL to share). The loop hands arrivals to the policy before each decision, as the simulator
and the validation executor do, asks `schedule`, runs the Plan on the engines, reports
`complete(plan, 1)`, and hands each token back to the request's `sink`. Events are handed over
in one `Batch` per step through `post` (default: call each sink here): the HTTP side passes a
`post` that moves the whole batch onto its event loop with one thread-safe call, so a step of 64
tokens wakes it once, not 64 times. A token that does not end its request goes as a plain
`(sink, token)` pair, so the loop builds no object per token. `post` is called at the end of
every step and every idle wake-up, after the step's statistics went to `stats`, with an empty
batch when no request has an event (the engine process forwards the statistics with it).

A request leaves either by finishing (its policy-given length, or EOS when it does not ignore
it), by abort (the client went away: the policy frees its KV; a row of a running padded batch
runs on as padding and its tokens are dropped), or on shutdown. Times are `time.perf_counter()`
seconds; each finished request's server-side TTFT, queue time and E2E go to its sink and into
`LiveStats`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchsim.policies.base import Device, Plan, Policy, Wait
from batchsim.policies.paths import ExecutionPath
from batchsim.policies.request import Request
from batchsim.profiler.real.plan_runner import PlanRunner
from batchsim.serve.events import Batch, Event, FinishReason, Post, Sink, Unavailable, call_each
from batchsim.serve.host_clock import HostClock
from batchsim.serve.live_stats import LiveStats
from batchsim.serve.protocol import GenerationRequest
from batchsim.sim.recorder import Recorder
from batchsim.sim.server import Server

if TYPE_CHECKING:
    from collections.abc import Sequence

    from batchsim.policies.base import StepEvents

logger = logging.getLogger(__name__)


class ServeRecorder(Recorder):
    """The core's recorder as the live server needs it: the rejections only.

    The simulator's recorder keeps a row per step and per-request arrays for its tables; a
    server that runs for days would grow them without bound, and it reads none of them (its
    statistics are `LiveStats`), so recording each step is skipped (~20 us a step)."""

    def __init__(self) -> None:
        super().__init__(0)

    def add_requests(self, num: int) -> None:
        self.num_requests += num  # no per-request rows

    def run(self, plan: Plan, start_s: float, durations: Sequence[float],
            events: StepEvents) -> None:
        self.num_steps += len(durations)

    def cpu_run(self, plan: Plan, start_s: float, duration_s: float,
                events: StepEvents) -> None:
        raise AssertionError("the live server has no CPU path")

@dataclass(eq=False, slots=True)
class _Live:
    req: Request
    gen: GenerationRequest
    sink: Sink
    generated: int = 0
    running: bool = False
    done: bool = False  # finished or aborted for the client; the policy may still hold it
    first_sched_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    itls_s: list[float] = field(default_factory=list)


class EngineLoop:
    """Drives `policy` over `runner` in a thread; see the module docstring."""

    def __init__(self, policy: Policy, runner: PlanRunner, stats: LiveStats,
                 eos_token_id: int | None = None, max_waiting: int = 1024,
                 post: Post = call_each, paths: Mapping[Device, ExecutionPath] | None = None,
                 predict: Callable[[Plan], float] | None = None,
                 receive: Callable[[float], None] | None = None) -> None:
        """paths: the policy's execution paths (default: a GPU path without cost models);
        predict: a step's expected seconds (the profile's cost model), for the GPU path's
        busy_until; receive: where requests come from when no other thread submits them (the
        engine process's pipe): called on the loop's thread with 0 before each decision and
        with the idle wait's timeout, it calls `submit`, `abort` and `drain` for whatever
        arrived, waiting up to that many seconds for something (default: wait to be woken by
        `submit` on another thread)."""
        self.policy = policy
        self.server = Server(policy, paths or {"gpu": ExecutionPath("gpu", {})})
        self.server.recorder = ServeRecorder()
        self.predict = predict
        self.post = post
        self.receive = receive
        self._outbox = Batch()  # events of the step in progress
        self.runner = runner
        self.stats = stats
        self.eos_token_id = eos_token_id
        self.max_waiting = max_waiting
        self._cv = threading.Condition()
        self._inbox: list[_Live] = []
        self._aborts: list[int] = []
        self._live: dict[int, _Live] = {}  # handed to the policy, not yet out of it
        self._pending_abort: set[int] = set()  # the policy could not drop them yet
        self._next_index = 0
        self.num_taken = 0  # arrivals taken from the inbox into the core so far
        self._num_waiting = 0  # as of the last step
        # of the requests in _live not yet done: running, and waiting (kept as they change
        # state, not counted over _live each step)
        self._num_running = 0
        self._num_queued = 0
        self._draining = False
        self._deadline_s = float("inf")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self.run, name="engine-loop", daemon=True)
        self.error: BaseException | None = None

    # -- called from any thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, gen: GenerationRequest, sink: Sink, arrival_s: float | None = None,
               index: int | None = None) -> int:
        """Queue a request; returns its index. Raises Unavailable (queue full, shutting down).
        arrival_s: when it arrived (perf_counter, which is system-wide on Linux; default now);
        index: the caller's id for it (increasing; default the next one)."""
        now = time.perf_counter() if arrival_s is None else arrival_s
        with self._cv:
            if self._draining or self.error is not None:
                raise Unavailable("the server is shutting down" if self.error is None
                                  else f"the engine failed: {self.error}", retry_after_s=5)
            waiting = len(self._inbox) + self._num_waiting
            if waiting >= self.max_waiting:
                raise Unavailable(f"the queue is full ({self.max_waiting} waiting requests)")
            if index is None:
                index = self._next_index
            assert index >= self._next_index, (index, self._next_index)
            self._next_index = index + 1
            req = Request(index, now, len(gen.prompt_token_ids), gen.max_tokens, gen.priority,
                          str(index))
            self._inbox.append(_Live(req, gen, sink))
            self._cv.notify()
        return index

    def abort(self, index: int) -> None:
        """The client went away: drop the request (a no-op once it has finished)."""
        with self._cv:
            self._aborts.append(index)
            self._cv.notify()

    def drain(self, grace_s: float) -> None:
        """Refuse new requests; in-flight ones may finish for up to grace_s, then are aborted
        and the thread stops (returns at once: `join` waits)."""
        with self._cv:
            if not self._draining:
                self._draining = True
                self._deadline_s = time.perf_counter() + grace_s
            self._cv.notify()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to stop; True if it did."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def num_live(self) -> int:
        with self._cv:
            return len(self._live) + len(self._inbox)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- the engine thread ------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        """Requests handed to the core and not yet running, as of the last step."""
        return self._num_waiting

    def run(self) -> None:
        """The loop, in the calling thread, until drained (or the engine fails)."""
        try:
            self._loop()
        except BaseException as e:  # the engine broke: fail every request, refuse new ones
            logger.exception("engine loop failed")
            self.error = e
            self._abort_all("rejected", f"engine failure: {e}")
        finally:
            self._stopped.set()

    def _loop(self) -> None:
        server = self.server
        clock = HostClock()  # this thread's CPU and run-queue time (read twice per step)
        try:
            self._steps(server, clock)
        finally:
            clock.close()

    def _steps(self, server: Server, clock: HostClock) -> None:
        # host: this thread's wall time between steps, with its CPU time and its wait for a
        # core apart (the rest is blocking: the GIL, if another thread of the process has it).
        # The three are read at the same instants, wall time outermost: each interval's CPU
        # and run-queue time belong to its own wall time, clock reads included (the run-queue
        # read is the slow one: a pread of /proc).
        host_t0 = time.perf_counter()
        cpu_t0, rq_t0 = clock.read()
        while True:
            if self.receive is not None:
                self.receive(0.0)
            draining = self._take_inbox()
            now = time.perf_counter()
            if draining and now >= self._deadline_s:
                self._abort_all("abort", "server shutdown")
                return
            if draining and not server.arrivals_done:
                server.close_arrivals()  # a static batch may now go without waiting to fill
            decision = server.decide(now)
            if decision is None:  # closed and nothing left
                self._flush()
                return
            for r, reason in decision.rejected:
                self._finish(self._live[r.index], "rejected", reason, now)
            if isinstance(decision, Wait):
                server.check_wait(decision, now)
                self._publish_idle()
                self._flush()
                self._sleep(decision.until_s)
                host_t0 = time.perf_counter()
                cpu_t0, rq_t0 = clock.read()
                continue
            self._started(decision)
            server.begin(decision, time.perf_counter(),
                         self.predict(decision) if self.predict else 0.0)
            rq_start = clock.runqueue_s()
            cpu_start = clock.cpu_s()
            start = time.perf_counter()
            out = self.runner.run(decision)
            end = time.perf_counter()
            cpu_end, rq_end = clock.read()
            events = server.end(decision, start, [end - start])
            delivered = self._deliver(out.tokens, end)
            for r, _ in events.finished:  # out of the policy; their last token went out
                self._release(r.index)
            self._retry_aborts()
            used = events.kv_blocks_used[-1] / max(self.policy.kv_capacity_blocks, 1)
            kv = self.runner.kv_usage()
            self.stats.step(out.busy_s, max(end - host_t0 - out.busy_s, 0.0), delivered,
                            *self._counts(), kv if kv is not None else used,
                            len(decision.preempted),
                            host_cpu_s=max(cpu_start - cpu_t0, 0.0),
                            host_runqueue_s=max(rq_start - rq_t0, 0.0))
            self._flush()
            host_t0, cpu_t0, rq_t0 = end, cpu_end, rq_end

    def _take_inbox(self) -> bool:
        """Push arrivals into the server core and admit them (the policy sees them before the
        next decision, as in every driver), then apply aborts; returns whether draining.
        Nothing arrived (the common case between steps): no lock, no new lists. Read without
        the lock, a submit that completed before this check is seen (one that races it is
        taken before the next step, as if it had come a moment later)."""
        if not self._inbox and not self._aborts:
            return self._draining
        with self._cv:
            arrivals, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
            draining = self._draining
        now = time.perf_counter()
        for live in arrivals:
            self._live[live.req.index] = live
            self._num_queued += 1
            self.stats.admitted(live.req.input_tokens)
            self.runner.add(live.req.index, live.gen.prompt_token_ids)
            self.server.arrive(live.req)
        if arrivals:
            self.server.admit(now)
            refused = self.server.recorder.reject_reason
            for live in arrivals:
                if live.req.index in refused:
                    self._finish(live, "rejected", refused[live.req.index], now)
        for index in aborts:
            held = self._live.get(index)
            if held is not None and not held.done:
                self._finish(held, "abort", "client disconnected", now)
        return draining

    def _sleep(self, until_s: float | None) -> None:
        with self._cv:
            if self._inbox or self._aborts:
                return
            timeout = 1.0 if until_s is None else max(until_s - time.perf_counter(), 0.0)
            if self._draining:
                timeout = min(timeout, max(self._deadline_s - time.perf_counter(), 0.0))
            if self.receive is None:
                self._cv.wait(min(timeout, 1.0))
                return
        self.receive(min(timeout, 1.0))

    def _started(self, plan: Plan) -> None:
        now = time.perf_counter()
        for chunk in plan.prefills:
            live = self._live.get(chunk.request.index)
            if live is not None:  # a first chunk may start past a prefix-cache hit
                if not live.running and not live.done:
                    self._num_queued -= 1
                    self._num_running += 1
                live.running = True
                if live.first_sched_s is None:
                    live.first_sched_s = now
        for r in plan.preempted:
            live = self._live.get(r.index)
            if live is not None:
                if live.running and not live.done:
                    self._num_running -= 1
                    self._num_queued += 1
                live.running = False

    def _deliver(self, tokens: dict[int, int], now: float) -> int:
        """Hand each token to its request; returns how many were handed (padding excluded)."""
        count = 0
        plain = self._outbox.tokens.append
        held = self._live.get
        eos = self.eos_token_id
        for index, token in tokens.items():
            live = held(index)
            if live is None or live.done:
                continue  # aborted
            generated = live.generated + 1
            limit = live.req.output_tokens
            if generated > limit:
                continue  # a padded row past its end
            live.generated = generated
            count += 1
            last = live.last_token_s  # None until the first token
            if last is None:
                live.first_token_s = now
            else:
                live.itls_s.append(now - last)
            live.last_token_s = now
            if generated == limit:
                self._notify(live, "length", "", now, token)  # the policy reports it finished
            elif (token == eos and not live.gen.ignore_eos
                    and generated >= live.gen.min_tokens):
                self._finish(live, "stop", "", now, token)  # EOS: the policy lets it go early
            else:
                plain((live.sink, token))
        return count

    def _notify(self, live: _Live, reason: FinishReason, detail: str, now: float,
                token: int = -1) -> None:
        """The request's last event: its final token (token >= 0) or its end without one."""
        live.done = True
        if self._live.get(live.req.index) is live:  # counted (not one left in the inbox)
            self._uncount(live)
        arrival = live.req.arrival_s
        timing = {
            "arrival_s": arrival,
            "queue_s": None if live.first_sched_s is None else live.first_sched_s - arrival,
            "ttft_s": None if live.first_token_s is None else live.first_token_s - arrival,
            "e2e_s": now - arrival,
        }
        self.stats.request_done(reason, timing["ttft_s"], timing["e2e_s"], timing["queue_s"],
                                live.itls_s)
        self._outbox.ends.append((live.sink, Event("token" if token >= 0 else "finish", token=token,
                                                   reason=reason, detail=detail, timing=timing)))

    def _finish(self, live: _Live, reason: FinishReason, detail: str, now: float,
                token: int = -1) -> None:
        """End the request for its client and take it out of the policy (rejected ones are
        out already; a padded row the policy cannot drop yet is retried after each step)."""
        if not live.done:
            self._notify(live, reason, detail, now, token)
        index = live.req.index
        if reason == "rejected" or self.policy.abort(live.req):
            self._release(index)
        else:
            self._pending_abort.add(index)

    def _release(self, index: int) -> None:
        live = self._live.pop(index, None)
        if live is not None and not live.done:  # out of the policy without a last event
            self._uncount(live)
        self._pending_abort.discard(index)
        self.runner.release(index)

    def _retry_aborts(self) -> None:
        if not self._pending_abort:
            return
        for index in list(self._pending_abort):
            live = self._live.get(index)
            if live is None or self.policy.abort(live.req):
                self._release(index)

    def _abort_all(self, reason: FinishReason, detail: str) -> None:
        with self._cv:
            self._draining = True
            arrivals, self._inbox = self._inbox, []
        now = time.perf_counter()
        for live in [*self._live.values(), *arrivals]:
            if not live.done:
                self._notify(live, reason, detail, now)
        self._flush()

    def _flush(self) -> None:
        """Hand the events gathered so far to the HTTP side, in one batch (maybe empty)."""
        batch, self._outbox = self._outbox, Batch()
        self.post(batch)

    def _uncount(self, live: _Live) -> None:
        if live.running:
            self._num_running -= 1
        else:
            self._num_queued -= 1

    def _counts(self) -> tuple[int, int]:
        """(running, waiting) of the requests handed to the core and not done."""
        self._num_waiting = self._num_queued  # read by submit() on other threads (atomic)
        return self._num_running, self._num_queued

    def _publish_idle(self) -> None:
        kv = self.runner.kv_usage()
        running, waiting = self._counts()
        self.stats.idle(running, waiting, kv if kv is not None else
                        (0.0 if not self.policy.has_work() else self.stats.kv_usage))

    def debug_state(self) -> dict[str, Any]:
        """Live counts (tests, /health): requests held, pending aborts, KV use."""
        return {"live": len(self._live), "pending_abort": len(self._pending_abort),
                "has_work": self.policy.has_work(), "kv_usage": self.runner.kv_usage()}
