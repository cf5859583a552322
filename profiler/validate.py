"""`batchsim validate`, the real half: rebuild the profiled engine and replay each load level.

``sim.validation.plan_validation`` has already simulated every point; here the model the profile
names is rebuilt exactly (same preset or config, dtype, threads, device), each point's requests
are replayed on it by ``profiler.executor.RealExecutor`` with the same policy class and knobs,
and both sides are summarised by ``sim.metrics.summarize``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from policies.kv import blocks_for
from profiler.drift import References, measure_drift, reference_points
from profiler.drift import blocks_needed as drift_blocks
from profiler.executor import RealExecutor, RealResult, random_prompts
from sim.metrics import summarize
from sim.validation import SimPlan, SimPoint, prepare_point

if TYPE_CHECKING:
    from profiler.engine import Engine
    from profiler.static_engine import StaticEngine
    from sim.profile import Profile

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

    from profiler.models import config_hash, resolve_model

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
class Engines:
    """The engines one validation needs, built once (before any point) and warmed up."""

    spec: EngineSpec
    paged: Engine | None = None
    static: StaticEngine | None = None
    cpu: Engine | None = None  # hybrid: the CPU path's copy of the model (same seed: same weights)
    build_s: float = 0.0
    versions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: EngineSpec, packed_blocks: int, block_size: int,
              padded: bool, cpu_blocks: int = 0) -> Engines:
        """packed_blocks: paged pool size (0: no paged engine); padded: build the static one;
        cpu_blocks: the CPU path's pool (0: no CPU engine; it holds one prompt at a time)."""
        import torch
        import transformers

        from profiler.engine import Engine
        from profiler.engines import CPU_DTYPE, warm_static
        from profiler.static_engine import StaticEngine

        t0 = time.perf_counter()
        out = cls(spec, versions={"torch": torch.__version__,
                                  "transformers": transformers.__version__})
        if packed_blocks:
            out.paged = Engine(spec.model, device=spec.device, dtype=spec.dtype, seed=spec.seed,
                               num_blocks=packed_blocks, block_size=block_size)
            _warm_paged(out.paged)
        if cpu_blocks:

            out.cpu = Engine(spec.model, device="cpu", dtype=CPU_DTYPE, seed=spec.seed,
                             num_blocks=cpu_blocks, block_size=block_size)
            _warm_paged(out.cpu)
        if padded:
            out.static = StaticEngine(spec.model, device=spec.device, dtype=spec.dtype,
                                      seed=spec.seed)
            warm_static(out.static)
        out.build_s = time.perf_counter() - t0
        return out

    @property
    def vocab_size(self) -> int:
        engine = self.paged or self.static
        assert engine is not None
        return engine.info.vocab_size


def _warm_paged(engine: Engine) -> None:
    """A few untimed steps: the first steps of a shape pay for allocation and kernel choice."""
    from profiler.engine_types import EnginePlan, PrefillChunk

    for _ in range(2):
        for i in range(2):
            engine.add(("warm", i), [1] * 32)
        engine.step(EnginePlan(prefills=[PrefillChunk(("warm", i), 0, 32) for i in range(2)]))
        engine.step(EnginePlan(decodes=[("warm", i) for i in range(2)]))
        for i in range(2):
            engine.free(("warm", i))


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


def cpu_path_blocks(plan: SimPlan) -> int:
    """CPU engine pool of a policy with a CPU path: its longest prompt (one at a time); else 0."""
    from policies.registry import get_policy

    if "cpu" not in get_policy(plan.spec.policy).paths:
        return 0
    block_size = int(plan.points[0].sim.config["kv_block_size"])
    longest = int(plan.points[0].workload.input_tokens.max())
    warm_up = 2 * blocks_for(33, block_size)  # _warm_paged: two 32-token prompts, one decode
    return max(blocks_for(longest, block_size) + 1, warm_up)


@dataclass
class RealPoint:
    point: SimPoint
    result: RealResult
    metrics: dict[str, Any]
    requests: pd.DataFrame
    steps: pd.DataFrame
    drift: dict[str, Any] | None = None  # profile points re-measured before and after the point

    def host_summary(self) -> dict[str, Any]:
        """Host time of the executor loop outside the steps, and how late sleeps woke up (device
        steps only; a CPU path's steps run in their own thread)."""
        host = np.asarray(self.result.host_s)
        steps = self.steps[self.steps["device"] == "gpu"]
        busy = float(steps["duration_s"].sum())
        late = np.asarray(self.result.late_s)
        return {
            "per_step_mean_s": float(host.mean()) if len(host) else 0.0,
            "per_step_median_s": float(np.median(host)) if len(host) else 0.0,
            "per_step_p99_s": float(np.percentile(host, 99)) if len(host) else 0.0,
            "total_s": float(host.sum()),
            "share_of_step_time": float(host.sum() / busy) if busy else 0.0,
            "num_steps": len(host),
            "sleep_late_mean_s": float(late.mean()) if len(late) else 0.0,
            # steps' wall / thread CPU time: 1 on an idle core (one torch thread); more when
            # other processes took the core, or when torch used more threads than this one
            "step_wall_over_cpu": (busy / float(steps["cpu_s"].sum())
                                   if float(steps["cpu_s"].sum()) > 0 else None),
        }

    def step_cost_level(self) -> float | None:
        """Sum of the real device steps' durations over the sum of the profile's predictions for
        exactly those shapes: how much slower (> 1) the machine ran this point than the profile
        says, measured on the point itself. Scaling the simulation by it removes the cost
        model's level error and leaves scheduling, queueing and the cost model's shape."""
        steps = self.steps[self.steps["device"] == "gpu"]
        predicted = float(steps["predicted_s"].sum())
        return float(steps["duration_s"].sum()) / predicted if predicted > 0 else None

    def step_prediction_error(self) -> dict[str, Any]:
        """Cost-model error on the steps that really ran (shape for shape), by phase."""
        df = self.steps[self.steps["device"] == "gpu"]
        cpu = self.steps[self.steps["device"] == "cpu"]  # the CPU path: prefill + KV copy
        out: dict[str, Any] = {}
        for phase, g in [("all", df), *df.groupby(["layout", "phase"], observed=True),
                         ("cpu.packed.prefill", cpu)]:
            if not len(g):
                continue
            key = phase if isinstance(phase, str) else ".".join(map(str, phase))
            err = (g["predicted_s"] - g["duration_s"]) / g["duration_s"]
            # against the thread's CPU time: the error an idle core would show (CPU, 1 thread)
            err_cpu = (g["predicted_s"] - g["cpu_s"]) / g["cpu_s"]
            out[key] = {"num_steps": len(g), "mean_signed_error": float(err.mean()),
                        "mape": float(err.abs().mean()),
                        "mean_signed_error_vs_cpu": float(err_cpu.mean()),
                        "real_total_s": float(g["duration_s"].sum()),
                        "cpu_total_s": float(g["cpu_s"].sum()),
                        "predicted_total_s": float(g["predicted_s"].sum())}
        return out


def run_point(point: SimPoint, plan: SimPlan, engines: Engines,
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
                            plan.profile, progress, cpu_engine=engines.cpu, cpu=prep.cpu)
    gc.collect()  # not in the middle of a point
    result = executor.run()
    rec = result.recorder
    requests = rec.requests_table(result.requests)
    requests["generated_tokens"] = result.generated
    steps = rec.steps_table()
    _add_step_columns(steps, result)
    metrics = summarize(rec, requests, steps, prep.policy.kv_capacity_blocks, REAL_SOURCE)
    _release(engines)
    drift = None
    if refs is not None and before is not None:
        drift = bracket(before, measure_drift(refs, engines.paged, engines.static, seed=1))
        _release(engines)
    return RealPoint(point, result, metrics, requests, steps, drift)


def bracket(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The drift over a point from measurements just before and just after it: `ratio` is the
    geometric mean of the two (None if either is), `points` both sets, marked by `when`."""
    rb, ra = before["ratio"], after["ratio"]
    return {"ratio": math.sqrt(rb * ra) if rb and ra else None, "before": rb, "after": ra,
            "clock": before["clock"],
            "points": [{**r, "when": "before"} for r in before["points"]]
            + [{**r, "when": "after"} for r in after["points"]]}


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


def _release(engines: Engines) -> None:
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


@dataclass
class ValidationResult:
    """Both halves of a validation: the simulated plan and the real replay of every point."""

    plan: SimPlan
    engines: Engines
    reals: list[RealPoint]

    def point_dir(self, load: float) -> str:
        return f"points/load-{load:g}"

    def document(self, command: str) -> dict[str, Any]:
        """validation.json: everything needed to read and to rerun the comparison."""
        import datetime as dt

        from profiler.host import device_name
        from sim.validation import SCHEMA, TARGET_METRICS, compare, error_summary

        plan, spec = self.plan, self.plan.spec
        points: list[dict[str, Any]] = []
        for real in self.reals:
            p = real.point
            adjusted = self._drift_adjusted(real)
            level = real.step_cost_level()
            matched = self._scaled(real, level) if level else None
            points.append({
                "load": p.load, "request_rate": p.request_rate,
                "num_requests": len(p.workload), "predicted_s": p.predicted_s,
                "real_wall_s": real.result.wall_s,
                "comparison": compare(real.metrics, p.sim.metrics),
                "host_overhead": real.host_summary(),
                "step_prediction": real.step_prediction_error(),
                "machine_drift": real.drift,
                # diagnostic: the simulation with every step cost times the measured drift
                "comparison_drift_adjusted": (compare(real.metrics, adjusted.metrics)
                                              if adjusted is not None else None),
                # diagnostic, not a prediction: step costs times the real run's own level
                "step_cost_level": level,
                "comparison_level_matched": (compare(real.metrics, matched.metrics)
                                             if matched is not None else None),
                "folder": self.point_dir(p.load),
            })
        errors = error_summary([p["comparison"] for p in points])
        es = self.engines.spec
        profile = plan.profile
        return {
            "schema": SCHEMA, "schema_version": 1, "command": command,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "policy": spec.policy, "knobs": plan.points[0].sim.config["knobs"],
            "cpu_path": plan.points[0].sim.config.get("cpu_path"),  # hybrid: sources, assumed?
            "step_jitter": plan.points[0].sim.config.get("step_jitter"),  # None: off
            "profile": {**profile.summary(), "fingerprint": profile.fingerprint,
                        "cv_mape": {k: v.get("mape") for k, v in profile.cv.items()}},
            "engine": {"model": es.model, "device": es.device, "device_name": device_name(
                es.device), "dtype": es.dtype, "threads": es.threads, "build_s":
                self.engines.build_s, **self.engines.versions},
            "workload": {**dataclasses.asdict(spec.workload), "seed": spec.seed,
                         "base": plan.points[0].workload.source.split(" at ")[0]},
            "capacity": plan.capacity.to_json(),
            "loads": list(spec.loads),
            "points": points,
            "errors": errors,
            "target": {m: errors[m]["median_abs_error"] for m in TARGET_METRICS},
            "errors_drift_adjusted": (
                error_summary([p["comparison_drift_adjusted"] for p in points])
                if all(p["comparison_drift_adjusted"] for p in points) else None),
            "errors_level_matched": (
                error_summary([p["comparison_level_matched"] for p in points])
                if all(p["comparison_level_matched"] for p in points) else None),
        }

    def _drift_adjusted(self, real: RealPoint) -> Any:
        """The point simulated on the profile scaled by the machine drift measured around it."""
        ratio = (real.drift or {}).get("ratio")
        return self._scaled(real, ratio) if ratio else None

    def _scaled(self, real: RealPoint, factor: float) -> Any:
        from sim.validation import scaled_profile, simulate_point

        plan = self.plan
        return simulate_point(plan.spec, scaled_profile(plan.profile, factor), plan.base,
                              real.point.request_rate)

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {}
        for real in self.reals:
            d = self.point_dir(real.point.load)
            out[f"{d}/real/requests.csv"] = real.requests
            out[f"{d}/real/steps.csv"] = real.steps
            out[f"{d}/sim/requests.csv"] = real.point.sim.requests
            out[f"{d}/sim/steps.csv"] = real.point.sim.steps
        return out

    def jsons(self) -> dict[str, Any]:
        out = {}
        for real in self.reals:
            d = self.point_dir(real.point.load)
            out[f"{d}/real/metrics.json"] = real.metrics
            out[f"{d}/sim/metrics.json"] = real.point.sim.metrics
        return out


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
        engines = Engines.build(spec, blocks, block_size, padded, cpu_path_blocks(plan))
        reals: list[RealPoint] = []
        done = 0
        for point in plan.points:
            def point_progress(n: int, base: int = done) -> None:
                if progress is not None:
                    progress(base + n)

            reals.append(run_point(point, plan, engines, point_progress, refs))
            done += len(point.workload)
            logger.info("load %g: real %.1f s, predicted %.1f s", point.load,
                        reals[-1].result.wall_s, point.predicted_s)
        return ValidationResult(plan, engines, reals)

    return with_threads(spec.threads, go)
