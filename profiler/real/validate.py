"""`batchsim validate`, the real half: rebuild the profiled engine and replay each load level.

``batchsim.sim.validation.plan.plan_validation`` has already simulated every point; here the model
the profile
names is rebuilt exactly (same preset or config, dtype, threads, device), each point's requests
are replayed on it by ``batchsim.profiler.real.executor.RealExecutor`` with the same policy class
and knobs,
and both sides are summarised by ``batchsim.sim.metrics.summarize``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batchsim.policies.kv import blocks_for
from batchsim.profiler.real.drift import References, bracket, measure_drift, reference_points
from batchsim.profiler.real.drift import blocks_needed as drift_blocks
from batchsim.profiler.real.executor import RealExecutor, RealResult, random_prompts
from batchsim.sim.run import outputs
from batchsim.sim.validation.plan import SimPlan, SimPoint, prepare_point
from batchsim.sim.validation.result import RealPoint, ValidationResult

if TYPE_CHECKING:
    from batchsim.profiler.engine.paged_engine import Engine
    from batchsim.profiler.engine.static_engine import StaticEngine
    from batchsim.sim.profile import Profile

logger = logging.getLogger(__name__)

REAL_SOURCE = "real engine"  # metrics.json "profile_source" of the real side


@dataclass(frozen=True)
class EngineSpec:
    """What the real side rebuilds: the profile's model, on its device, dtype and threads."""

    model: str  # preset name, config.json or checkpoint directory
    device: str
    dtype: str
    threads: int | None
    seed: int


def engine_spec(profile: Profile, model: str | None, device: str | None) -> EngineSpec:
    """Check that the engine can be rebuilt as profiled; ValueError with one line if not."""
    import torch

    from batchsim.profiler.engine.models import config_hash, resolve_model

    fp = profile.fingerprint
    if profile.source != "measured":
        raise ValueError(f"{profile.path}: a {profile.source} profile was not measured on an "
                         "engine; validate needs a profile made by `batchsim profile`")
    name = str(profile.model.get("name"))
    spec = model or name
    try:
        resolved = resolve_model(spec)
    except ValueError:
        raise ValueError(f"{profile.path} was measured on model {name!r}, which is not a preset: "
                         "pass --model with its config.json or checkpoint directory") from None
    if fp.get("config_hash") and config_hash(resolved.config) != fp["config_hash"]:
        raise ValueError(f"--model {spec} is not the model {profile.path} was measured on "
                         f"({name}, config hash {str(fp['config_hash'])[:12]})")
    profiled = str(fp.get("device_type") or "cpu")
    dev = device or profiled
    dev_type = "cuda" if dev.startswith("cuda") else dev
    if dev_type != profiled:
        raise ValueError(f"{profile.path} was measured on {profiled}; validating on {dev} would "
                         f"compare different hardware: use --device {profiled}")
    if dev_type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {dev}: CUDA is not available here")
    if dev_type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {dev!r}: use cuda or cpu")
    threads = fp.get("threads")
    # weights are random unless a checkpoint is named: their values do not change step cost
    return EngineSpec(spec, dev, str(fp.get("dtype") or "float32"),
                      int(threads) if dev_type == "cpu" and threads else None, seed=0)


@dataclass
class ValidationEngines:
    """The engines one validation needs, built once (before any point) and warmed up."""

    spec: EngineSpec
    paged: Engine | None = None
    static: StaticEngine | None = None
    cpu: Engine | None = None  # hybrid: the CPU path's copy of the model (same seed: same weights)
    build_s: float = 0.0
    versions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: EngineSpec, packed_blocks: int, block_size: int,
              padded: bool, cpu_blocks: int = 0) -> ValidationEngines:
        """packed_blocks: paged pool size (0: no paged engine); padded: build the static one;
        cpu_blocks: the CPU path's pool (0: no CPU engine; it holds one prompt at a time)."""
        import torch
        import transformers

        from batchsim.profiler.engine.paged_engine import Engine
        from batchsim.profiler.engine.static_engine import StaticEngine
        from batchsim.profiler.profiling.engines import (
            CPU_DTYPE,
            warm_packed,
            warm_packed_blocks,
            warm_static,
        )

        t0 = time.perf_counter()
        out = cls(spec, versions={"torch": torch.__version__,
                                  "transformers": transformers.__version__})
        warm_blocks = warm_packed_blocks(block_size)  # the pools also hold the warm-up's steps
        if packed_blocks:
            out.paged = Engine(spec.model, device=spec.device, dtype=spec.dtype, seed=spec.seed,
                               num_blocks=max(packed_blocks, warm_blocks), block_size=block_size)
            warm_packed(out.paged)
        if cpu_blocks:
            out.cpu = Engine(spec.model, device="cpu", dtype=CPU_DTYPE, seed=spec.seed,
                             num_blocks=max(cpu_blocks, warm_blocks), block_size=block_size)
            warm_packed(out.cpu)
        if padded:
            out.static = StaticEngine(spec.model, device=spec.device, dtype=spec.dtype,
                                      seed=spec.seed)
            warm_static(out.static)
        out.build_s = time.perf_counter() - t0
        return out

    def facts(self) -> dict[str, Any]:
        """validation.json's "engine": what ran the real side, as plain values."""
        from batchsim.profiler.profiling.host import device_name

        spec = self.spec
        return {"model": spec.model, "device": spec.device,
                "device_name": device_name(spec.device), "dtype": spec.dtype,
                "threads": spec.threads, "build_s": self.build_s, **self.versions}

    @property
    def vocab_size(self) -> int:
        engine = self.paged or self.static
        assert engine is not None
        return engine.info.vocab_size


def engines_needed(plan: SimPlan) -> tuple[int, int, bool]:
    """(paged pool blocks, block size, static engine?) from the simulated steps.

    The pool must hold whatever the policy may allocate: its own capacity bounds it, and so do
    the requests themselves (every request resident at once).
    """
    layouts = set()
    for p in plan.points:
        layouts |= set(p.sim.steps["layout"].astype(str).unique())
    policy = plan.points[0].sim.config  # resolved config of the first point
    block_size = int(policy["kv_block_size"])
    blocks = 0
    if "packed" in layouts:
        work = plan.points[0].workload
        per_request = [blocks_for(int(n), block_size)
                       for n in work.input_tokens + work.output_tokens]
        blocks = min(int(policy["kv_capacity_blocks"]), sum(per_request)) + 1
    return blocks, block_size, "padded" in layouts


def cpu_engine_blocks(plan: SimPlan) -> int:
    """CPU engine pool of a policy with a CPU path: its longest prompt (one at a time); else 0."""
    from batchsim.policies.registry import get_policy

    if "cpu" not in get_policy(plan.spec.policy).paths:
        return 0
    block_size = int(plan.points[0].sim.config["kv_block_size"])
    longest = int(plan.points[0].workload.input_tokens.max())
    return blocks_for(longest, block_size) + 1  # ValidationEngines.build adds the warm-up's


def replay_point(point: SimPoint, plan: SimPlan, engines: ValidationEngines,
              progress: Callable[[int], None] | None = None,
              refs: References | None = None) -> RealPoint:
    """Replay one simulated point on the real engines (measuring drift before and after it,
    given refs)."""
    spec = plan.spec
    before = measure_drift(refs, engines.paged, engines.static) if refs is not None else None
    prep = prepare_point(spec, plan.profile, plan.base, point.request_rate)
    assert np.array_equal(prep.workload.arrival_s, point.workload.arrival_s), "not the sim's"
    prompts = random_prompts(prep.workload, engines.vocab_size, spec.seed)
    executor = RealExecutor(prep.policy, prep.workload, prompts, engines.paged, engines.static,
                            plan.profile, progress, cpu_engine=engines.cpu,
                            cpu_costs=prep.cpu_costs)
    gc.collect()  # not in the middle of a point
    result = executor.run()
    requests, steps, metrics = outputs(result.recorder, result.requests, prep.policy,
                                       REAL_SOURCE)
    requests["generated_tokens"] = result.generated
    _add_step_columns(steps, result)
    _release(engines)
    drift = None
    if refs is not None and before is not None:
        drift = bracket(before, measure_drift(refs, engines.paged, engines.static, seed=1))
        _release(engines)
    return RealPoint(point, metrics, requests, steps, result.wall_s, result.host_s,
                     result.late_s, drift)


def _add_step_columns(steps: pd.DataFrame, result: RealResult) -> None:
    """The executor's per-step measurements beside the recorder's rows: device steps in order,
    and (hybrid) the CPU path's steps from its jobs: the CPU path's prediction, the worker
    thread's CPU time, and the KV copy's share of the step."""
    gpu = (steps["device"] == "gpu").to_numpy()
    jobs = result.cpu_jobs
    for name, values, cpu_key in (("predicted_s", result.predicted_s, "predicted_s"),
                                  ("host_s", result.host_s, None),
                                  ("cpu_s", result.cpu_s, "cpu_time_s")):
        column = np.full(len(steps), np.nan)
        column[gpu] = values
        if jobs and cpu_key is not None:
            column[~gpu] = [job[cpu_key] for job in jobs]
        steps[name] = column
    if jobs:
        column = np.full(len(steps), np.nan)
        column[~gpu] = [job["copy_s"] for job in jobs]
        steps["kv_copy_s"] = column


def _release(engines: ValidationEngines) -> None:
    """Drop what a point left behind (all sequences finish, but be safe)."""
    for engine in (engines.paged, engines.cpu):
        if engine is not None:
            for sid in list(engine.seq_ids):
                engine.free(sid)


def with_threads(threads: int | None, fn: Callable[[], Any]) -> Any:
    """Run fn with torch's intra-op thread count set as the profile was measured."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def run_validation(plan: SimPlan, spec: EngineSpec,
                   progress: Callable[[int], None] | None = None,
                   check_drift: bool = True) -> ValidationResult:
    """Build the engines and replay every point (progress: requests done over all points).

    check_drift: before each point, re-measure a few of the profile's grid points (seconds)."""

    def go() -> ValidationResult:
        blocks, block_size, padded = engines_needed(plan)
        refs = (reference_points(plan.profile.path, bool(blocks), padded) if check_drift
                else None)
        if blocks and refs is not None:  # room for the reference steps too
            blocks = max(blocks, drift_blocks(refs, block_size) + 1)
        engines = ValidationEngines.build(spec, blocks, block_size, padded, cpu_engine_blocks(plan))
        reals: list[RealPoint] = []
        done = 0
        for point in plan.points:
            def point_progress(n: int, base: int = done) -> None:
                if progress is not None:
                    progress(base + n)

            reals.append(replay_point(point, plan, engines, point_progress, refs))
            done += len(point.workload)
            logger.info("load %g: real %.1f s, predicted %.1f s", point.load,
                        reals[-1].wall_s, point.predicted_s)
        return ValidationResult(plan, engines.facts(), reals)

    return with_threads(spec.threads, go)
