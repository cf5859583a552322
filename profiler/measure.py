"""Timing grid points on the real engines: warm-up, repeats, median and spread.

What the simulator is fed: the **host wall time** of each step (``StepTiming.wall_ms``: from the
start of input preparation to the sampled ids on the host). The simulator advances its clock by
one step's time after another, so everything between two consecutive steps on a real server
(building inputs, kernel launches, the final sync) belongs in the step's cost; GPU time from CUDA
events misses the host part and would make small, launch-bound steps look too cheap. GPU time
and preparation time are kept in each point for analysis.

Decode contexts are set up without computing them (``_add_cached``): the sequence's first
``context`` tokens are marked cached over freshly reserved KV blocks. Attention then reads
``context`` real (if meaningless) K/V rows through the block table, so the step costs what a decode
at that context costs; values do not change the cost. Each repeat rebuilds its sequences, so every
timed step has exactly the point's shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from policies.base import StepShape
from profiler.grid import (
    CPU_PACKED_PREFILL,
    KV_COPY,
    PACKED_DECODE,
    PACKED_MIXED,
    PACKED_PREFILL,
    PADDED_DECODE,
    PADDED_PREFILL,
    GridPoint,
)

if TYPE_CHECKING:
    from profiler.engine import Engine
    from profiler.engine_types import StepTiming
    from profiler.static_engine import StaticEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """Timings of the repeats of one point, in seconds."""

    wall_s: list[float]
    gpu_s: list[float] | None
    prep_s: list[float]
    peak_activation_bytes: int | None = None


def summarise(key: str, shape: StepShape, sample: Sample, point_id: str) -> dict[str, Any]:
    """A raw point record: the shape's fields, median wall time and its interquartile range."""
    wall = np.asarray(sample.wall_s)
    q25, q50, q75 = np.percentile(wall, [25, 50, 75])
    rec: dict[str, Any] = {
        "model": key,
        "num_seqs": shape.num_seqs,
        "num_prefill_tokens": shape.num_prefill_tokens,
        "num_decode_seqs": shape.num_decode_seqs,
        "prefill_attn_pairs": shape.prefill_attn_pairs,
        "decode_ctx_tokens": shape.decode_ctx_tokens,
        "time_s": float(q50),
        "spread_s": float(q75 - q25),  # IQR of the repeats
        "repeats": len(wall),
        "gpu_s": float(np.median(sample.gpu_s)) if sample.gpu_s else None,
        "prep_s": float(np.median(sample.prep_s)),
        "samples_s": [round(float(w), 9) for w in wall],
        "id": point_id,
    }
    if sample.peak_activation_bytes is not None:
        rec["peak_activation_bytes"] = sample.peak_activation_bytes
    return rec


def _collect(timings: list[StepTiming], peak: int | None = None) -> Sample:
    gpu = [t.gpu_ms / 1e3 for t in timings if t.gpu_ms is not None]
    return Sample(
        wall_s=[t.wall_ms / 1e3 for t in timings],
        gpu_s=gpu if len(gpu) == len(timings) else None,
        prep_s=[t.prep_ms / 1e3 for t in timings],
        peak_activation_bytes=peak,
    )


def _tokens(rng: np.random.Generator, n: int, vocab: int) -> list[int]:
    return rng.integers(0, vocab, n).tolist()


def _add_cached(engine: Engine, seq_id: int, context: int, extra: int, rng: np.random.Generator) -> None:
    """Add a sequence of context + extra tokens whose first `context` are cached (not computed).

    Uses the engine's private sequence state (profiling only): the KV rows hold whatever the pool
    holds, which costs the same to attend over as real K/V.
    """
    engine.add(seq_id, _tokens(rng, context + extra, engine.info.vocab_size))
    if context:
        engine.kv_cache.reserve(seq_id, context)
        engine._seqs[seq_id].num_computed = context  # noqa: SLF001 - see docstring
    assert engine.num_computed(seq_id) == context, (seq_id, engine.num_computed(seq_id), context)


class PackedRunner:
    """Runs packed prefill / decode / mixed points on a paged Engine."""

    def __init__(self, engine: Engine, rng: np.random.Generator, record_peak: bool) -> None:
        self.engine = engine
        self.rng = rng
        self.record_peak = record_peak  # CUDA: peak activation bytes of the last repeat

    def _plan(self, p: GridPoint) -> tuple[Any, list[int]]:
        from profiler.engine_types import EnginePlan, PrefillChunk

        ids: list[int] = []
        prefills, decodes = [], []
        if p.key in (PACKED_PREFILL, CPU_PACKED_PREFILL):
            for i in range(p.batch):
                _add_cached(self.engine, i, 0, p.tokens, self.rng)
                prefills.append(PrefillChunk(i, 0, p.tokens))
                ids.append(i)
        else:
            num_decodes = p.batch
            for i in range(num_decodes):
                _add_cached(self.engine, i, p.context, 1, self.rng)
                decodes.append(i)
                ids.append(i)
            if p.key == PACKED_MIXED:
                sid = num_decodes
                _add_cached(self.engine, sid, p.prefix, p.tokens, self.rng)
                prefills.append(PrefillChunk(sid, p.prefix, p.tokens))
                ids.append(sid)
        return EnginePlan(prefills=prefills, decodes=decodes), ids

    def one_step(self, p: GridPoint, peak: bool = False) -> StepTiming:
        ids: list[int] = []
        try:
            plan, ids = self._plan(p)
            step = self.engine.step_with_peak_memory if peak else self.engine.step
            return step(plan).timing
        finally:
            for sid in list(self.engine.seq_ids):
                self.engine.free(sid)

    def measure(self, p: GridPoint, warmup: int, repeats: int) -> list[dict[str, Any]]:
        for _ in range(warmup):
            self.one_step(p)
        timings = [self.one_step(p) for _ in range(repeats)]
        peak = None
        if self.record_peak:
            peak = self.one_step(p, peak=True).peak_activation_bytes
        shape = p.shape()
        t = timings[0]
        assert (t.num_seqs, t.num_prefill_tokens, t.num_decode_tokens) == (
            shape.num_seqs, shape.num_prefill_tokens, shape.num_decode_seqs
        ), (p, t)
        return [summarise(p.key, shape, _collect(timings, peak), p.id)]


class PaddedRunner:
    """Runs a padded (static) batch: prefill repeats, then decode steps of the last batch."""

    def __init__(self, engine: StaticEngine, rng: np.random.Generator) -> None:
        self.engine = engine
        self.rng = rng

    def measure(self, p: GridPoint, warmup: int, repeats: int) -> list[dict[str, Any]]:
        assert p.key == PADDED_PREFILL, p
        vocab = self.engine.info.vocab_size
        prefills = []
        for i in range(warmup + repeats):
            prompts = [_tokens(self.rng, p.tokens, vocab) for _ in range(p.batch)]
            _, timing = self.engine.prefill(prompts)
            if i >= warmup:
                prefills.append(timing)
        # decode step i after the prefill attends over p.tokens + i cached tokens
        decodes = [self.engine.decode()[1] for _ in range(warmup + repeats)][warmup:]
        context = p.tokens + warmup + repeats // 2  # median context of the timed decodes
        decode_shape = StepShape(p.batch, 0, p.batch, 0, p.batch * context)
        return [
            summarise(PADDED_PREFILL, p.shape(), _collect(prefills), p.id),
            summarise(PADDED_DECODE, decode_shape, _collect(decodes), p.id + "#decode"),
        ]


def measure_kv_copy(engine: Engine, p: GridPoint, warmup: int, repeats: int,
                    max_bytes: int) -> dict[str, Any] | None:
    """Time copying p.tokens tokens of KV (every layer's K and V) from pinned CPU memory into the
    GPU pool, layer by layer as a CPU->GPU handoff would; None if too large to stage."""
    import time

    import torch

    kv = engine.kv_cache
    num_blocks = -(-p.tokens // kv.block_size)
    num_bytes = num_blocks * kv.block_size * engine.info.kv_bytes_per_token
    if num_blocks > kv.num_blocks or num_bytes > max_bytes:
        logger.info("kv copy of %d tokens skipped: %d bytes do not fit the pool or the cap",
                    p.tokens, num_bytes)
        return None
    # k_pool: [L, num_blocks, block_size, Hkv, D]; copy blocks 0..num_blocks-1 of every layer
    shape = (kv.num_layers, num_blocks, *kv.k_pool.shape[2:])
    src_k = torch.empty(shape, dtype=kv.k_pool.dtype, pin_memory=True)
    src_v = torch.empty(shape, dtype=kv.k_pool.dtype, pin_memory=True)
    times = []
    for i in range(warmup + repeats):
        torch.cuda.synchronize(engine.device)
        t0 = time.perf_counter()
        for layer in range(kv.num_layers):
            kv.k_pool[layer, :num_blocks].copy_(src_k[layer], non_blocking=True)
            kv.v_pool[layer, :num_blocks].copy_(src_v[layer], non_blocking=True)
        torch.cuda.synchronize(engine.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    return {"model": KV_COPY, "tokens": num_blocks * kv.block_size, "num_bytes": num_bytes,
            "time_s": float(q50), "spread_s": float(q75 - q25), "repeats": len(times),
            "samples_s": [round(t, 9) for t in times], "id": p.id}


def search_max_decode_batch(
    engine: Engine, context: int, start: int, max_batch: int, is_oom: Callable[[BaseException], bool],
) -> dict[str, Any]:
    """Largest decode batch at `context` that runs: double from `start`, then bisect.

    A probe fails when the KV pool runs out of blocks (the pool is the budget: the device's free
    memory on CUDA, the memory cap on CPU) or the step itself runs out of memory. Returns
    ``{max_batch_size, reference_context, bound, oom: [probes]}``.
    """
    from profiler.kv_cache import OutOfBlocksError

    runner = PackedRunner(engine, np.random.default_rng(0), record_peak=False)
    probes: list[dict[str, Any]] = []

    def fits(batch: int) -> bool:
        reason = None
        try:
            runner.one_step(GridPoint(PACKED_DECODE, batch, 0, context))
        except OutOfBlocksError:
            reason = "kv_pool"
        except (RuntimeError, MemoryError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_oom(e):
                raise
            reason = "oom"
        probes.append({"batch": batch, "context": context, "fits": reason is None, "reason": reason})
        return reason is None

    lo, hi = 0, None
    b = max(1, start)
    while b <= max_batch:
        if not fits(b):
            hi = b
            break
        lo, b = b, b * 2
    if hi is None:
        bound = "search_cap"
    else:
        while hi - lo > max(1, lo // 16):  # 1/16 resolution is plenty for a capacity figure
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        bound = next(p["reason"] for p in reversed(probes) if not p["fits"])
    return {"max_batch_size": lo, "reference_context": context, "bound": bound, "oom": probes}
