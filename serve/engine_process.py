"""The engine loop in its own process, so the HTTP side never takes a core or the GIL from it.

In one process the engine thread waits for the GIL while the asyncio thread parses requests and
writes token events; on a machine with few cores that wait is most of the server's overhead.
Here the parent (HTTP) process keeps only `EngineProcess`, a handle with the `EngineLoop`'s
interface (`submit`, `abort`, `drain`, `join`), and a spawned child builds the policy and the
engines (`serve.builder.build_served`) and runs the `EngineLoop` on its main thread. The child has
no other Python thread: the loop reads the parent's commands itself (`receive`: before each decision
the messages the parent counted, if any; a blocking poll while idle), so it never waits for a GIL
that a receiver thread holds, nor for the wake-up of such a thread.

The two directions are two one-way pipes carrying `FramedPipe` messages: a length and a pickle
written with one system call, read in bulk. After a 4 ms step, sending a step message to a
blocked reader took 35 us that way against 54 us with `Connection.send_bytes` on a pipe and 70
us on the socket pair `multiprocessing.Pipe()` makes (medians on the development VM,
`bench/ipc_cost.py`); `Connection.recv_bytes` makes two reads a message.

What crosses the pipe, and how often:
- parent -> child: commands (`submit` with the request and its arrival time on the system-wide
  `perf_counter` clock, `abort`, `drain`), written by one sender thread from a `SimpleQueue`
  (so a signal handler may `drain` without locks) and batched: whatever queued up goes as one
  message, read by the loop between steps. The sender counts each message in shared memory
  after writing it, so the loop, which looks before each decision, reads the counter there and
  reads the pipe only when it moved, exactly the messages counted (a system call after each
  step costs 10-30 us on this VM); while idle it waits in a blocking poll;
- child -> parent: one message per engine step (and per idle wake-up) holding the step's
  tokens (two flat lists of ints: request ids and tokens; requests that end have their last
  event as a tuple), the `LiveStats` calls the loop made (replayed on the parent's `LiveStats`,
  so `/metrics` and the dashboard read the parent's copy) and the loop's counts for the 503
  check, pickled with the plain pickler (it holds only ints, floats, strings, lists, dicts:
  `ForkingPickler`, which `Connection.send` uses, builds a pickler and copies its dispatch table
  per message). IPC therefore costs per step, not per token, and no object is built or pickled per
  token in the engine process: the parent builds the `Event`s. A reader thread in the parent
  hands them to the HTTP event loop with one thread-safe call per step (`EventPoster`).
If the child dies, every request in flight ends as rejected and `/health` answers 503.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import select
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from batchsim.serve.events import Batch, Event, FinishReason, Post, Sink, Unavailable
from batchsim.serve.frontend import FrontFacts
from batchsim.serve.live_stats import LiveStats
from batchsim.serve.protocol import GenerationRequest
from batchsim.serve.stats_relay import StatsRelay, replay

logger = logging.getLogger(__name__)

# (request id, kind, token, reason, detail, timing): a request's last Event as a tuple
WireEvent = tuple[int, str, int, "FinishReason | None", str, "dict[str, float | None] | None"]
UNLIMITED = 1 << 62  # the child's queue bound: the parent applies --max-waiting
_LENGTH = struct.Struct("!I")  # a message's header: its pickle's length


class FramedPipe:
    """One end of a one-way pipe carrying whole pickled messages (one writer, one reader).

    `send` writes a message's length and pickle with one `os.write` (all of it, even past the
    pipe's buffer: the write then blocks until the reader takes some); `recv` returns the next
    message, reading the pipe only when none is left from an earlier read (each read takes all
    that is there, up to 64 KiB), so a burst of messages costs one system call. The
    `Connection` it is built on owns the descriptor: multiprocessing hands it to a spawned
    child and closes it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.fd = conn.fileno()
        self._partial = bytearray()  # the start of a message whose rest is still in the pipe
        self._ready: deque[Any] = deque()  # whole messages read, not yet returned

    def send(self, msg: Any) -> None:
        """Write one message (OSError: the reader is gone)."""
        payload = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
        data = _LENGTH.pack(len(payload)) + payload
        written = os.write(self.fd, data)
        while written < len(data):  # only past the pipe's buffer (or on a signal)
            data = data[written:]
            written = os.write(self.fd, data)

    def recv(self) -> Any:
        """The next message; blocks until one has come whole (EOFError: the writer is gone)."""
        while not self._ready:
            self.read()
        return self._ready.popleft()

    def pending(self) -> bool:
        """Whether a whole message is waiting to be returned without a read."""
        return bool(self._ready)

    def read(self) -> None:
        """One read of what is in the pipe (blocks until something is); the whole messages
        in it are kept for `recv`."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            raise EOFError("the pipe's writer is gone")
        partial = self._partial
        if partial:
            partial += chunk  # in place: a message of many reads costs its size, not its square
            data: bytes | bytearray = partial
        else:
            data = chunk
        pos, end = 0, len(data)
        view = memoryview(data)
        while end - pos >= 4:
            (size,) = _LENGTH.unpack_from(data, pos)
            if end - pos - 4 < size:
                break
            self._ready.append(pickle.loads(view[pos + 4:pos + 4 + size]))
            pos += 4 + size
        view.release()  # before the bytearray below may shrink
        if data is partial:
            del partial[:pos]
        elif pos < end:
            self._partial = bytearray(data[pos:])

    def close(self) -> None:
        self.conn.close()


class EngineProcess:
    """Parent-side handle of the engine process; same interface as `EngineLoop`."""

    def __init__(self, spec: Any, max_waiting: int = 1024) -> None:
        """spec: a `serve.builder.ServeSpec` (built in the child)."""
        ctx = mp.get_context("spawn")  # no fork: torch and threads do not survive a fork
        steps_r, steps_w = ctx.Pipe(duplex=False)  # child -> parent: steps, ready, stopped
        commands_r, commands_w = ctx.Pipe(duplex=False)  # parent -> child: commands
        self._steps, self._commands_out = FramedPipe(steps_r), FramedPipe(commands_w)
        # messages the sender wrote so far, counted after each write (read by the child)
        self._num_sent = ctx.RawValue("Q", 0)
        root = logging.getLogger()
        fmt = root.handlers[0].formatter._fmt if root.handlers and root.handlers[0].formatter \
            else None  # the child logs as this process does (the CLI's format)
        self._proc = ctx.Process(target=engine_main, args=(spec, (commands_r, steps_w),
                                                             root.level, fmt, self._num_sent),
                                 name="batchsim-engine", daemon=True)
        self._child_ends = (commands_r, steps_w)
        self.max_waiting = max_waiting
        self.stats: LiveStats | None = None
        self.post: Post | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # _sinks and the counts below
        self._sinks: dict[int, Sink] = {}
        self._sent = 0  # requests submitted (their ids are 0, 1, ...)
        self._taken = 0  # of which the engine loop has taken into its core
        self._waiting = 0  # the engine loop's waiting requests, as of its last step
        self._draining = False
        self._commands: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._reader = threading.Thread(target=self._read, name="engine-reader", daemon=True)
        self._sender = threading.Thread(target=self._send, name="engine-sender", daemon=True)

    def boot(self) -> FrontFacts:
        """Start the process and wait until its engines are built (ValueError: one line)."""
        self._proc.start()
        for end in self._child_ends:  # the child's ends live in the child now
            end.close()
        try:  # the child holds the only write end: if it dies, this read ends
            kind, payload = self._steps.recv()
        except EOFError:
            self._proc.join(30)
            raise RuntimeError(f"the engine process exited while building (exit code "
                               f"{self._proc.exitcode})") from None
        if kind == "failed":
            self._proc.join(30)
            raise ValueError(payload)
        assert kind == "ready", kind
        return payload

    def attach(self, stats: LiveStats, post: Post) -> None:
        """Where the step statistics and the token events go (before `start`)."""
        self.stats, self.post = stats, post

    def start(self) -> None:
        assert self.stats is not None and self.post is not None, "attach() first"
        self._reader.start()
        self._sender.start()

    # -- called on the HTTP side --------------------------------------------------------------

    def submit(self, gen: GenerationRequest, sink: Sink) -> int:
        """Queue a request; returns its id. Raises Unavailable (queue full, shutting down)."""
        now = time.perf_counter()
        with self._lock:
            if self._draining or self.error is not None or self._stopped.is_set():
                raise Unavailable("the server is shutting down" if self.error is None
                                  else f"the engine failed: {self.error}", retry_after_s=5)
            if (self._sent - self._taken) + self._waiting >= self.max_waiting:
                raise Unavailable(f"the queue is full ({self.max_waiting} waiting requests)")
            rid = self._sent
            self._sent += 1
            self._sinks[rid] = sink
        self._commands.put(("submit", rid, gen, now))
        return rid

    def abort(self, index: int) -> None:
        self._commands.put(("abort", index))

    def drain(self, grace_s: float) -> None:
        """Refuse new requests; the engine finishes in-flight ones for up to grace_s (safe in a
        signal handler: only a flag and a lock-free queue)."""
        self._draining = True
        self._commands.put(("drain", grace_s))

    def join(self, timeout_s: float) -> bool:
        """Wait for the engine process to stop; True if it did (else it is killed)."""
        self._proc.join(timeout_s)
        stopped = not self._proc.is_alive()
        if not stopped:
            self._proc.kill()
            self._proc.join(10)
        self._commands.put(None)  # the sender stops
        self._reader.join(10)
        return stopped

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- the parent's two threads -------------------------------------------------------------

    def _send(self) -> None:
        while True:
            first = self._commands.get()
            batch = [first]
            while not self._commands.empty():
                batch.append(self._commands.get())
            commands = [c for c in batch if c is not None]
            try:
                if commands:
                    self._commands_out.send(commands)
                    self._num_sent.value += 1  # after the write: the child then finds it
            except (OSError, ValueError):  # the child is gone: the reader reports it
                return
            if len(commands) < len(batch):
                return

    def _read(self) -> None:
        assert self.stats is not None and self.post is not None
        clean = False
        while True:
            try:
                msg = self._steps.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "stopped":
                if msg[1] is not None:
                    self.error = RuntimeError(msg[1])
                clean = True
                break
            _, rids, tokens, ends, ops, taken, waiting = msg
            replay(self.stats, ops)
            self._deliver(rids, tokens, ends, taken, waiting)
        if not clean and self.error is None:
            self.error = RuntimeError(f"the engine process exited (code {self._proc.exitcode})")
        with self._lock:
            self._draining = True
            left, self._sinks = list(self._sinks.values()), {}
        if left:  # nobody will answer them now
            why = str(self.error) if self.error is not None else "server shutdown"
            self.post(Batch(ends=[(s, Event("finish", reason="rejected" if self.error else
                                            "abort", detail=why)) for s in left]))
        self._stopped.set()

    def _deliver(self, rids: Sequence[int], tokens: Sequence[int], ends: Sequence[WireEvent],
                 taken: int, waiting: int) -> None:
        """One step's message: plain tokens (rids[i] got tokens[i]) and requests' last events."""
        assert self.post is not None
        batch = Batch()
        with self._lock:
            self._taken, self._waiting = taken, waiting
            sinks = self._sinks
            for rid, token in zip(rids, tokens, strict=True):
                sink = sinks.get(rid)
                if sink is not None:
                    batch.tokens.append((sink, token))
            for rid, kind, token, reason, detail, timing in ends:
                sink = sinks.pop(rid, None)
                if sink is not None:
                    batch.ends.append((sink, Event(kind, token, reason, detail,  # type: ignore[arg-type]
                                                   timing)))
        self.post(batch)


class _Tag:
    """The sink the child's engine loop holds for a request: only its id matters."""

    __slots__ = ("rid",)

    def __init__(self, rid: int) -> None:
        self.rid = rid

    def __call__(self, event: Event) -> None:  # never called: the channel reads .rid
        raise AssertionError("events go through the channel")


class _Channel:
    """The child's side of the pipes (its one thread): `post` sends one message per step with
    the events and the statistics; `receive` hands the parent's commands to the loop."""

    def __init__(self, commands: FramedPipe, steps: FramedPipe, relay: StatsRelay,
                 num_sent: Any = None) -> None:
        """commands, steps: the pipes from and to the parent; num_sent: the parent's count of
        messages written (a shared `RawValue`; None: poll before every step)."""
        self.commands = commands
        self.steps = steps
        self.relay = relay
        self.loop: Any = None  # the EngineLoop
        self._num_sent = num_sent
        self._num_applied = 0  # the parent's messages applied so far
        self._gone = False
        # a poll object made once (Connection.poll builds a selector per call, ~8x the cost)
        self._poller = select.poll()
        self._poller.register(commands.fd, select.POLLIN)

    def post(self, batch: Batch) -> None:
        rids = [s.rid for s, _ in batch.tokens]  # type: ignore[attr-defined]
        tokens = [t for _, t in batch.tokens]
        ends = [(s.rid, e.kind, e.token, e.reason, e.detail, e.timing)  # type: ignore[attr-defined]
                for s, e in batch.ends]
        ops = self.relay.take()
        if batch or ops:
            self.send(("step", rids, tokens, ends, ops, self.loop.num_taken,
                       self.loop.num_waiting))

    def send(self, msg: Any) -> None:
        try:
            self.steps.send(msg)
        except (OSError, ValueError):
            if not self._gone:  # stop now, as when a read finds the pipe closed
                self._gone = True
                logger.warning("the HTTP process is gone")
                if self.loop is not None:
                    self.loop.drain(0.0)

    def receive(self, timeout_s: float) -> None:
        """Whatever commands came, into the loop; waits up to timeout_s for the first. With
        timeout 0 (before a step) and the parent's count, the pipe is read only if the count
        moved, and then exactly the messages counted: each was written whole before it was
        counted, so reading them never waits, and none is missed."""
        pipe = self.commands
        try:
            if timeout_s <= 0 and self._num_sent is not None:
                num_sent = self._num_sent.value
                while self._num_applied < num_sent:
                    self._apply(pipe.recv())
                return
            if not pipe.pending():
                if not self._poller.poll(timeout_s * 1e3):
                    return
                pipe.read()
            while pipe.pending():
                self._apply(pipe.recv())
        except (EOFError, OSError):  # the parent is gone: stop now
            self.loop.drain(0.0)

    def _apply(self, commands: list[tuple[Any, ...]]) -> None:
        self._num_applied += 1
        loop = self.loop
        for command in commands:
            kind = command[0]
            if kind == "submit":
                _, rid, gen, arrival_s = command
                try:
                    loop.submit(gen, _Tag(rid), arrival_s=arrival_s, index=rid)
                except Unavailable as e:
                    self.send(("step", [], [], [(rid, "finish", -1, "rejected", str(e), None)],
                               [], loop.num_taken, loop.num_waiting))
            elif kind == "abort":
                loop.abort(command[1])
            else:
                loop.drain(command[1])


def engine_main(spec: Any, ends: tuple[Connection, Connection],
                log_level: int = logging.WARNING, log_format: str | None = None,
                num_sent: Any = None) -> None:
    """The child: build, report ready (or one failure line), run the loop until drained.
    ends: the pipe ends it reads commands from and writes steps to; num_sent: the parent's
    shared count of the messages it wrote (see `_Channel.receive`)."""
    from batchsim.serve.builder import build_served
    from batchsim.serve.engine_loop import EngineLoop

    logging.basicConfig(level=log_level, format=log_format or logging.BASIC_FORMAT)

    # the parent handles SIGINT/SIGTERM and drains us; a terminal's ^C reaches the whole group
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    commands, steps = FramedPipe(ends[0]), FramedPipe(ends[1])
    try:
        served = build_served(spec)
    except ValueError as e:
        steps.send(("failed", str(e)))
        return
    except Exception as e:  # reported to the parent as one line
        steps.send(("failed", f"building the engine failed: {type(e).__name__}: {e}"))
        return
    relay = StatsRelay()
    channel = _Channel(commands, steps, relay, num_sent)
    loop = EngineLoop(served.policy, served.runner, relay, served.eos_token_id,  # type: ignore[arg-type]
                      UNLIMITED, post=channel.post, receive=channel.receive,
                      **served.loop_options())
    channel.loop = loop
    steps.send(("ready", served.facts))
    loop.run()
    channel.send(("stopped", None if loop.error is None else str(loop.error)))
    steps.close()
    commands.close()

