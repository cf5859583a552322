"""The engines one profiling run needs, built when first used and released at the end.

- ``paged``: the paged engine on the profiled device (packed prefill / decode / mixed, KV copies);
  its pool holds what the grid needs (CUDA) or the memory cap (CPU).
- ``static``: the padded static-batch engine (padded prefill / decode).
- ``cpu``: on CUDA only, a CPU copy of the model for the hybrid policy's CPU prefill path.

Each is warmed up when built (first steps pay for allocator growth and kernel selection).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from batchsim.profiler.profiling.capacity import release_after_oom
from batchsim.profiler.profiling.grid import (
    CPU_PACKED_PREFILL,
    KV_COPY,
    PACKED_DECODE,
    PACKED_MIXED,
    PACKED_PREFILL,
    PADDED_PREFILL,
    GridPoint,
)
from batchsim.profiler.profiling.measure import PackedRunner, PaddedRunner

if TYPE_CHECKING:
    from batchsim.profiler.engine.models import ModelInfo
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.static_engine import StaticEngine

logger = logging.getLogger(__name__)

_CPU_CAP_MAX_BYTES = 2 << 30  # default CPU memory cap: min(2 GiB, 25% of available RAM)
_BLOCK_SIZE = 16  # tokens per KV block
# dtype of the CPU copy on CUDA runs: float16 has no fast CPU kernels and bfloat16 is several
# times slower than float32 on CPUs without AMX (measured 4x on a 2-core EPYC VM)
CPU_DTYPE = "float32"
# CUDA: the grid's paged pool takes at most this fraction of the free memory (the rest holds
# the weights and the static engine with its cache)
_CUDA_POOL_FRACTION = 0.4


def _kv_bytes_per_token(model: str, dtype: str) -> int:
    """K and V bytes per token from the model's config (to size a pool before building it)."""
    from batchsim.profiler.engine.models import kv_bytes_per_token, resolve_model

    return kv_bytes_per_token(resolve_model(model).config, 4 if dtype == "float32" else 2)


def is_oom(e: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA or host)."""
    if isinstance(e, MemoryError):
        return True
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text


def default_cpu_cap() -> int:
    import psutil

    return int(min(_CPU_CAP_MAX_BYTES, psutil.virtual_memory().available // 4))


class ProfilingEngines:
    """Lazily built engines of one run; close() releases them (and CUDA memory)."""

    def __init__(self, model: str, device: str, dtype: str, seed: int,
                 memory_cap_bytes: int | None = None) -> None:
        self.model, self.device, self.dtype, self.seed = model, device, dtype, seed
        self.cuda = device.startswith("cuda")
        self.memory_cap_bytes = memory_cap_bytes
        self.load_model_s: float | None = None
        self._paged: Engine | None = None
        self._static: StaticEngine | None = None
        self._cpu: Engine | None = None
        self._num_blocks: int | None = None  # paged pool size (None: the engine's default)
        self._grid_blocks = 0  # blocks the grid's largest step needs (device engine)
        self._cpu_blocks = 0  # same for the CPU copy
        self._facts: dict[str, int] = {}
        self._info: ModelInfo | None = None
        self._runners: dict[str, PackedRunner | PaddedRunner] = {}

    # --- building ---------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """Model facts (builds the paged engine if none was built yet)."""
        if self._info is None:
            self._info = self.paged.info
        return self._info

    def size_paged_pool(self, points: Sequence[GridPoint], search_blocks: int = 0) -> None:
        """Size the pools: 2x what the largest step needs, and for the device's engine on CPU
        room for the max-batch search (search_blocks); CPU pools stay within the memory cap."""
        self._grid_blocks = _blocks_needed(p for p in points if p.key != CPU_PACKED_PREFILL)
        self._cpu_blocks = _blocks_needed(p for p in points if p.key == CPU_PACKED_PREFILL)
        self._num_blocks = max(2 * self._grid_blocks + 16, search_blocks)

    @property
    def paged(self) -> Engine:
        if self._paged is None:
            self._paged = self._build_paged(self.device, self.dtype, self._num_blocks,
                                            self._grid_blocks)
        return self._paged

    def _build_paged(self, device: str, dtype: str, num_blocks: int | None,
                     need_blocks: int) -> Engine:
        """A warmed-up paged engine; num_blocks None: the engine's default pool."""
        from batchsim.profiler.engine.paged_engine import Engine

        t0 = time.perf_counter()
        cuda = device != "cpu"
        if num_blocks is not None:
            block_bytes = _BLOCK_SIZE * _kv_bytes_per_token(self.model, dtype)
            if cuda:  # leave room for the weights and the static engine beside this pool
                import torch

                cap = int(_CUDA_POOL_FRACTION * torch.cuda.mem_get_info(device)[0])
            else:
                cap = self.memory_cap_bytes or default_cpu_cap()
            num_blocks = min(num_blocks, cap // block_bytes)
            if num_blocks < max(need_blocks, 1) and not cuda:
                raise ValueError(
                    f"a memory cap of {cap / 2**30:.3g} GB holds {num_blocks} KV blocks but the "
                    f"grid's largest step needs {need_blocks}: raise --memory-cap-gb or use a "
                    "smaller --grid")
        kw: dict[str, Any] = {} if num_blocks is None else {"num_blocks": num_blocks}
        engine = Engine(self.model, device=device, dtype=dtype, seed=self.seed,
                        block_size=_BLOCK_SIZE, **kw)
        if engine.kv_cache.num_blocks < need_blocks:
            if not cuda:
                raise ValueError(
                    f"the KV pool holds {engine.kv_cache.num_blocks} blocks but the grid's "
                    f"largest step needs {need_blocks}: raise --memory-cap-gb or use a smaller "
                    "--grid")
            logger.warning("the KV pool holds %d blocks, the grid's largest step needs %d: "
                           "points that do not fit are skipped", engine.kv_cache.num_blocks,
                           need_blocks)
        if self.load_model_s is None:
            self.load_model_s = time.perf_counter() - t0
        if device == self.device and not self._facts:
            self._info = engine.info
            facts = engine.memory_facts()
            self._facts = {"total_bytes": facts.total_bytes, "weight_bytes": facts.weight_bytes,
                           "kv_bytes_per_token": facts.kv_bytes_per_token}
        warm_packed(engine)
        return engine

    @property
    def static(self) -> StaticEngine:
        if self._static is None:
            from batchsim.profiler.engine.static_engine import StaticEngine

            self._static = StaticEngine(self.model, device=self.device, dtype=self.dtype,
                                        seed=self.seed)
            warm_static(self._static)
        return self._static

    @property
    def cpu(self) -> Engine:
        """CPU copy of the model, in CPU_DTYPE."""
        if self._cpu is None:
            self._cpu = self._build_paged("cpu", CPU_DTYPE, 2 * self._cpu_blocks + 16,
                                          self._cpu_blocks)
        return self._cpu

    def runner(self, key: str, rng: np.random.Generator) -> PackedRunner | PaddedRunner:
        """The runner that measures points of `key` (one per engine, kept until close)."""
        name = {PADDED_PREFILL: "static", CPU_PACKED_PREFILL: "cpu"}.get(key, "paged")
        if name not in self._runners:
            if name == "static":
                self._runners[name] = PaddedRunner(self.static, rng)
            else:
                engine = self.cpu if name == "cpu" else self.paged
                self._runners[name] = PackedRunner(engine, rng, record_peak=self.cuda and
                                                   name == "paged")
        return self._runners[name]

    # --- limits and facts -------------------------------------------------------------------

    def oom_search(self, search: Callable[[Engine], dict[str, Any]]) -> dict[str, Any]:
        """Run the max-decode-batch search on an engine whose pool is the real budget.

        CUDA: every other engine is released and a paged engine with the default pool
        (gpu_memory_utilization of the device) is built. CPU: the grid's engine, whose pool is
        the memory cap.
        """
        if not self.cuda:
            limits = search(self.paged)
            limits["memory_cap_bytes"] = self.paged.memory_facts().kv_pool_bytes
            return limits
        self.close()
        engine = self._build_paged(self.device, self.dtype, None, 0)
        try:
            limits = search(engine)
            limits["kv_pool_bytes"] = engine.memory_facts().kv_pool_bytes
            return limits
        finally:
            del engine
            self.close()

    def memory_facts(self, points: list[dict[str, Any]]) -> dict[str, int]:
        """The profile's memory section (call after the grid)."""
        if not self._facts:  # resumed with nothing left to measure: ask a fresh engine
            self.paged  # noqa: B018 - builds it and records the facts
            self.close()
        peaks = [p["peak_activation_bytes"] for p in points if p.get("peak_activation_bytes")]
        reserve = max(peaks) if self.cuda and peaks else self._activation_estimate(points)
        return {**self._facts, "activation_reserve_bytes": int(reserve)}

    def _activation_estimate(self, points: list[dict[str, Any]]) -> int:
        """Conservative peak activations of the largest measured step (no allocator stats on CPU).

        Per token ~24 hidden-sized buffers (residual, norms, q/k/v/o, MLP up/gate/down of
        ~4 hidden), fp32 logits of every sampled row, and one layer's attention scores of the
        longest prompt.
        """
        info = self.info
        dtype_bytes = max(1, info.weight_bytes // max(info.num_params, 1))
        packed = [p for p in points if not p["model"].startswith("cpu.")] or points
        tokens = max(p["num_prefill_tokens"] + p["num_decode_seqs"] for p in packed)
        seqs = max(p["num_seqs"] for p in packed)
        longest = max((p["num_prefill_tokens"] // max(p["num_seqs"], 1) for p in packed), default=0)
        return (tokens * info.hidden_size * 24 * dtype_bytes + seqs * info.vocab_size * 4 * 2
                + info.num_attention_heads * longest * longest * 4)

    def after_oom(self) -> None:
        """Drop sequences left behind by a step that ran out of memory and return cached memory."""
        for engine in (self._paged, self._cpu):
            if engine is not None:
                release_after_oom(engine)

    def close(self) -> None:
        self._paged = self._static = self._cpu = None
        self._runners.clear()
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()


def _blocks_needed(points: Iterable[GridPoint], block_size: int = _BLOCK_SIZE) -> int:
    """KV blocks of the largest packed step (or KV copy) among points."""
    bs, need = block_size, 1
    for p in points:
        if p.key == KV_COPY:
            need = max(need, -(-p.tokens // bs))
        elif p.key != PADDED_PREFILL:
            per_seq = p.tokens if p.key in (PACKED_PREFILL, CPU_PACKED_PREFILL) else p.context + 1
            blocks = p.batch * -(-per_seq // bs)
            if p.key == PACKED_MIXED:
                blocks += -(-(p.prefix + p.tokens) // bs)
            need = max(need, blocks)
    return need


# The warm-up's step shapes: one of each packed phase, small enough for any pool
WARM_PACKED_POINTS = (GridPoint(PACKED_PREFILL, 2, 32), GridPoint(PACKED_DECODE, 4, 0, 32),
                      GridPoint(PACKED_MIXED, 2, 16, 32))


def warm_packed(engine: Engine) -> None:
    """A few untimed steps (prefill, decode, mixed) before anything is timed: the first steps
    of a shape pay for allocation and kernel choice. Profiling and validation both warm their
    paged engines with this, so both time engines in the same state."""
    rng = np.random.default_rng(0)
    runner = PackedRunner(engine, rng, record_peak=False)
    for p in WARM_PACKED_POINTS:
        for _ in range(2):
            runner.one_step(p)


def warm_packed_blocks(block_size: int) -> int:
    """KV blocks the warm-up needs at once (its largest step; each step frees its sequences)."""
    return _blocks_needed(WARM_PACKED_POINTS, block_size)


def warm_static(engine: StaticEngine) -> None:
    """Two untimed padded prefills and decodes before anything is timed."""
    for _ in range(2):
        engine.prefill([[1] * 16] * 2)
        engine.decode()
