"""Grid cost models from a StepComposer: per phase, a sum of small tables whose knots are the
measured tables' own keys, so between knots multilinear interpolation follows the composition
(which interpolates the tables piecewise-linearly along the same keys) closely.

    prefill: F(num_tokens) + S(num_seqs) + A_pre(num_prefill_tokens, prefill_prefix)
    decode:  G(num_decode_seqs) + A_dec(num_decode_seqs, decode_ctx_mean)
    mixed:   F(num_tokens) + S(num_seqs) + A_mix(num_prefill_tokens, prefill_prefix,
                                               num_decode_seqs, decode_ctx_mean)

F = once + layers + experts + all-reduces (everything by token count), S = lm_head + sampler,
G = F + S at num_tokens = num_seqs = decodes, A = the layers' attention (with skew correction).
"""

from __future__ import annotations

from itertools import product

import numpy as np

from batchsim.profiler.imported.compose import StepComposer
from batchsim.sim.grid_cost_model import GridCostModel, GridTerm, monotone_tail

_TOKEN_PARTS = ("once", "layers", "moe", "allreduce")


def _knots(values: object) -> tuple[float, ...]:
    return tuple(sorted({float(v) for v in values}))  # type: ignore[attr-defined]


def _round(values: np.ndarray) -> tuple[float, ...]:
    # 6 significant digits: far below the tables' own noise, a third of the JSON
    return tuple(float(f"{v:.6g}") for v in monotone_tail(values).ravel())


class GridBuilder:
    """The knots of every axis, read off a composer's tables, and the per-phase models."""

    def __init__(self, c: StepComposer) -> None:
        self.c = c
        dense_keys = {k for keys, _ in c.dense.values() for k in keys}
        self.tokens = _knots(dense_keys | ({1.0} if not dense_keys else set()))
        self.seqs = _knots({k for keys, _ in c.per_sequence.values() for k in keys})
        self.pc = _knots(c.attn_prefill.axis_keys(0))
        self.kp = _knots(set(c.attn_prefill.axis_keys(1)) | set(c.attn_decode.axis_keys(2)))
        self.nd = _knots(c.attn_decode.axis_keys(1))
        kv = set(c.attn_decode.axis_keys(3))
        self.kv = _knots(kv)
        # the skew correction reads t(max), max = (1 + spread) * mean: its breakpoints too
        spread = 1.0 + c.decode_spread
        self.kv_decode = _knots(kv | {k / spread for k in kv if k / spread >= min(kv)})
        # the skew buckets change at the n bins: knots between the table's decode counts
        self.nd_decode = _knots(set(self.nd) | {float(round(a * 1.5)) for a in self.nd
                                                if a >= 2})
        self.mix_pc = _knots({0.0, *c.attn_decode.axis_keys(0)})

    def _token_part(self, tokens: float) -> float:
        from batchsim.policies.base import StepShape

        b = self.c.breakdown(StepShape(1, int(tokens), 0, 0, 0))
        return sum(b[p] for p in _TOKEN_PARTS)

    def _seq_part(self, seqs: float) -> float:
        from batchsim.profiler.imported.tables import interp1

        return sum(interp1(k, v, max(seqs, 1.0)) for k, v in self.c.per_sequence.values())

    def _attn(self, pc: float, kp: float, nd: float, mean: float) -> float:
        spread = self.c.decode_spread * mean
        return self.c.attention(pc, kp, nd, mean, mean - spread, mean + spread) * \
            self.c.config.num_layers

    def _term(self, coords: tuple[str, ...], knots: tuple[tuple[float, ...], ...],
              fn: object) -> GridTerm:
        values = np.array([fn(*p) for p in product(*knots)])  # type: ignore[operator]
        return GridTerm(coords, knots, _round(values.reshape([len(k) for k in knots])))

    def models(self) -> dict[str, GridCostModel]:
        """packed.prefill, packed.decode, packed.mixed."""
        f = self._term(("num_tokens",), (self.tokens,), self._token_part)
        s = self._term(("num_seqs",), (self.seqs,), self._seq_part)
        a_pre = self._term(("num_prefill_tokens", "prefill_prefix"), (self.pc, self.kp),
                           lambda pc, kp: self._attn(pc, kp, 0.0, 0.0))
        g_knots = _knots(set(self.tokens) | set(self.seqs))
        g = self._term(("num_decode_seqs",), (g_knots,),
                       lambda n: self._token_part(n) + self._seq_part(n))
        a_dec = self._term(("num_decode_seqs", "decode_ctx_mean"),
                           (self.nd_decode, self.kv_decode),
                           lambda nd, kv: self._attn(0.0, 0.0, nd, kv))
        a_mix = self._term(
            ("num_prefill_tokens", "prefill_prefix", "num_decode_seqs", "decode_ctx_mean"),
            (self.mix_pc, self.kp, self.nd, self.kv), self._attn)
        return {"packed.prefill": GridCostModel((f, s, a_pre)),
                "packed.decode": GridCostModel((g, a_dec)),
                "packed.mixed": GridCostModel((f, s, a_mix))}
