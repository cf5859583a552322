"""The profiling grid: which step shapes `batchsim profile` measures, per grid size and device.

Every point is a step shape of one cost model (``batchsim.sim.cost_model.REQUIRED_MODELS`` keys,
plus
``cpu.packed.prefill`` and ``kv_copy`` on CUDA), described by its knobs (batch, tokens, context)
and converted to the simulator's own ``StepShape`` so the fit uses exactly the features the
simulator evaluates. No torch here.

Sizes are scaled to the device: a CPU grid keeps every step to a few hundred tokens (a 0.5B model
computes ~150 tokens/s on two cores), a CUDA grid reaches thousands of tokens per step and decode
batches in the hundreds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from batchsim.policies.base import StepShape, chunk_attn_pairs

GridName = Literal["quick", "standard", "full"]
GRID_NAMES: tuple[str, ...] = ("quick", "standard", "full")

PACKED_PREFILL = "packed.prefill"
PACKED_DECODE = "packed.decode"
PACKED_MIXED = "packed.mixed"
PADDED_PREFILL = "padded.prefill"
PADDED_DECODE = "padded.decode"
CPU_PACKED_PREFILL = "cpu.packed.prefill"
KV_COPY = "kv_copy"


@dataclass(frozen=True)
class GridPoint:
    """One measurement task.

    ``padded.prefill`` points also yield the ``padded.decode`` point at the same batch and
    context (a static batch must be prefilled before it can decode), so a padded task measures
    both; its ``key`` is ``padded.prefill``.
    """

    key: str
    batch: int = 1  # prefill: prompts; decode: decoding sequences; mixed: decodes
    tokens: int = 0  # prefill: prompt length; mixed: chunk tokens; kv_copy: tokens copied
    context: int = 0  # decode / mixed: context of each decode (tokens cached before the step)
    prefix: int = 0  # mixed: tokens of the chunk's sequence cached before the chunk

    @property
    def id(self) -> str:
        """Stable name, used to skip measured points on --resume."""
        return f"{self.key}:b{self.batch}:t{self.tokens}:c{self.context}:p{self.prefix}"

    def shape(self) -> StepShape:
        """The step's shape as the simulator sees it: a decode at context c attends to c + 1
        keys (the cached ones and its own)."""
        if self.key in (PACKED_PREFILL, CPU_PACKED_PREFILL, PADDED_PREFILL):
            return StepShape(self.batch, self.batch * self.tokens, 0,
                             self.batch * chunk_attn_pairs(0, self.tokens), 0)
        if self.key in (PACKED_DECODE, PADDED_DECODE):
            return StepShape(self.batch, 0, self.batch, 0, self.batch * (self.context + 1))
        if self.key == PACKED_MIXED:
            return StepShape(self.batch + 1, self.tokens, self.batch,
                             chunk_attn_pairs(self.prefix, self.tokens),
                             self.batch * (self.context + 1))
        raise ValueError(f"{self.key} points have no step shape")

    @property
    def cost_tokens(self) -> float:
        """Rough work of the task in token-equivalents (for the progress bar's ETA)."""
        step = 8.0  # a step's fixed cost, in token-equivalents
        if self.key == KV_COPY:
            return step
        if self.key == PADDED_PREFILL:  # prefill repeats, then decode steps
            return step + self.batch * self.tokens + step + self.batch
        s = self.shape()
        return step + s.num_tokens + 1e-3 * (s.decode_ctx_tokens + s.prefill_attn_pairs / 64)


@dataclass(frozen=True)
class GridSpec:
    """Axes of one grid; products above the token caps are dropped."""

    prefill_batches: tuple[int, ...]
    prefill_lengths: tuple[int, ...]
    max_prefill_tokens: int  # cap on batch * length
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    max_decode_ctx_tokens: int  # cap on batch * context (KV read per step)
    mixed_chunks: tuple[int, ...]
    mixed_decodes: tuple[int, ...]
    mixed_contexts: tuple[int, ...]  # decode context; the chunk's prefix takes 0 and this value
    padded_batches: tuple[int, ...]
    padded_lengths: tuple[int, ...]
    max_padded_tokens: int
    copy_tokens: tuple[int, ...] = ()  # KV copy sizes in tokens (CUDA only)
    oom_context: int = 512  # reference context of the max-decode-batch search
    repeats: int = 3  # timed steps per point, at least
    warmup: int = 1  # untimed steps per point
    min_point_s: float = 0.05  # keep repeating cheap points until this much time is measured...
    max_repeats: int = 15  # ...or this many repeats


_CPU = {
    # quick: ~100 s for qwen2.5-0.5b on two cores; warm-up comes from the engines' own
    # warm-up steps, and the median of three absorbs a slow first step at a new shape
    "quick": GridSpec(
        prefill_batches=(1, 2, 4), prefill_lengths=(4, 16, 64, 128, 256), max_prefill_tokens=256,
        decode_batches=(1, 4, 8, 16), decode_contexts=(16, 128, 512), max_decode_ctx_tokens=8192,
        mixed_chunks=(16, 128), mixed_decodes=(1, 8), mixed_contexts=(64, 256),
        padded_batches=(1, 2, 4), padded_lengths=(16, 64, 128), max_padded_tokens=256,
        oom_context=512, repeats=3, warmup=0,
    ),
    "standard": GridSpec(
        prefill_batches=(1, 2, 4, 8), prefill_lengths=(4, 16, 32, 64, 128, 256, 512),
        max_prefill_tokens=1024,
        # every decode batch up to 8, not only powers of two: on CPU a batch-3 decode costs
        # about what batch 4 does (matrix-product kernels work in blocks of rows), so a curve
        # interpolated between 2 and 4 under-prices it by 20-30% (docs/VALIDATION.md)
        decode_batches=(1, 2, 3, 4, 5, 6, 8, 12, 16, 32), decode_contexts=(16, 64, 256, 1024),
        max_decode_ctx_tokens=16384,
        mixed_chunks=(16, 64, 256), mixed_decodes=(1, 4, 16), mixed_contexts=(64, 512),
        padded_batches=(1, 2, 3, 4, 6, 8), padded_lengths=(16, 64, 256), max_padded_tokens=1024,
        oom_context=1024, repeats=5, warmup=1,
    ),
}
_CPU["full"] = GridSpec(
    prefill_batches=(1, 2, 4, 8, 16), prefill_lengths=(1, 4, 16, 32, 64, 128, 256, 512, 1024),
    max_prefill_tokens=2048,
    decode_batches=(1, 2, 4, 8, 16, 32, 64), decode_contexts=(16, 64, 256, 1024, 2048),
    max_decode_ctx_tokens=65536,
    mixed_chunks=(16, 64, 256, 512), mixed_decodes=(1, 4, 16, 32), mixed_contexts=(64, 512, 1024),
    padded_batches=(1, 2, 4, 8, 16), padded_lengths=(16, 64, 256, 512), max_padded_tokens=2048,
    oom_context=2048, repeats=7, warmup=2,
)

_COPY = (16, 256, 4096, 65536)
_CUDA = {
    "quick": GridSpec(
        prefill_batches=(1, 4, 16), prefill_lengths=(16, 128, 512, 2048), max_prefill_tokens=8192,
        decode_batches=(1, 8, 32, 128), decode_contexts=(128, 1024, 4096),
        max_decode_ctx_tokens=1 << 19,
        mixed_chunks=(64, 512), mixed_decodes=(8, 64), mixed_contexts=(256, 2048),
        padded_batches=(1, 8, 32), padded_lengths=(64, 512), max_padded_tokens=8192,
        copy_tokens=_COPY, oom_context=1024, repeats=3, warmup=2,
    ),
    "standard": GridSpec(
        prefill_batches=(1, 2, 4, 8, 16, 32),
        prefill_lengths=(16, 64, 128, 256, 512, 1024, 2048, 4096), max_prefill_tokens=16384,
        decode_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256), decode_contexts=(128, 512, 2048, 8192),
        max_decode_ctx_tokens=1 << 20,
        mixed_chunks=(64, 256, 1024, 2048), mixed_decodes=(1, 8, 32, 128),
        mixed_contexts=(256, 2048),
        padded_batches=(1, 4, 16, 64), padded_lengths=(64, 256, 1024), max_padded_tokens=16384,
        copy_tokens=(*_COPY, 262144), oom_context=2048, repeats=5, warmup=3, min_point_s=0.1,
        max_repeats=20,
    ),
}
_CUDA["full"] = GridSpec(
    prefill_batches=(1, 2, 4, 8, 16, 32, 64),
    prefill_lengths=(1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
    max_prefill_tokens=32768,
    decode_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    decode_contexts=(128, 512, 1024, 2048, 4096, 8192),
    max_decode_ctx_tokens=1 << 21,
    mixed_chunks=(64, 256, 512, 1024, 2048, 4096), mixed_decodes=(1, 8, 32, 128, 256),
    mixed_contexts=(256, 1024, 4096),
    padded_batches=(1, 4, 16, 64, 128), padded_lengths=(64, 256, 1024, 2048),
    max_padded_tokens=32768, copy_tokens=(*_COPY, 262144, 1 << 20), oom_context=4096, repeats=7,
    warmup=3, min_point_s=0.2, max_repeats=30,
)


def grid_spec(name: str, device_type: str) -> GridSpec:
    """The grid `name` for a device type ('cpu' or 'cuda')."""
    table = _CUDA if device_type == "cuda" else _CPU
    if name not in table:
        raise ValueError(f"unknown grid {name!r}: choose one of {', '.join(GRID_NAMES)}")
    return table[name]


@dataclass(frozen=True)
class Grid:
    """The points of one profiling run, in measurement order (seeded shuffle)."""

    spec: GridSpec
    points: tuple[GridPoint, ...] = field(default_factory=tuple)

    @property
    def total_cost(self) -> float:
        return sum(p.cost_tokens for p in self.points)


def build_points(spec: GridSpec, max_model_len: int, cuda_extras: bool = False) -> list[GridPoint]:
    """Every point of the grid that fits the model's max_model_len, in a canonical order.

    cuda_extras adds the CPU-path prefill points (same grid as packed.prefill) and KV copies.
    """
    # a decode at context c holds c + repeats + warmup tokens; leave room for them
    room = max_model_len - spec.repeats - spec.warmup - 1

    def fits(n: int) -> bool:
        return 0 < n <= room

    pts: list[GridPoint] = []
    prefill = [
        (b, n) for b in spec.prefill_batches for n in spec.prefill_lengths
        if fits(n) and b * n <= spec.max_prefill_tokens
    ]
    pts += [GridPoint(PACKED_PREFILL, b, n) for b, n in prefill]
    pts += [
        GridPoint(PACKED_DECODE, b, 0, c) for b in spec.decode_batches for c in spec.decode_contexts
        if fits(c) and b * c <= spec.max_decode_ctx_tokens
    ]
    for k in spec.mixed_chunks:
        for d in spec.mixed_decodes:
            for c in spec.mixed_contexts:
                if fits(c) and d * c <= spec.max_decode_ctx_tokens:
                    pts += [GridPoint(PACKED_MIXED, d, k, c, p) for p in (0, c) if fits(p + k)]
    pts += [
        GridPoint(PADDED_PREFILL, b, n) for b in spec.padded_batches for n in spec.padded_lengths
        if fits(n) and b * n <= spec.max_padded_tokens
    ]
    if cuda_extras:
        pts += [GridPoint(CPU_PACKED_PREFILL, b, n) for b, n in prefill if b * n <= 1024]
        pts += [GridPoint(KV_COPY, 1, t) for t in spec.copy_tokens]
    ids = [p.id for p in pts]
    assert len(set(ids)) == len(ids), "duplicate grid points"
    return pts


def build_grid(
    name: str, device_type: str, max_model_len: int, seed: int, repeats: int | None = None,
    cuda_extras: bool | None = None,
) -> Grid:
    """The named grid for a device, shuffled with a seeded RNG so drift shows up as noise."""
    spec = grid_spec(name, device_type)
    if repeats is not None:
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        spec = replace(spec, repeats=repeats)
    extras = device_type == "cuda" if cuda_extras is None else cuda_extras
    pts = build_points(spec, max_model_len, extras)
    order = np.random.default_rng(seed).permutation(len(pts))
    return Grid(spec, tuple(pts[i] for i in order))

