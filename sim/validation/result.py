"""What a validation found: the real replay of each point beside its simulation, and the
documents `batchsim validate` writes from them (validation.json, the per-point tables).

`batchsim.profiler.real.validate` produces these from its replays; they hold plain tables and
numbers, so this module imports nothing from the profiler (the dependency runs profiler -> sim).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchsim.sim.validation.plan import SimPlan, SimPoint, WorkloadSpec


@dataclass
class RealPoint:
    """One load level replayed on the real engine: its tables and the executor's timings."""

    point: SimPoint
    metrics: dict[str, Any]
    requests: pd.DataFrame
    steps: pd.DataFrame
    wall_s: float  # from t=0 (first arrival) to the executor loop's end
    host_s: list[float]  # per device step: executor host time outside the step
    late_s: list[float]  # per sleep: how much later than asked the loop woke
    drift: dict[str, Any] | None = None  # profile points re-measured before and after the point

    def host_summary(self) -> dict[str, Any]:
        """Host time of the executor loop outside the steps, and how late sleeps woke up (device
        steps only; a CPU path's steps run in their own thread)."""
        host = np.asarray(self.host_s)
        steps = self.steps[self.steps["device"] == "gpu"]
        busy = float(steps["duration_s"].sum())
        late = np.asarray(self.late_s)
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


@dataclass
class ValidationResult:
    """Both halves of a validation: the simulated plan and the real replay of every point."""

    plan: SimPlan
    # what ran the real side: model, device, device_name, dtype, threads, build_s, versions
    engine: dict[str, Any]
    reals: list[RealPoint]

    def point_dir(self, load: float) -> str:
        return f"points/load-{load:g}"

    def document(self, command: str) -> dict[str, Any]:
        """validation.json: everything needed to read and to rerun the comparison."""
        import datetime as dt

        from batchsim.sim.validation.plan import SCHEMA, TARGET_METRICS, compare, error_summary

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
                "real_wall_s": real.wall_s,
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
        profile = plan.profile
        return {
            "schema": SCHEMA, "schema_version": 1, "command": command,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "policy": spec.policy, "knobs": plan.points[0].sim.config["knobs"],
            "cpu_path": plan.points[0].sim.config.get("cpu_path"),  # hybrid: sources, assumed?
            "step_jitter": plan.points[0].sim.config.get("step_jitter"),  # None: off
            "profile": {**profile.summary(), "fingerprint": profile.fingerprint,
                        "cv_mape": {k: v.get("mape") for k, v in profile.cv.items()}},
            "engine": dict(self.engine),
            "workload": {**_workload_json(spec.workload), "seed": spec.seed,
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
        from batchsim.sim.validation.plan import scaled_profile, simulate_point

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


def _workload_json(workload: WorkloadSpec) -> dict[str, Any]:
    """The WorkloadSpec as recorded; trace_options only when a trace was read with some."""
    out = dataclasses.asdict(workload)
    if out.get("trace_options") is None:
        out.pop("trace_options", None)
    return out
