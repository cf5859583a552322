"""The contract between a batching policy and the serving core that drives it.

A policy is a pure decision object: given the requests it was handed and the time it is told,
it says what the next step executes, or that the server should wait. It owns the queues and
the KV-block accounting (as vLLM's scheduler does) but has no clock, no randomness and no I/O,
so the simulator, the real engine and a live server drive the very same code, all through one
core (`batchsim.sim.server.Server`), whose loop is::

    policy.add_request(req, now_s)              # for every arrival up to now
    decision = policy.schedule(now_s, arrivals_done)
    if isinstance(decision, Wait): sleep until decision.until_s or the next arrival
    else: run decision (a Plan) num_steps <= plan.max_repeats times, then
          events = policy.complete(plan, num_steps)

Before the first step every policy is handed one `ExecutionPath` per device in its `paths`
(`bind_paths`), whose `busy_until_s` the core keeps current. A policy whose `paths` include
"cpu" (the hybrid policy) is also driven by a second loop, the CPU worker, beside the GPU one::

    decision = policy.schedule_cpu(now_s, arrivals_done)   # at arrivals, at its own completions
                                                           # and after every GPU schedule
    if isinstance(decision, Wait): sleep until woken
    else: run decision (one CPU prefill + KV hand-off), then events = policy.complete(plan, 1)

The GPU loop is also woken by CPU completions, and a GPU run of repeated decode steps stops at
the first step that ends at or after the CPU step in flight ends (as it does for arrivals).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

    from batchsim.policies.kv import MemoryFacts
    from batchsim.policies.paths import ExecutionPath
    from batchsim.policies.request import Request

Phase = Literal["prefill", "decode", "mixed"]
Layout = Literal["packed", "padded"]
Device = Literal["gpu", "cpu"]

# Names of the step-shape features a cost model may use (see StepShape.features).
FEATURES: tuple[str, ...] = (
    "const",
    "num_seqs",
    "num_tokens",
    "num_prefill_tokens",
    "num_decode_seqs",
    "prefill_attn_pairs",
    "decode_ctx_tokens",
)


class StepShape(NamedTuple):
    """What a step costs depends on its shape, not on token values.

    For a padded (static) step every row counts, padding included: a prefill of B prompts padded
    to L has num_prefill_tokens = B*L; a decode step of B rows at context c has
    decode_ctx_tokens = B*c. (A NamedTuple: built once per simulated step, so it must be cheap.)
    """

    num_seqs: int  # sequences in the step (prefill chunks + decodes)
    num_prefill_tokens: int  # query tokens of all prefill chunks
    num_decode_seqs: int  # single-token decodes
    prefill_attn_pairs: int  # sum over chunks of n * (prefix + (n + 1) / 2): causal query-key pairs
    decode_ctx_tokens: int  # sum over decodes of keys attended: cached tokens + the new one

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs

    @property
    def phase(self) -> Phase:
        if self.num_decode_seqs == 0:
            return "prefill"
        return "decode" if self.num_prefill_tokens == 0 else "mixed"

    def features(self) -> tuple[float, ...]:
        """Feature vector in FEATURES order."""
        return (
            1.0,
            self.num_seqs,
            self.num_prefill_tokens + self.num_decode_seqs,
            self.num_prefill_tokens,
            self.num_decode_seqs,
            self.prefill_attn_pairs,
            self.decode_ctx_tokens,
        )


_EMPTY_SHAPE = StepShape(0, 0, 0, 0, 0)


def chunk_attn_pairs(prefix_tokens: int, num_tokens: int) -> int:
    """Causal query-key pairs of a prefill chunk of num_tokens after prefix_tokens cached ones."""
    return num_tokens * prefix_tokens + num_tokens * (num_tokens + 1) // 2


class PrefillChunk(NamedTuple):
    """Compute tokens [start, start + num_tokens) of a request's sequence (prompt, then any
    tokens generated before a recompute preemption); the first `start` are already cached."""

    request: Request
    start: int
    num_tokens: int

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass(slots=True)
class Decision:
    """Common part of Plan and Wait: requests the policy dropped while deciding."""

    rejected: list[tuple[Request, str]] = field(default_factory=list)  # (request, reason)


@dataclass(slots=True)
class Wait(Decision):
    """Run nothing now; ask again at until_s or at the next arrival, whichever comes first."""

    until_s: float | None = None  # None: only an arrival can change the decision


@dataclass(slots=True)
class Plan(Decision):
    """One step (or max_repeats identical decode steps) for an executor to run.

    When max_repeats > 1 the plan is decode-only and each repeat is the same batch with every
    context one token longer: shape.decode_ctx_tokens grows by shape.num_decode_seqs per repeat.
    The policy guarantees that, absent arrivals, it would choose exactly this step again each
    time; executors may therefore run fewer repeats (the real one runs one), never more.
    """

    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[Request] = field(default_factory=list)  # real rows only, padding excluded
    shape: StepShape = _EMPTY_SHAPE
    layout: Layout = "packed"
    device: Device = "gpu"
    max_repeats: int = 1
    preempted: list[Request] = field(default_factory=list)  # freed before this step (recompute)

    @property
    def phase(self) -> Phase:
        return self.shape.phase


class StepEvents:
    """What happened during a run of num_steps steps; offsets are 0-based step indexes.

    (A plain slotted class: one is built per simulated run, dataclass factories cost more.)
    """

    __slots__ = ("finished", "first_tokens", "kv_blocks_used", "kv_cached_blocks",
                 "kv_tokens_used", "resumed")

    def __init__(self) -> None:
        self.first_tokens: list[tuple[Request, int]] = []
        # token after a recompute prefill of a preempted request (not its first token)
        self.resumed: list[tuple[Request, int]] = []
        self.finished: list[tuple[Request, int]] = []
        # KV use during each step of the run: blocks reserved (paged blocks, or contiguous
        # reservations expressed in blocks) and tokens actually held.
        self.kv_blocks_used: list[int] = []
        self.kv_tokens_used: list[int] = []
        # with prefix caching: free blocks holding a cached prefix during each step
        self.kv_cached_blocks: list[int] | None = None


class Policy(ABC):
    """Base class of every batching policy. Subclasses register with @register."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    # Devices the policy schedules steps on; "cpu" makes executors run the CPU worker loop.
    paths: ClassVar[tuple[Device, ...]] = ("gpu",)
    # the policy reuses cached prompt prefixes: its requests need their `prefix` identity
    caches_prefixes: bool = False

    def __init__(self, config: object, memory: MemoryFacts, max_model_len: int) -> None:
        self.config = config
        self.memory = memory
        self.max_model_len = max_model_len

    @abstractmethod
    def add_request(self, request: Request, now_s: float) -> str | None:
        """Queue an arrival; return a rejection reason instead if the server would refuse it."""

    @abstractmethod
    def schedule(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        """Decide the next step. arrivals_done: no request will ever arrive again."""

    @abstractmethod
    def complete(self, plan: Plan, num_steps: int) -> StepEvents:
        """Account for plan having run num_steps times (1 <= num_steps <= plan.max_repeats)."""

    @abstractmethod
    def has_work(self) -> bool:
        """True while any request is queued or running."""

    @property
    @abstractmethod
    def kv_capacity_blocks(self) -> int:
        """KV capacity in blocks of kv_block_size tokens (for utilisation figures)."""

    @property
    def kv_block_size(self) -> int:
        return 16

    def abort(self, request: Request) -> bool:
        """Drop a queued or running request (its client went away), between steps only.

        Frees its KV and forgets it, as if it had never arrived; returns True. Returns False if
        the request cannot leave now (a row of a running padded batch runs on as padding until
        the batch ends; a CPU prefill in flight finishes): the caller discards what it produces
        and asks again after the next step, until it finishes. Unknown requests (already
        finished or rejected) return True. Policies must override this: a server needs it."""
        raise NotImplementedError(f"policy {self.name!r} does not implement abort")

    def bind_paths(self, paths: Mapping[Device, ExecutionPath]) -> None:  # noqa: B027
        """Receive the execution paths (latency estimators, one per device in `paths`) before
        the first step; the default ignores them."""

    def schedule_cpu(self, now_s: float, arrivals_done: bool) -> Plan | Wait:
        """Decide the CPU worker's next step (policies whose `paths` include "cpu")."""
        return Wait()

    def derived_knobs(self) -> dict[str, object]:
        """Knob values the policy derived itself (automatic thresholds), for the run's config."""
        return {}

    def extra_metrics(self) -> dict[str, object]:
        """Policy-side figures for metrics.json (prefix cache hits); {} adds nothing."""
        return {}

    def check_workload(self, max_input_tokens: int, max_total_tokens: int) -> None:  # noqa: B027
        """Raise ValueError if the knobs cannot serve the longest request of the workload.

        The default accepts any workload; policies with limits override it."""
