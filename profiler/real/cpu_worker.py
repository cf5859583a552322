"""The real executor's CPU path (hybrid policy): a CPU copy of the model prefills small prompts
beside the device engine and hands their KV to it.

Threads. The policy is not thread-safe and need not be: every policy call (through the serving
core, `batchsim.sim.server.Server`) stays on the executor's main thread, which also owns
the device engine and its KV pool. Only the CPU job runs in a worker thread: the CPU prefill on
the CPU engine, lifting its KV out of the CPU pool, and copying it to the device in the pool's
dtype (on CUDA: pinned pages, a side stream, synchronised before the job reports done). Torch
releases the GIL inside its kernels, so the CPU prefill and the device steps overlap for real.

Why the copy runs in the worker, not on the main thread: the simulator's CPU step is CPU prefill
+ KV copy on the CPU worker's own clock (`ExecutionPath.estimate_latency` adds `KVTransfer`),
and the GPU loop is never charged for it; a copy on the main thread would stall the device steps
and start late (after the device step in flight). The copy lands in a staging tensor on the
device, not in the pool: the policy takes the request's pool blocks only when it joins the
decodes (`Hybrid._join_handoffs`), possibly several steps later, so the pool must not hold them
before. At the join the main thread scatters the staged KV into the pool (`Engine.import_kv`, a
device-local copy) in its host time before the step, measured as `join_s`.

Times. A CPU step starts when the main thread submits it (right after `schedule_cpu`) and ends
when the worker has the KV on the device; that is the step's recorded duration and the first
token's time, as in the simulator. The main thread notices the end between device steps or while
sleeping (a threading.Event wakes it); the lag is reported per job (`notice_late_s`), since until
then the policy cannot use the CPU again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchsim.policies.base import Plan, Wait
from batchsim.profiler.engine.records import EngineChunk, EnginePlan

if TYPE_CHECKING:
    from batchsim.policies.request import Request
    from batchsim.profiler.engine.paged_engine import Engine, SequenceKV
    from batchsim.sim.server import Server


@dataclass
class CpuJob:
    """One CPU prefill + KV copy, filled in by the worker thread."""

    plan: Plan
    start_s: float  # submitted (main thread clock)
    predicted_s: float  # the CPU path's estimate (prefill + copy)
    prefill_s: float = math.nan  # CPU prefill + reading the KV out of the CPU pool
    copy_s: float = math.nan  # dtype conversion + copy to the device (staging)
    cpu_time_s: float = math.nan  # the worker thread's CPU time (wall minus waiting for a core)
    end_s: float = math.nan
    kv: SequenceKV | None = None
    error: BaseException | None = None

    @property
    def request(self) -> Request:
        return self.plan.prefills[0].request


class CpuWorker:
    """Runs one CPU job at a time in a thread; knows nothing of the policy."""

    def __init__(self, engine: Engine, device_engine: Engine, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.device = device_engine.device
        self.dtype = device_engine.dtype
        self.clock = clock
        self.done = threading.Event()  # set when the job in flight finished (or failed)
        self.job: CpuJob | None = None  # submitted and not yet taken
        self._thread: threading.Thread | None = None

    def submit(self, job: CpuJob, prompt: Sequence[int]) -> None:
        assert self.job is None, "the CPU worker runs one job at a time"
        self.job = job
        self.done.clear()
        self._thread = threading.Thread(target=self._run, args=(job, prompt),
                                        name="batchsim-cpu-path", daemon=True)
        self._thread.start()

    def take(self) -> CpuJob | None:
        """The finished job (re-raising its error here), or None if none finished."""
        if self.job is None or not self.done.is_set():
            return None
        assert self._thread is not None
        self._thread.join()
        job, self.job, self._thread = self.job, None, None
        if job.error is not None:
            raise RuntimeError(f"the CPU path failed on request {job.request.id}") from job.error
        return job

    def _run(self, job: CpuJob, prompt: Sequence[int]) -> None:
        try:
            import torch

            cpu0 = time.thread_time()
            sid = job.request.index
            self.engine.add(sid, prompt)
            self.engine.step(EnginePlan(prefills=[EngineChunk(sid, 0, len(prompt))]))
            kv = self.engine.export_kv(sid)
            self.engine.free(sid)
            t_copy = self.clock()
            job.prefill_s = t_copy - job.start_s
            if self.device.type == "cuda":
                stream = torch.cuda.Stream(self.device)
                with torch.cuda.stream(stream):
                    job.kv = kv.to(self.device, self.dtype, non_blocking=True)
                stream.synchronize()
            else:
                job.kv = kv.to(self.device, self.dtype)
            job.end_s = self.clock()
            job.copy_s = job.end_s - t_copy
            job.cpu_time_s = time.thread_time() - cpu0
        except BaseException as e:  # handed to the main thread by take()
            job.error = e
        finally:
            self.done.set()


@dataclass
class CpuRunner:
    """The main thread's side of the CPU path: asks the server, submits, collects, joins."""

    server: Server
    worker: CpuWorker
    prompts: Sequence[Sequence[int]]
    generated: list[int]  # per request, shared with the executor
    staged: dict[int, SequenceKV] = field(default_factory=dict)  # copied, not yet joined
    jobs: list[dict[str, Any]] = field(default_factory=list)  # per CPU step, in start order
    join_s: list[float] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        """A job is in flight or finished and not yet collected."""
        return self.worker.job is not None

    def collect(self, now_s: float) -> None:
        """Account for a finished CPU job, if any (its one token)."""
        job = self.worker.take()
        if job is None:
            return
        assert job.kv is not None
        events = self.server.end_cpu(job.plan, job.start_s, job.end_s - job.start_s)
        request = job.request
        self.generated[request.index] += 1
        if not any(r is request for r, _ in events.finished):
            self.staged[request.index] = job.kv
        self.jobs.append({"request": request.index, "start_s": job.start_s,
                          "duration_s": job.end_s - job.start_s, "predicted_s": job.predicted_s,
                          "prefill_s": job.prefill_s, "copy_s": job.copy_s,
                          "cpu_time_s": job.cpu_time_s, "copy_bytes": job.kv.nbytes,
                          "notice_late_s": now_s - job.end_s})

    def start(self, now: Callable[[], float]) -> None:
        """If the worker is idle, ask the server for its next CPU step and submit it."""
        if self.busy:
            return
        decision = self.server.decide_cpu(now())
        if isinstance(decision, Wait):
            return
        assert len(decision.prefills) == 1, decision
        chunk = decision.prefills[0]
        prompt = self.prompts[chunk.request.index]
        assert chunk.start == 0 and chunk.num_tokens == len(prompt), chunk
        start = now()
        predicted = self.server.begin_cpu(decision, start)
        self.worker.submit(CpuJob(decision, start, predicted), prompt)

    def join(self, plan: Plan, engine: Engine) -> None:
        """Before a device step: put the staged KV of requests joining the decodes (or being
        preempted right away) into the device pool, as the policy has taken their blocks."""
        for r in (*plan.decodes, *plan.preempted):
            kv = self.staged.pop(r.index, None)
            if kv is None:
                continue
            t0 = self.worker.clock()
            engine.import_kv(r.index, kv)
            if engine.device.type == "cuda":
                import torch

                torch.cuda.synchronize(engine.device)
            self.join_s.append(self.worker.clock() - t0)

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the CPU job finishes or timeout_s passes (inf: no timeout); True if the
        job finished."""
        return self.worker.done.wait(None if math.isinf(timeout_s) else timeout_s)
