"""Collects what happened: one row per executed step, one row per request.

Shared by the simulated and the real executor, so both sides define every metric the same way.
Work is per event (arrival, first token, finish, preemption) and per step, never per token:
a request that decodes in every step of a contiguous segment has its inter-token latencies
reconstructed from the step end times at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from policies.base import Plan, StepEvents
    from policies.request import Request

PHASES = ("prefill", "decode", "mixed")


class Recorder:
    def __init__(self, num_requests: int) -> None:
        n = num_requests
        nan = np.full(n, np.nan)
        self.first_sched_s = nan.copy()
        self.first_token_s = nan.copy()
        self.finish_s = nan.copy()
        self.seg_start = np.full(n, -1, dtype=np.int64)  # step of the open token segment's 1st token
        self.num_preemptions = np.zeros(n, dtype=np.int64)
        self.reject_reason: dict[int, str] = {}
        self.reject_s: dict[int, float] = {}
        # Closed token segments (first step, last step, request index): the request produced a
        # token in every step of the segment. Plus ITL samples spanning a preemption.
        self.segments: list[tuple[int, int, int]] = []
        self.resume_gaps_s: list[float] = []
        self._last_token_end_s: dict[int, float] = {}
        # Step columns.
        self.step_start_s: list[float] = []
        self.step_duration_s: list[float] = []
        self.step_phase: list[int] = []
        self.step_layout: list[str] = []
        self.step_device: list[str] = []
        self.step_num_seqs: list[int] = []
        self.step_prefill_tokens: list[int] = []
        self.step_decode_tokens: list[int] = []
        self.step_kv_blocks: list[int] = []
        self.step_kv_tokens: list[int] = []
        self.num_steps = 0
        self._last_end_s = 0.0

    def reject(self, request: Request, reason: str, now_s: float) -> None:
        self.reject_reason[request.index] = reason
        self.reject_s[request.index] = now_s

    def run(self, plan: Plan, start_s: float, durations: Sequence[float],
            events: StepEvents) -> None:
        """Record a run of len(durations) steps of plan starting at start_s."""
        k = len(durations)
        first = self.num_steps
        ends = start_s + np.cumsum(durations) if k > 1 else [start_s + durations[0]]
        for r in plan.preempted:
            i = r.index
            self.num_preemptions[i] += 1
            if self.seg_start[i] >= 0:  # it had been decoding: its last token was the prior step
                self.segments.append((int(self.seg_start[i]), first - 1, i))
                self._last_token_end_s[i] = self._last_end_s
                self.seg_start[i] = -1
        for chunk in plan.prefills:
            if chunk.start == 0 and np.isnan(self.first_sched_s[chunk.request.index]):
                self.first_sched_s[chunk.request.index] = start_s
        for r, off in events.first_tokens:
            self.first_token_s[r.index] = ends[off]
            self.seg_start[r.index] = first + off
        for r, off in events.resumed:
            self.resume_gaps_s.append(float(ends[off]) - self._last_token_end_s.pop(r.index))
            self.seg_start[r.index] = first + off
        for r, off in events.finished:
            self.finish_s[r.index] = ends[off]
            self.segments.append((int(self.seg_start[r.index]), first + off, r.index))
            self.seg_start[r.index] = -1
        shape = plan.shape
        phase = PHASES.index(shape.phase)
        if k == 1:
            self.step_start_s.append(start_s)
        else:
            self.step_start_s.extend((ends - np.asarray(durations)).tolist())
        self.step_duration_s.extend(durations if k == 1 else np.asarray(durations).tolist())
        self.step_phase.extend([phase] * k)
        self.step_layout.extend([plan.layout] * k)
        self.step_device.extend([plan.device] * k)
        self.step_num_seqs.extend([shape.num_seqs] * k)
        self.step_prefill_tokens.extend([shape.num_prefill_tokens] * k)
        self.step_decode_tokens.extend([shape.num_decode_seqs] * k)
        self.step_kv_blocks.extend(events.kv_blocks_used)
        self.step_kv_tokens.extend(events.kv_tokens_used)
        self.num_steps += k
        self._last_end_s = float(ends[-1])

    # -- tables ---------------------------------------------------------------------------------

    def steps_table(self) -> pd.DataFrame:
        return pd.DataFrame({
            "step": np.arange(self.num_steps),
            "start_s": self.step_start_s,
            "duration_s": self.step_duration_s,
            "phase": pd.Categorical.from_codes(self.step_phase, categories=list(PHASES)),
            "layout": self.step_layout,
            "device": self.step_device,
            "batch_size": self.step_num_seqs,
            "prefill_tokens": self.step_prefill_tokens,
            "decode_tokens": self.step_decode_tokens,
            "kv_blocks_used": self.step_kv_blocks,
            "kv_tokens_used": self.step_kv_tokens,
        })

    def requests_table(self, requests: Sequence[Request]) -> pd.DataFrame:
        arrival = np.array([r.arrival_s for r in requests])
        out_tokens = np.array([r.output_tokens for r in requests])
        ttft = self.first_token_s - arrival
        e2el = self.finish_s - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out_tokens > 1, (self.finish_s - self.first_token_s) / (out_tokens - 1),
                            np.nan)
        reason = [self.reject_reason.get(r.index, "") for r in requests]
        return pd.DataFrame({
            "id": [r.id for r in requests],
            "arrival_s": arrival,
            "input_tokens": [r.input_tokens for r in requests],
            "output_tokens": out_tokens,
            "priority": [r.priority for r in requests],
            "status": ["rejected" if x else "completed" if np.isfinite(f) else "unfinished"
                       for x, f in zip(reason, self.finish_s, strict=True)],
            "reject_reason": reason,
            "queue_ms": (self.first_sched_s - arrival) * 1e3,
            "ttft_ms": ttft * 1e3,
            "tpot_ms": tpot * 1e3,
            "e2el_ms": e2el * 1e3,
            "first_token_s": self.first_token_s,
            "finish_s": self.finish_s,
            "preemptions": self.num_preemptions,
        })

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(values_s, weights): every inter-token latency, grouped by step.

        A segment (a, b) is a run of steps a..b in each of which the request produced a token,
        so it contributes the gaps end[s] - end[s-1] for s in a+1..b.
        """
        ends = np.asarray(self.step_start_s) + np.asarray(self.step_duration_s)
        gaps = np.diff(ends, prepend=np.nan)
        weight = np.zeros(self.num_steps + 1, dtype=np.int64)
        if self.segments:
            seg = np.asarray(self.segments, dtype=np.int64)
            seg = seg[seg[:, 1] > seg[:, 0]]
            np.add.at(weight, seg[:, 0] + 1, 1)
            np.add.at(weight, seg[:, 1] + 1, -1)
        weight = np.cumsum(weight)[:-1]
        values = np.concatenate((gaps[weight > 0], self.resume_gaps_s))
        weights = np.concatenate((weight[weight > 0], np.ones(len(self.resume_gaps_s), np.int64)))
        return values, weights
