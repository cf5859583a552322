"""Timing grid points on the real engines: warm-up, repeats, median and spread.

What the simulator is fed: the **host wall time** of each step (``StepTiming.wall_ms``: from the
start of input preparation to the sampled ids on the host). The simulator advances its clock by
one step's time after another, so everything between two consecutive steps on a real server
(building inputs, kernel launches, the final sync) belongs in the step's cost; GPU time from CUDA
events misses the host part and would make small, launch-bound steps look too cheap. GPU time,
preparation time and the calling thread's CPU time are kept in each point for analysis. On a
CPU shared with other processes, ``clock="thread"`` with one torch thread measures the step by
its thread CPU time instead: what the wall time would be on an idle machine.

Decode contexts are set up without computing them (``Engine.assume_cached``): the sequence's first
``context`` tokens are marked cached over freshly reserved KV blocks. Attention then reads
``context`` real (if meaningless) K/V rows through the block table, so the step costs what a decode
at that context costs; values do not change the cost. Each repeat rebuilds its sequences, so every
timed step has exactly the point's shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from batchsim.policies.base import StepShape
from batchsim.profiler.engine.records import EngineChunk, EnginePlan
from batchsim.profiler.profiling.grid import (
    CPU_PACKED_PREFILL,
    PACKED_DECODE,
    PACKED_MIXED,
    PACKED_PREFILL,
    PADDED_DECODE,
    PADDED_PREFILL,
    GridPoint,
)

if TYPE_CHECKING:
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.records import StepTiming
    from batchsim.profiler.engine.static_engine import StaticEngine

logger = logging.getLogger(__name__)


Clock = Literal["wall", "thread"]
CLOCKS: tuple[str, ...] = ("wall", "thread")


@dataclass(frozen=True)
class Repeats:
    """How a point is timed: `warmup` untimed steps, then at least `min_repeats` timed, more
    (up to `max_repeats`) while less than `min_point_s` has been timed: cheap points get more
    repeats, so their median is as steady as an expensive point's.

    clock "wall" (the default) times steps by the engine's host wall time. "thread" times them by
    the CPU time of the calling thread: with torch on one CPU thread that equals the wall time
    on an idle machine, and other processes sharing the cores do not inflate it.
    """

    warmup: int
    min_repeats: int
    min_point_s: float = 0.0
    max_repeats: int = 0  # 0: exactly min_repeats
    clock: Clock = "wall"

    def more(self, timed: list[float]) -> bool:
        """Whether to time another step after `timed` (seconds of the steps so far)."""
        if len(timed) < self.min_repeats:
            return True
        return len(timed) < self.max_repeats and sum(timed) < self.min_point_s


# One timed step: the engine's record and the calling thread's CPU seconds during it.
Timed = tuple["StepTiming", float]


def timed(step: Callable[[], StepTiming]) -> Timed:
    t0 = time.thread_time()
    timing = step()
    return timing, time.thread_time() - t0


@dataclass(frozen=True)
class Sample:
    """Timings of the repeats of one point, in seconds."""

    wall_s: list[float]
    thread_s: list[float]
    gpu_s: list[float] | None
    prep_s: list[float]
    peak_activation_bytes: int | None = None


def summarise(key: str, shape: StepShape, sample: Sample, point_id: str,
              clock: Clock) -> dict[str, Any]:
    """A raw point record: the shape's fields, the median step time by `clock` and its
    interquartile range."""
    times = np.asarray(sample.wall_s if clock == "wall" else sample.thread_s)
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    rec: dict[str, Any] = {
        "model": key,
        "num_seqs": shape.num_seqs,
        "num_prefill_tokens": shape.num_prefill_tokens,
        "num_decode_seqs": shape.num_decode_seqs,
        "prefill_attn_pairs": shape.prefill_attn_pairs,
        "decode_ctx_tokens": shape.decode_ctx_tokens,
        "time_s": float(q50),
        "spread_s": float(q75 - q25),  # IQR of the repeats
        "repeats": len(times),
        "wall_s": float(np.median(sample.wall_s)),
        "thread_s": float(np.median(sample.thread_s)),
        "gpu_s": float(np.median(sample.gpu_s)) if sample.gpu_s else None,
        "prep_s": float(np.median(sample.prep_s)),
        "samples_s": [round(float(t), 9) for t in times],
        "id": point_id,
    }
    if sample.peak_activation_bytes is not None:
        rec["peak_activation_bytes"] = sample.peak_activation_bytes
    return rec


def _collect(steps: list[Timed], peak: int | None = None) -> Sample:
    timings = [t for t, _ in steps]
    gpu = [t.gpu_ms / 1e3 for t in timings if t.gpu_ms is not None]
    return Sample(
        wall_s=[t.wall_ms / 1e3 for t in timings],
        thread_s=[cpu for _, cpu in steps],
        gpu_s=gpu if len(gpu) == len(timings) else None,
        prep_s=[t.prep_ms / 1e3 for t in timings],
        peak_activation_bytes=peak,
    )


def _repeat(step: Callable[[], Timed], reps: Repeats) -> list[Timed]:
    steps: list[Timed] = []
    times: list[float] = []
    while reps.more(times):
        steps.append(step())
        timing, cpu = steps[-1]
        times.append(timing.wall_ms / 1e3 if reps.clock == "wall" else cpu)
    return steps


def _tokens(rng: np.random.Generator, n: int, vocab: int) -> list[int]:
    return rng.integers(0, vocab, n).tolist()


def _add_cached(engine: Engine, seq_id: int, context: int, extra: int,
                tokens: list[int]) -> None:
    """Add a sequence of context + extra tokens whose first `context` are cached (not computed).

    The KV rows hold whatever the pool holds, which costs the same to attend over as real K/V
    (see ``Engine.assume_cached``).
    """
    engine.add(seq_id, tokens[: context + extra])
    if context:
        engine.assume_cached(seq_id, context)


class PackedRunner:
    """Runs packed prefill / decode / mixed points on a paged Engine."""

    def __init__(self, engine: Engine, rng: np.random.Generator, record_peak: bool) -> None:
        self.engine = engine
        self.record_peak = record_peak  # CUDA: peak activation bytes of an extra step
        # every sequence takes a prefix of one random token list: values do not change the
        # cost, and slicing keeps the per-repeat setup of long contexts cheap
        info = engine.info
        self.tokens: list[int] = rng.integers(0, info.vocab_size, info.max_model_len).tolist()

    def _plan(self, p: GridPoint) -> EnginePlan:
        prefills: list[EngineChunk] = []
        decodes: list[int] = []
        if p.key in (PACKED_PREFILL, CPU_PACKED_PREFILL):
            for i in range(p.batch):
                _add_cached(self.engine, i, 0, p.tokens, self.tokens)
                prefills.append(EngineChunk(i, 0, p.tokens))
        else:
            num_decodes = p.batch
            for i in range(num_decodes):
                _add_cached(self.engine, i, p.context, 1, self.tokens)
                decodes.append(i)
            if p.key == PACKED_MIXED:
                sid = num_decodes
                _add_cached(self.engine, sid, p.prefix, p.tokens, self.tokens)
                prefills.append(EngineChunk(sid, p.prefix, p.tokens))
        return EnginePlan(prefills=prefills, decodes=decodes)

    def one_step(self, p: GridPoint, peak: bool = False) -> Timed:
        """Set up the point's sequences, run one step (only the step is timed), free them."""
        try:
            plan = self._plan(p)
            step = self.engine.step_with_peak_memory if peak else self.engine.step
            return timed(lambda: step(plan).timing)
        finally:
            for sid in list(self.engine.seq_ids):
                self.engine.free(sid)

    def measure(self, p: GridPoint, reps: Repeats) -> list[dict[str, Any]]:
        for _ in range(reps.warmup):
            self.one_step(p)
        steps = _repeat(lambda: self.one_step(p), reps)
        peak = None
        if self.record_peak:
            peak = self.one_step(p, peak=True)[0].peak_activation_bytes
        shape = p.shape()
        t = steps[0][0]
        chunk_keys = p.batch * p.tokens if p.key != PACKED_MIXED else p.prefix + p.tokens
        if p.key == PACKED_DECODE:
            chunk_keys = 0
        # the engine ran exactly the shape the simulator will be asked about
        assert (t.num_seqs, t.num_prefill_tokens, t.num_decode_tokens, t.kv_tokens_read) == (
            shape.num_seqs, shape.num_prefill_tokens, shape.num_decode_seqs,
            shape.decode_ctx_tokens + chunk_keys,
        ), (p, t)
        return [summarise(p.key, shape, _collect(steps, peak), p.id, reps.clock)]


class PaddedRunner:
    """Runs a padded (static) batch: prefill repeats, then decode steps of the last batch."""

    def __init__(self, engine: StaticEngine, rng: np.random.Generator) -> None:
        self.engine = engine
        self.rng = rng

    def measure(self, p: GridPoint, reps: Repeats) -> list[dict[str, Any]]:
        assert p.key == PADDED_PREFILL, p
        vocab = self.engine.info.vocab_size

        def prefill() -> Timed:
            prompts = [_tokens(self.rng, p.tokens, vocab) for _ in range(p.batch)]
            return timed(lambda: self.engine.prefill(prompts)[1])

        for _ in range(reps.warmup):
            prefill()
        prefills = _repeat(prefill, reps)
        # decode step i after the last prefill attends over p.tokens + i cached tokens; stay
        # within max_model_len
        room = self.engine.info.max_model_len - p.tokens - reps.warmup - 1
        decode_reps = replace(reps, max_repeats=min(reps.max_repeats, room))
        for _ in range(reps.warmup):
            self.engine.decode()
        decodes = _repeat(lambda: timed(lambda: self.engine.decode()[1]), decode_reps)
        cached = p.tokens + reps.warmup + len(decodes) // 2  # median over the timed decodes
        decode_shape = StepShape(p.batch, 0, p.batch, 0, p.batch * (cached + 1))
        return [
            summarise(PADDED_PREFILL, p.shape(), _collect(prefills), p.id, reps.clock),
            summarise(PADDED_DECODE, decode_shape, _collect(decodes), p.id + "#decode",
                      reps.clock),
        ]
