"""What the engine loop hands back to HTTP handlers, and how (thread-safe hand-over)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from batchsim.serve.protocol import GenerationRequest

FinishReason = Literal["length", "stop", "abort", "rejected"]


@dataclass(frozen=True)
class Event:
    """What the loop hands back for a request: one token, or its end."""

    kind: Literal["token", "finish"]
    token: int = -1
    reason: FinishReason | None = None
    detail: str = ""  # why it was rejected
    timing: dict[str, float | None] | None = None  # server-side times at finish (seconds)


Sink = Callable[[Event], None]


@dataclass(eq=False)
class Batch:
    """What one engine step (or idle wake-up) hands back: at most one entry per request.

    A token that does not end its request is a plain `(sink, token)` pair: the loop makes no
    `Event` per token (64 a step at 64 streams), the side that delivers it does; a request's
    last event (its final token, or its end without one) is a whole `Event`."""

    tokens: list[tuple[Sink, int]] = field(default_factory=list)
    ends: list[tuple[Sink, Event]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens) + len(self.ends)

    def deliver(self) -> None:
        """Call each sink with its events; plain tokens first, since a request's plain token
        always comes before its end."""
        for sink, token in self.tokens:
            sink(Event("token", token))
        for sink, event in self.ends:
            sink(event)


Post = Callable[[Batch], None]


def call_each(batch: Batch) -> None:
    """The default `post`: deliver on the engine thread (the sinks must be thread-safe)."""
    batch.deliver()


class Unavailable(Exception):
    """The server cannot take the request now (HTTP 503); retry_after_s: when to retry."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineHandle(Protocol):
    """What the HTTP side and the runner use of an engine: an `EngineLoop` in a thread of this
    process, or `EngineProcess` (the loop in its own process)."""

    error: BaseException | None

    def start(self) -> None: ...

    def submit(self, gen: GenerationRequest, sink: Sink) -> int: ...

    def abort(self, index: int) -> None: ...

    def drain(self, grace_s: float) -> None: ...

    def join(self, timeout_s: float) -> bool: ...

    @property
    def stopped(self) -> bool: ...
