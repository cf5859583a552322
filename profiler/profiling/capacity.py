"""Measurements beside the step-cost grid: CPU->GPU KV copy bandwidth and the largest decode
batch that fits (the OOM boundary)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.profiler.profiling.grid import KV_COPY, PACKED_DECODE, GridPoint
from batchsim.profiler.profiling.measure import PackedRunner, Repeats

if TYPE_CHECKING:
    from batchsim.profiler.engine.paged_engine import Engine

logger = logging.getLogger(__name__)


def measure_kv_copy(engine: Engine, p: GridPoint, reps: Repeats,
                    max_bytes: int) -> dict[str, Any] | None:
    """Time copying p.tokens tokens of KV (every layer's K and V) from pinned CPU memory into the
    GPU pool, layer by layer as a CPU->GPU handoff would; None if too large to stage."""
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

    def copy() -> float:
        torch.cuda.synchronize(engine.device)
        t0 = time.perf_counter()
        for layer in range(kv.num_layers):
            kv.k_pool[layer, :num_blocks].copy_(src_k[layer], non_blocking=True)
            kv.v_pool[layer, :num_blocks].copy_(src_v[layer], non_blocking=True)
        torch.cuda.synchronize(engine.device)
        return time.perf_counter() - t0

    for _ in range(reps.warmup):
        copy()
    times: list[float] = []
    while reps.more(times):
        times.append(copy())
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    return {"model": KV_COPY, "tokens": num_blocks * kv.block_size, "num_bytes": num_bytes,
            "time_s": float(q50), "spread_s": float(q75 - q25), "repeats": len(times),
            "samples_s": [round(t, 9) for t in times], "id": p.id}


def release_after_oom(engine: Engine) -> None:
    """After a step that ran out of memory: drop the sequences it left behind and return the
    allocator's cached blocks, so that fragmentation does not make the next, smaller step fail."""
    for sid in list(engine.seq_ids):
        engine.free(sid)
    if engine.device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def search_max_decode_batch(
    engine: Engine,
    context: int,
    start: int,
    max_batch: int,
    is_oom: Callable[[BaseException], bool],
) -> dict[str, Any]:
    """Largest decode batch at `context` that runs: double from `start`, then bisect.

    A probe fails when the KV pool runs out of blocks (the pool is the budget: the device's free
    memory on CUDA, the memory cap on CPU) or the step itself runs out of memory. Returns
    ``{max_batch_size, reference_context, bound, oom: [probes]}``.
    """
    from batchsim.profiler.engine.kv_cache import OutOfBlocksError

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
            release_after_oom(engine)
        probes.append({"batch": batch, "context": context, "fits": reason is None,
                       "reason": reason})
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
