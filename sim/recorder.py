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

Storage is typed arrays (`array.array`), not lists of Python objects: a million-request run
holds ~1M token segments and ~800k steps, which as tuples and floats cost hundreds of MB. A run
of identical steps (a fast-forwarded decode run) is one record with its repeat count; only its
per-step durations and KV use are per step, and rows are expanded only where a per-step table
is built or written (`steps_table`, `write_steps_csv`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batchsim.sim.csv_rows import Rows, fixed_fits
from batchsim.sim.samples import ItlSampleCache, SortedSample

if TYPE_CHECKING:
    from batchsim.policies.base import Plan, StepEvents
    from batchsim.policies.request import Request
    from batchsim.sim.workload.workload import Workload

PHASES = ("prefill", "decode", "mixed")
_PHASE_CODE = {name: code for code, name in enumerate(PHASES)}
LAYOUTS = ("packed", "padded")
_LAYOUT_CODE = {name: code for code, name in enumerate(LAYOUTS)}
DEVICES = ("gpu", "cpu")
_DEVICE_CODE = {name: code for code, name in enumerate(DEVICES)}
STEP_COLUMNS = ("step", "start_s", "duration_s", "phase", "layout", "device", "batch_size",
                "prefill_tokens", "decode_tokens", "kv_blocks_used", "kv_tokens_used")
_STATUS = np.asarray(["completed", "unfinished"], dtype=object)
_PATHS = np.asarray(["gpu", ""], dtype=object)
_CSV_CHUNK_ROWS = 16_384  # rows formatted at once: bounds the values and text in flight


def _numpy(values: array, dtype: type) -> np.ndarray:
    """A copy of a typed array as numpy (a copy: a view would stop the array from growing)."""
    if not values:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(values, dtype=dtype).copy()


def _shared(values: array, dtype: type) -> np.ndarray:
    """A typed array's items as numpy without a copy, for the tables of a finished recording:
    while the result lives the typed array cannot grow (BufferError), and later writes to it
    would show through."""
    if not values:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(values, dtype=dtype)


class Recorder(ItlSampleCache):
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
        # Typed arrays: setting one item per event costs what it costs on a list (several
        # times less than on numpy) at 8 bytes an item instead of a pointer plus a float object.
        self.first_sched_s = array("d", [nan]) * n
        self.first_token_s = array("d", [nan]) * n
        self.finish_s = array("d", [nan]) * n
        self.seg_start = array("q", [-1]) * n  # step of the open token segment's first token
        self.num_preemptions = array("q", [0]) * n
        self.reject_reason: dict[int, str] = {}
        self.reject_s: dict[int, float] = {}
        # Closed token segments, flat (first step, last step, request index)...: the request
        # produced a token in every step of the segment. Plus ITL samples across a preemption.
        self._segments = array("q")
        self.resume_gaps_s: list[float] = []
        self._last_token_end_s: dict[int, float] = {}
        # Steps, one record per run of identical steps: repeat count, start, and flat
        # (phase, layout, device, batch size, prefill tokens, decode tokens); per step only
        # the durations and KV use.
        self._run_k = array("q")
        self._run_start = array("d")
        self._run_shape = array("i")  # int32: half the bytes; a value past 2**31 raises
        self._durations = array("d")
        self._kv_blocks = array("q")
        self._kv_tokens = array("q")
        self._kv_cached = array("q")  # prefix caching: cached free blocks per step
        self.num_steps = 0
        self._last_end_s = 0.0
        self._steps: pd.DataFrame | None = None  # steps_table()'s, while no step was added
        self._itl: SortedSample | None = None  # itl_sample()'s, while no step was added

    def add_requests(self, num: int) -> None:
        """Room for num more requests (a server whose requests are not known in advance)."""
        nan = float("nan")
        self.first_sched_s.extend(array("d", [nan]) * num)
        self.first_token_s.extend(array("d", [nan]) * num)
        self.finish_s.extend(array("d", [nan]) * num)
        self.seg_start.extend(array("q", [-1]) * num)
        self.num_preemptions.extend(array("q", [0]) * num)
        self.num_requests += num

    def reject(self, request: Request, reason: str, now_s: float) -> None:
        self.reject_reason[request.index] = reason
        self.reject_s[request.index] = now_s

    @property
    def segments(self) -> list[tuple[int, int, int]]:
        """Closed token segments (first step, last step, request index), in closing order."""
        flat = self._segments.tolist()
        return list(zip(flat[0::3], flat[1::3], flat[2::3], strict=True))

    def run(self, plan: Plan, start_s: float, durations: Sequence[float],
            events: StepEvents) -> None:
        """Record a run of len(durations) steps of plan starting at start_s."""
        self._steps = self._itl = None
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
                self._segments.extend((self.seg_start[i], first - 1, i))
                self._last_token_end_s[i] = self._last_end_s
                self.seg_start[i] = -1
        for chunk in plan.prefills:
            i = chunk.request.index
            if self.first_sched_s[i] != self.first_sched_s[i]:  # NaN: unset (a first chunk)
                self.first_sched_s[i] = start_s
        for r, off in events.first_tokens:
            self.first_token_s[r.index] = ends[off]
            self.seg_start[r.index] = first + off
        for r, off in events.resumed:
            self.resume_gaps_s.append(ends[off] - self._last_token_end_s.pop(r.index))
            self.seg_start[r.index] = first + off
        for r, off in events.finished:
            self.finish_s[r.index] = ends[off]
            self._segments.extend((self.seg_start[r.index], first + off, r.index))
            self.seg_start[r.index] = -1
        shape = plan.shape
        self._run_k.append(k)
        self._run_start.append(start_s)
        self._run_shape.extend((_PHASE_CODE[shape.phase], _LAYOUT_CODE[plan.layout],
                                _DEVICE_CODE[plan.device], shape.num_seqs,
                                shape.num_prefill_tokens, shape.num_decode_seqs))
        self._durations.extend(durations)
        self._kv_blocks.extend(events.kv_blocks_used)
        self._kv_tokens.extend(events.kv_tokens_used)
        if events.kv_cached_blocks is not None:  # prefix caching only
            self._kv_cached.extend(events.kv_cached_blocks)
        self.num_steps += k
        self._last_end_s = ends[-1]

    def cpu_run(self, plan: Plan, start_s: float, duration_s: float,
                events: StepEvents) -> None:
        """Record one CPU prefill step: first tokens only, outside the GPU step sequence."""
        self._steps = self._itl = None
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

    def kv_cached_blocks(self) -> np.ndarray | None:
        """Cached free blocks per GPU step (prefix caching), None when not recorded."""
        return _numpy(self._kv_cached, np.int64) if self._kv_cached else None

    def _step_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(start_s, duration_s) of every step: run start + durations before it in the run."""
        dur = _numpy(self._durations, np.float64)
        if not self._run_k:
            return dur, dur
        ks = _numpy(self._run_k, np.int64)
        run_start = _numpy(self._run_start, np.float64)
        csum = np.cumsum(dur)
        first = np.cumsum(ks) - ks
        before = np.concatenate(([0.0], csum))[first]  # cumulative duration before each run
        ends = np.repeat(run_start - before, ks) + csum
        return ends - dur, dur

    def _shape_column(self, i: int) -> np.ndarray:
        """Per run, item i of its shape: phase, layout, device codes, batch size, prefill
        tokens, decode tokens. One column copied, not the whole (runs x 6) record."""
        # the buffer view lives only in this expression, so the typed array may grow again
        return np.frombuffer(self._run_shape, np.int32)[i::6].astype(np.int64)

    def step_columns(self, names: Sequence[str] = STEP_COLUMNS) -> dict[str, np.ndarray]:
        """The steps table's numeric columns as arrays, CPU rows included in the table's order
        (phase, layout, device as codes into PHASES, LAYOUTS, DEVICES), without building it:
        what the summary metrics need. names: the columns wanted (each costs 8 bytes a step,
        8 MB at a million requests)."""
        coded = ("phase", "layout", "device")
        if self.cpu_steps:
            table = self.steps_table()
            return {name: (table[name].cat.codes.to_numpy().astype(np.int64) if name in coded
                           else table[name].to_numpy()) for name in names}
        ks = _numpy(self._run_k, np.int64)
        out: dict[str, np.ndarray] = {}
        if "start_s" in names or "duration_s" in names:
            out["start_s"], out["duration_s"] = self._step_times()
        for i, name in enumerate((*coded, "batch_size", "prefill_tokens", "decode_tokens")):
            if name in names:
                out[name] = np.repeat(self._shape_column(i), ks)
        for name, values in (("kv_blocks_used", self._kv_blocks),
                             ("kv_tokens_used", self._kv_tokens)):
            if name in names:
                out[name] = _numpy(values, np.int64)
        if "step" in names:
            out["step"] = np.arange(self.num_steps)
        return {name: out[name] for name in names}

    # -- tables ---------------------------------------------------------------------------------

    def steps_table(self) -> pd.DataFrame:
        """One row per step (CPU steps merged in start order). Built once per recorded state:
        the run's outputs, its metrics and its report share it."""
        if self._steps is not None:
            return self._steps
        start, dur = self._step_times()
        ks = _numpy(self._run_k, np.int64)

        def column(i: int) -> np.ndarray:
            return np.repeat(self._shape_column(i), ks)

        def categorical(i: int, names: tuple[str, ...]) -> pd.Categorical[str]:
            # codes, not strings: a million-step run would otherwise build a million str objects
            return pd.Categorical.from_codes(column(i), categories=pd.Index(list(names)))

        table = pd.DataFrame({
            "step": np.arange(self.num_steps),
            "start_s": start,
            "duration_s": dur,
            "phase": categorical(0, PHASES),
            "layout": categorical(1, LAYOUTS),
            "device": categorical(2, DEVICES),
            "batch_size": column(3),
            "prefill_tokens": column(4),
            "decode_tokens": column(5),
            "kv_blocks_used": _numpy(self._kv_blocks, np.int64),
            "kv_tokens_used": _numpy(self._kv_tokens, np.int64),
        })
        if self._kv_cached:
            # free blocks holding a cached prefix (evictable), with enable_prefix_caching
            table["kv_cached_blocks"] = _numpy(self._kv_cached, np.int64)
        self._steps = self._with_cpu_steps(table) if self.cpu_steps else table
        return self._steps

    def step_frame(self, names: Sequence[str]) -> pd.DataFrame:
        """steps_table()[names] (those of them a steps table has), without building the rest of
        the table unless it is built already: a report reads half the columns of a table that
        costs ~55 MB at a million requests."""
        if self._steps is not None or self.cpu_steps:
            table = self.steps_table()
            return table[[name for name in names if name in table]]
        wanted = [name for name in names if name in STEP_COLUMNS]
        columns: dict[str, Any] = dict(self.step_columns(wanted))
        for name, categories in (("phase", PHASES), ("layout", LAYOUTS), ("device", DEVICES)):
            if name in columns:  # as steps_table: codes, not a str object per step
                columns[name] = pd.Categorical.from_codes(columns[name],
                                                          categories=pd.Index(list(categories)))
        frame = pd.DataFrame(columns, copy=False)
        if "kv_cached_blocks" in names and self._kv_cached:
            frame["kv_cached_blocks"] = _numpy(self._kv_cached, np.int64)
        return frame

    def is_steps_table(self, steps: object) -> bool:
        """steps is this recorder's own steps_table() of its current state (so write_steps_csv
        writes exactly its rows)."""
        return self._steps is not None and steps is self._steps

    def write_steps_csv(self, path: Path) -> bool:
        """Write steps_table() as CSV (write_csv's bytes) from the run records, without the
        table: the columns that are constant along a run are formatted once per distinct run
        shape of each chunk of rows. False (nothing written) for a run with CPU steps, or times
        csv_rows cannot format: write_csv of the table handles those."""
        if self.cpu_steps:
            return False
        start, dur = self._step_times()
        if np.isnan(start).any() or np.isnan(dur).any():
            return False  # write_csv writes NaN as an empty field; never seen in steps
        ks = _numpy(self._run_k, np.int64)
        run_end = np.cumsum(ks)  # the step after each run
        kv_blocks = _numpy(self._kv_blocks, np.int64)
        kv_tokens = _numpy(self._kv_tokens, np.int64)
        columns: tuple[str, ...] = STEP_COLUMNS
        tail = [kv_blocks, kv_tokens]
        if self._kv_cached:  # prefix caching: the table's last column
            columns += ("kv_cached_blocks",)
            tail.append(_numpy(self._kv_cached, np.int64))
        if not (fixed_fits(start) and fixed_fits(dur)):
            return False  # infinite or huge times (never seen): write_csv's %-format path
        with open(path, "wb") as f:
            f.write((",".join(columns) + "\n").encode())
            for a in range(0, self.num_steps, _CSV_CHUNK_ROWS):
                b = min(a + _CSV_CHUNK_ROWS, self.num_steps)
                rows = Rows(b - a)
                rows.integer(np.arange(a, b))
                for times in (start, dur):
                    rows.const(b",")
                    rows.fixed(times[a:b])
                rows.const(b",")
                rows.text(*self._shape_fields(run_end, ks, a, b))
                for i, c in enumerate(tail):
                    if i:
                        rows.const(b",")
                    rows.integer(c[a:b])
                rows.const(b"\n")
                f.write(rows.tobytes())
        return True

    def _shape_fields(self, run_end: np.ndarray, ks: np.ndarray, a: int,
                      b: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps a..b-1's run-constant CSV fields ("phase,layout,device,batch,prefill,decode,"):
        (the distinct shapes among the chunk's runs, formatted once each as bytes; each step's
        index into them). Per chunk, not over the whole run: sorting every run's shape at once
        costs ~100 MB at a million requests."""
        r0, r1 = (int(np.searchsorted(run_end, step, side="right")) for step in (a, b - 1))
        flat = self._run_shape[6 * r0:6 * (r1 + 1)].tolist()
        first: dict[tuple[int, ...], int] = {}  # distinct shape -> its index, in first-seen order
        inverse = [first.setdefault(tuple(flat[j:j + 6]), len(first))
                   for j in range(0, len(flat), 6)]
        table = np.asarray([f"{PHASES[p]},{LAYOUTS[q]},{DEVICES[d]},{n},{m},{k},".encode()
                            for p, q, d, n, m, k in first], dtype=np.bytes_)
        # steps of each of those runs that fall in a..b-1
        ends = run_end[r0:r1 + 1]
        counts = np.minimum(ends, b) - np.maximum(ends - ks[r0:r1 + 1], a)
        return table, np.repeat(np.asarray(inverse, dtype=np.int64), counts)

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
        if "kv_cached_blocks" in gpu:
            cpu["kv_cached_blocks"] = np.zeros(k, dtype=np.int64)
        both = pd.concat([gpu, cpu], ignore_index=True)
        both = both.iloc[np.argsort(both["start_s"].to_numpy(), kind="stable")]
        both = both.reset_index(drop=True)
        both["step"] = np.arange(len(both))
        return both

    def requests_table(self, requests: Sequence[Request]) -> pd.DataFrame:
        """One row per request, in the order of `requests` (request i is requests[i])."""
        n = len(requests)
        # fromiter, not a list then an array: no million-item list in between
        return self._requests_table(
            [r.id for r in requests], [self.reject_reason.get(r.index, "") for r in requests],
            np.fromiter((r.arrival_s for r in requests), np.float64, n),
            np.fromiter((r.input_tokens for r in requests), np.int64, n),
            np.fromiter((r.output_tokens for r in requests), np.int64, n),
            np.fromiter((r.priority for r in requests), np.int64, n))

    def workload_table(self, workload: Workload) -> pd.DataFrame:
        """requests_table(workload.requests()) from the workload's columns, without the
        Request objects (the simulator's plain loop does not keep them)."""
        ids = workload.ids if workload.ids is not None else [str(i) for i in range(len(workload))]
        reason = [self.reject_reason.get(i, "") for i in range(len(workload))]
        # the workload's own arrays where they have the table's dtype: no copy (pandas copies
        # on write, so the table and the workload cannot change each other)
        return self._requests_table(ids, reason, np.asarray(workload.arrival_s, np.float64),
                                    np.asarray(workload.input_tokens, np.int64),
                                    np.asarray(workload.output_tokens, np.int64),
                                    np.asarray(workload.priority, np.int64))

    def _requests_table(self, ids: list[str], reason: list[str], arrival: np.ndarray,
                        in_tokens: np.ndarray, out_tokens: np.ndarray,
                        priority: np.ndarray) -> pd.DataFrame:
        """The table of requests_table; reason: each request's reject reason ("" if none).
        first_token_s, finish_s and preemptions share the recorder's arrays (24 MB at a million
        requests), so the table is built once recording is over (every caller does)."""
        first_sched = _shared(self.first_sched_s, np.float64)
        first_token = _shared(self.first_token_s, np.float64)
        finish = _shared(self.finish_s, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out_tokens > 1, (finish - first_token) / (out_tokens - 1), np.nan)
        # one str object per distinct value, not per request (astype(object) makes one each)
        status = _STATUS[np.where(np.isfinite(finish), 0, 1)]
        if self.reject_reason:
            status[np.array([bool(x) for x in reason])] = "rejected"
        table = pd.DataFrame({
            "id": ids,
            "arrival_s": arrival,
            "input_tokens": in_tokens,
            "output_tokens": out_tokens,
            "priority": priority,
            "status": status,
            "reject_reason": reason,
            "queue_ms": (first_sched - arrival) * 1e3,
            "ttft_ms": (first_token - arrival) * 1e3,
            "tpot_ms": tpot * 1e3,
            "e2el_ms": (finish - arrival) * 1e3,
            "first_token_s": first_token,
            "finish_s": finish,
            "preemptions": _shared(self.num_preemptions, np.int64),
        }, copy=False)  # no second copy of every column
        if self.prefill_paths:
            # where the request's (first) prefill ran; empty if it never ran
            path = _PATHS[np.where(np.isfinite(first_sched), 0, 1)]
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
        if self._segments:
            seg = _numpy(self._segments, np.int64)
            first, last = seg[0::3], seg[1::3]  # views: no filtered copy of every segment
            gapped = last > first
            weight += np.bincount(first[gapped] + 1, minlength=self.num_steps + 1)
            weight -= np.bincount(last[gapped] + 1, minlength=self.num_steps + 1)
        weight = np.cumsum(weight)[:-1]
        values = np.concatenate((gaps[weight > 0], self.resume_gaps_s))
        weights = np.concatenate((weight[weight > 0], np.ones(len(self.resume_gaps_s), np.int64)))
        return values, weights
