"""Collects what happened: one row per executed step, one row per request.

Shared by the simulated and the real executor, so both sides define every metric the same way.
Work is per event (arrival, first token, finish, preemption) and per step, never per token:
a request that decodes in every step of a contiguous segment has its inter-token latencies
reconstructed from the step end times at the end.

With a CPU path (hybrid policy) CPU steps run beside GPU steps: they are kept apart (`cpu_run`)
so that step indexes, token segments and inter-token gaps stay those of the GPU sequence; a CPU
prefill's token is the request's first, and the gap to its first GPU token is recorded like the
gap across a preemption. The tables then gain a per-request `prefill_path` column and CPU rows
(device "cpu") in the steps table, merged in start-time order.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from batchsim.policies.base import Plan, StepEvents
    from batchsim.policies.request import Request

PHASES = ("prefill", "decode", "mixed")
_PHASE_CODE = {name: code for code, name in enumerate(PHASES)}
LAYOUTS = ("packed", "padded")
_LAYOUT_CODE = {name: code for code, name in enumerate(LAYOUTS)}
DEVICES = ("gpu", "cpu")
_DEVICE_CODE = {name: code for code, name in enumerate(DEVICES)}


class Recorder:
    def __init__(self, num_requests: int, prefill_paths: bool = False) -> None:
        """prefill_paths: the policy has a CPU path, so record which path prefilled each
        request (the `prefill_path` column and the per-path metrics)."""
        n = self.num_requests = num_requests
        self.prefill_paths = prefill_paths
        # CPU steps (start_s, duration_s, num_seqs, prefill_tokens, kv_blocks, kv_tokens) and
        # the requests whose first token a CPU step produced (one token each).
        self.cpu_steps: list[tuple[float, float, int, int, int, int]] = []
        self.cpu_tokens: list[int] = []
        nan = float("nan")
        # Plain lists: setting one item per event is several times cheaper than on numpy.
        self.first_sched_s = [nan] * n
        self.first_token_s = [nan] * n
        self.finish_s = [nan] * n
        self.seg_start = [-1] * n  # step of the open token segment's first token, -1 = none
        self.num_preemptions = [0] * n
        self.reject_reason: dict[int, str] = {}
        self.reject_s: dict[int, float] = {}
        # Closed token segments (first step, last step, request index): the request produced a
        # token in every step of the segment. Plus ITL samples spanning a preemption.
        self.segments: list[tuple[int, int, int]] = []
        self.resume_gaps_s: list[float] = []
        self._last_token_end_s: dict[int, float] = {}
        # Steps, stored per run of identical steps and expanded by steps_table().
        self._runs: list[tuple[int, float, int, int, int, int, int, int]] = []
        self._durations: list[float] = []
        self._kv_blocks: list[int] = []
        self._kv_tokens: list[int] = []
        self.num_steps = 0
        self._last_end_s = 0.0

    def add_requests(self, num: int) -> None:
        """Room for num more requests (a server whose requests are not known in advance)."""
        nan = float("nan")
        self.first_sched_s += [nan] * num
        self.first_token_s += [nan] * num
        self.finish_s += [nan] * num
        self.seg_start += [-1] * num
        self.num_preemptions += [0] * num
        self.num_requests += num

    def reject(self, request: Request, reason: str, now_s: float) -> None:
        self.reject_reason[request.index] = reason
        self.reject_s[request.index] = now_s

    def run(self, plan: Plan, start_s: float, durations: list[float],
            events: StepEvents) -> None:
        """Record a run of len(durations) steps of plan starting at start_s."""
        k = len(durations)
        first = self.num_steps
        if k == 1:
            ends = [start_s + durations[0]]
        else:
            ends = list(accumulate(durations, initial=start_s))[1:]
        for r in plan.preempted:
            i = r.index
            self.num_preemptions[i] += 1
            if self.seg_start[i] >= 0:  # it had been decoding: its last token was the prior step
                self.segments.append((self.seg_start[i], first - 1, i))
                self._last_token_end_s[i] = self._last_end_s
                self.seg_start[i] = -1
        for chunk in plan.prefills:
            i = chunk.request.index
            if chunk.start == 0 and self.first_sched_s[i] != self.first_sched_s[i]:  # NaN: unset
                self.first_sched_s[i] = start_s
        for r, off in events.first_tokens:
            self.first_token_s[r.index] = ends[off]
            self.seg_start[r.index] = first + off
        for r, off in events.resumed:
            self.resume_gaps_s.append(ends[off] - self._last_token_end_s.pop(r.index))
            self.seg_start[r.index] = first + off
        for r, off in events.finished:
            self.finish_s[r.index] = ends[off]
            self.segments.append((self.seg_start[r.index], first + off, r.index))
            self.seg_start[r.index] = -1
        shape = plan.shape
        self._runs.append((k, start_s, _PHASE_CODE[shape.phase], _LAYOUT_CODE[plan.layout],
                           _DEVICE_CODE[plan.device],
                           shape.num_seqs, shape.num_prefill_tokens, shape.num_decode_seqs))
        self._durations.extend(durations)
        self._kv_blocks.extend(events.kv_blocks_used)
        self._kv_tokens.extend(events.kv_tokens_used)
        self.num_steps += k
        self._last_end_s = ends[-1]

    def cpu_run(self, plan: Plan, start_s: float, duration_s: float,
                events: StepEvents) -> None:
        """Record one CPU prefill step: first tokens only, outside the GPU step sequence."""
        end = start_s + duration_s
        for chunk in plan.prefills:
            i = chunk.request.index
            if self.first_sched_s[i] != self.first_sched_s[i]:  # NaN: unset
                self.first_sched_s[i] = start_s
        for r, _ in events.first_tokens:
            self.first_token_s[r.index] = end
            self._last_token_end_s[r.index] = end  # closed by its first GPU token (resumed)
            self.cpu_tokens.append(r.index)
        for r, _ in events.finished:
            self.finish_s[r.index] = end
            self._last_token_end_s.pop(r.index, None)
        shape = plan.shape
        self.cpu_steps.append((start_s, duration_s, shape.num_seqs, shape.num_prefill_tokens,
                               events.kv_blocks_used[0], events.kv_tokens_used[0]))

    def _step_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(start_s, duration_s) of every step: run start + durations before it in the run."""
        dur = np.asarray(self._durations, dtype=np.float64)
        if not self._runs:
            return dur, dur
        ks = np.array([run[0] for run in self._runs])
        run_start = np.array([run[1] for run in self._runs])
        csum = np.cumsum(dur)
        first = np.cumsum(ks) - ks
        before = np.concatenate(([0.0], csum))[first]  # cumulative duration before each run
        ends = np.repeat(run_start - before, ks) + csum
        return ends - dur, dur

    # -- tables ---------------------------------------------------------------------------------

    def steps_table(self) -> pd.DataFrame:
        start, dur = self._step_times()
        ks = [run[0] for run in self._runs]

        def column(i: int) -> np.ndarray:
            if not ks:
                return np.zeros(0, dtype=np.int64)
            return np.repeat(np.array([run[i] for run in self._runs]), ks)

        def categorical(i: int, names: tuple[str, ...]) -> pd.Categorical[str]:
            # codes, not strings: a million-step run would otherwise build a million str objects
            return pd.Categorical.from_codes(column(i), categories=pd.Index(list(names)))

        table = pd.DataFrame({
            "step": np.arange(self.num_steps),
            "start_s": start,
            "duration_s": dur,
            "phase": categorical(2, PHASES),
            "layout": categorical(3, LAYOUTS),
            "device": categorical(4, DEVICES),
            "batch_size": column(5),
            "prefill_tokens": column(6),
            "decode_tokens": column(7),
            "kv_blocks_used": np.asarray(self._kv_blocks, dtype=np.int64),
            "kv_tokens_used": np.asarray(self._kv_tokens, dtype=np.int64),
        })
        return self._with_cpu_steps(table) if self.cpu_steps else table

    def _with_cpu_steps(self, gpu: pd.DataFrame) -> pd.DataFrame:
        """GPU and CPU rows in start-time order (GPU first at a tie), renumbered. A CPU row's
        KV columns are its own request: the GPU blocks its hand-off will take, and its tokens."""
        rows = np.asarray(self.cpu_steps, dtype=np.float64).reshape(-1, 6)
        k = len(rows)

        def codes(names: tuple[str, ...], name: str) -> pd.Categorical[str]:
            return pd.Categorical.from_codes(np.full(k, names.index(name)),
                                             categories=pd.Index(list(names)))

        cpu = pd.DataFrame({
            "step": np.zeros(k, dtype=np.int64),
            "start_s": rows[:, 0],
            "duration_s": rows[:, 1],
            "phase": codes(PHASES, "prefill"),
            "layout": codes(LAYOUTS, "packed"),
            "device": codes(DEVICES, "cpu"),
            "batch_size": rows[:, 2].astype(np.int64),
            "prefill_tokens": rows[:, 3].astype(np.int64),
            "decode_tokens": np.zeros(k, dtype=np.int64),
            "kv_blocks_used": rows[:, 4].astype(np.int64),
            "kv_tokens_used": rows[:, 5].astype(np.int64),
        })
        both = pd.concat([gpu, cpu], ignore_index=True)
        both = both.iloc[np.argsort(both["start_s"].to_numpy(), kind="stable")]
        both = both.reset_index(drop=True)
        both["step"] = np.arange(len(both))
        return both

    def requests_table(self, requests: Sequence[Request]) -> pd.DataFrame:
        arrival = np.array([r.arrival_s for r in requests])
        out_tokens = np.array([r.output_tokens for r in requests])
        first_sched = np.asarray(self.first_sched_s)
        first_token = np.asarray(self.first_token_s)
        finish = np.asarray(self.finish_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out_tokens > 1, (finish - first_token) / (out_tokens - 1), np.nan)
        reason = [self.reject_reason.get(r.index, "") for r in requests]
        status = np.where(np.isfinite(finish), "completed", "unfinished").astype(object)
        rejected = np.array([bool(x) for x in reason])
        status[rejected] = "rejected"
        table = pd.DataFrame({
            "id": [r.id for r in requests],
            "arrival_s": arrival,
            "input_tokens": [r.input_tokens for r in requests],
            "output_tokens": out_tokens,
            "priority": [r.priority for r in requests],
            "status": status,
            "reject_reason": reason,
            "queue_ms": (first_sched - arrival) * 1e3,
            "ttft_ms": (first_token - arrival) * 1e3,
            "tpot_ms": tpot * 1e3,
            "e2el_ms": (finish - arrival) * 1e3,
            "first_token_s": first_token,
            "finish_s": finish,
            "preemptions": np.asarray(self.num_preemptions, dtype=np.int64),
        })
        if self.prefill_paths:
            # where the request's (first) prefill ran; empty if it never ran
            path = np.where(np.isfinite(first_sched), "gpu", "").astype(object)
            path[self.cpu_tokens] = "cpu"
            table["prefill_path"] = path
        return table

    def token_times_s(self, indexes: Sequence[int]) -> list[np.ndarray]:
        """Every token's time (end of the step that produced it) of each request in indexes,
        in order: a CPU-path first token, then its GPU token segments. For the per-request
        inter-token gaps a saved `vllm bench serve` result lists (np.diff of these)."""
        start, dur = self._step_times()
        ends = start + dur
        by_request: dict[int, list[np.ndarray]] = {}
        for first, last, i in sorted(self.segments, key=lambda seg: (seg[2], seg[0])):
            by_request.setdefault(i, []).append(ends[first:last + 1])
        on_cpu = set(self.cpu_tokens)
        out = []
        for i in indexes:
            parts = by_request.get(i, [])
            if i in on_cpu:
                parts = [np.array([self.first_token_s[i]]), *parts]
            out.append(np.concatenate(parts) if parts else np.zeros(0))
        return out

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(values_s, weights): every inter-token latency, grouped by step.

        A segment (a, b) is a run of steps a..b in each of which the request produced a token,
        so it contributes the gaps end[s] - end[s-1] for s in a+1..b.
        """
        start, dur = self._step_times()
        gaps = np.diff(start + dur, prepend=np.nan)
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
