"""Validation, the torch-free half: workloads per load level, capacity, the comparison table.

`batchsim validate` runs one policy on the same requests twice per load level: in the simulator
(the clock advances by the profile's cost model) and on the real engine (the wall clock), both
driven by the same policy class and recorded by the same `batchsim.sim.recorder.Recorder`. Whatever
the
two disagree on is the cost model's error, not a scheduler mismatch.

Load levels are fractions of the capacity the profile predicts for the policy. **Capacity** is
the throughput of a simulation of the validation's own requests all arriving at t=0: the server
is never idle for lack of work, so the policy's batch limits and the cost model set the pace,
and capacity = completed requests / makespan (req/s). With fewer requests than the policy's
batch limit it is the capacity at the batch those requests make; the drain at the end (the
last, partly filled batches) lowers it a little, so a load of 1.0 is at or just below
saturation.

Every load level replays the same requests (same lengths, same seeded arrival pattern), with
inter-arrival gaps divided by the level's request rate: the base workload has a mean rate of
1 req/s (a trace is rescaled to it), and load L sends L * capacity req/s.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchsim.sim.atomic import atomic_dir
from batchsim.sim.cost_model import CostModel
from batchsim.sim.csv_table import write_csv
from batchsim.sim.errors import UsageError
from batchsim.sim.grid_cost_model import GridCostModel
from batchsim.sim.outputs import json_safe
from batchsim.sim.profile import Profile, StepCostModel
from batchsim.sim.run import Prepared, RunOutput, RunSpec, prepare_workload, simulate
from batchsim.sim.workload.synthetic import SyntheticSpec, synthesize
from batchsim.sim.workload.traces import load_trace
from batchsim.sim.workload.transform import TraceOptions
from batchsim.sim.workload.workload import Workload, WorkloadError

SCHEMA = "batchsim.validation"
DEFAULT_LOADS = (0.5, 0.8, 0.95)

# Compared metrics: (name in validation.json / csv, key path into a metrics.json dict).
_DIST = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "queue_ms")
METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("request_throughput", ("request_throughput",)),
    ("output_token_throughput", ("output_token_throughput",)),
    *((f"{d}.{s}", (d, s)) for d in _DIST for s in ("mean", "median", "p90", "p99")),
    ("gpu_busy_fraction", ("gpu_busy_fraction",)),
    ("mean_batch_size", ("mean_batch_size",)),
    ("preemptions", ("preemptions",)),
)
METRIC_NAMES: tuple[str, ...] = tuple(name for name, _ in METRICS)
# The metrics the accuracy target is stated on (docs/VALIDATION.md).
TARGET_METRICS = ("request_throughput", "e2el_ms.mean", "e2el_ms.p99")


@dataclass(frozen=True)
class WorkloadSpec:
    """The validation's requests: a trace, or vllm-bench-style synthetic lengths."""

    trace: str | None = None
    trace_options: TraceOptions | None = None  # how the trace is read (format, window, filters)
    num_requests: int = 40
    input_len: int = 64
    output_len: int = 32
    range_ratio: float = 0.0
    burstiness: float = 1.0  # gamma shape of the gaps; 1 = Poisson
    lengths_from: str | None = None
    prefix_len: int = 0  # shared system prompt (SyntheticSpec)
    num_prefix_groups: int = 0

    def synthetic(self, request_rate: float = math.inf) -> SyntheticSpec:
        return SyntheticSpec(num_requests=self.num_requests, request_rate=request_rate,
                             burstiness=self.burstiness, input_len=self.input_len,
                             output_len=self.output_len, range_ratio=self.range_ratio,
                             lengths_from=self.lengths_from, prefix_len=self.prefix_len,
                             num_prefix_groups=self.num_prefix_groups)


@dataclass(frozen=True)
class ValidationSpec:
    policy: str
    profile: str
    knobs: Mapping[str, Any] = field(default_factory=dict)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    loads: tuple[float, ...] = DEFAULT_LOADS
    seed: int = 0
    cpu_profile: str | None = None  # hybrid: CPU profile whose packed.prefill is the CPU path
    kv_copy_gbps: float | None = None  # hybrid: ASSUMED CPU->GPU KV copy bandwidth (GB/s)
    kv_copy_latency_us: float = 0.0
    # The simulated side draws step-time jitter from the profile's repeats (sim.jitter) and
    # averages every metric over this many draws: the model's expected value, not one sample.
    step_jitter: bool = True
    jitter_replicas: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.jitter_replicas <= 1000:
            raise UsageError(f"jitter replicas must be from 1 to 1000, got {self.jitter_replicas}")
        if not self.loads:
            raise ValueError("--loads needs at least one load level")
        bad = [x for x in self.loads if not 0 < x <= 2]
        if bad:
            raise ValueError(f"load levels are fractions of capacity in (0, 2], got {bad}")


def parse_loads(text: str) -> tuple[float, ...]:
    """'0.5,0.8,0.95' -> (0.5, 0.8, 0.95)."""
    try:
        loads = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--loads takes comma-separated fractions like 0.5,0.8, got {text!r}"
                         ) from None
    if not loads:
        raise ValueError(f"--loads takes comma-separated fractions like 0.5,0.8, got {text!r}")
    return loads


# -- workloads ----------------------------------------------------------------------------------


def base_workload(spec: WorkloadSpec, seed: int) -> Workload:
    """The validation's requests with arrivals at a mean rate of 1 req/s."""
    if spec.trace is not None:
        trace = load_trace(spec.trace, options=spec.trace_options)
        n = len(trace)
        span = float(trace.arrival_s[-1] - trace.arrival_s[0])
        if n < 2 or span <= 0:
            raise WorkloadError(f"{spec.trace}: all requests arrive at once, so the trace has no "
                                "rate to scale to a load level; use a synthetic workload")
        arrival = (trace.arrival_s - trace.arrival_s[0]) * ((n - 1) / span)
        return dataclasses.replace(trace, arrival_s=arrival)
    rng = np.random.default_rng(seed)
    work = synthesize(spec.synthetic(), rng)  # lengths; arrivals all 0
    b = spec.burstiness
    gaps = rng.gamma(shape=b, scale=1.0 / b, size=len(work))
    arrival = np.concatenate(([0.0], np.cumsum(gaps[:-1])))
    return dataclasses.replace(work, arrival_s=arrival,
                               source=f"synthetic(burstiness={b:g}, n={len(work)})")


def at_rate(base: Workload, rate: float) -> Workload:
    """The base workload sent at `rate` req/s (inf: everything at t=0)."""
    arrival = np.zeros(len(base)) if math.isinf(rate) else base.arrival_s / rate
    return dataclasses.replace(base, arrival_s=arrival, source=f"{base.source} at {rate:.4g} req/s")


# -- one simulated point ------------------------------------------------------------------------


def prepare_point(spec: ValidationSpec, profile: Profile, base: Workload,
                  rate: float) -> Prepared:
    """A fresh policy and the base workload sent at `rate`, prepared as any run is
    (`batchsim.sim.run.prepare_workload`)."""
    ws = spec.workload
    run_spec = RunSpec(policy=spec.policy, knobs=dict(spec.knobs), profile=spec.profile,
                       trace=ws.trace, synthetic=None if ws.trace else ws.synthetic(rate),
                       seed=spec.seed, cpu_profile=spec.cpu_profile,
                       kv_copy_gbps=spec.kv_copy_gbps, kv_copy_latency_us=spec.kv_copy_latency_us,
                       step_jitter=spec.step_jitter)
    return prepare_workload(run_spec, profile, at_rate(base, rate))


def simulate_point(spec: ValidationSpec, profile: Profile, base: Workload,
                   rate: float) -> RunOutput:
    """The point simulated; with step jitter, its metrics are the mean over
    `spec.jitter_replicas` draws (the tables are the first draw's)."""
    first = simulate(prepare_point(spec, profile, base, rate))
    if not spec.step_jitter or spec.jitter_replicas == 1:
        return first
    others = [simulate(prepare_point(spec, profile, base, rate), jitter_seed_offset=k).metrics
              for k in range(1, spec.jitter_replicas)]
    metrics = mean_metrics([first.metrics, *others])
    first.config["step_jitter"]["replicas"] = spec.jitter_replicas
    return dataclasses.replace(first, metrics=metrics)


def mean_metrics(draws: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of metrics dicts of one shape; numbers averaged (None if any draw
    has None), anything else taken from the first."""
    out: dict[str, Any] = {}
    for key, value in draws[0].items():
        values = [d.get(key) for d in draws]
        if isinstance(value, Mapping):
            out[key] = mean_metrics([v if isinstance(v, Mapping) else {} for v in values])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            nums = [v for v in values if isinstance(v, (int, float))]
            out[key] = float(np.mean(nums)) if len(nums) == len(values) else None
        else:
            out[key] = value
    return out


def scaled_profile(profile: Profile, factor: float) -> Profile:
    """The profile with every step cost multiplied by `factor`: the same cost model on a machine
    `factor` times slower. Exact, because costs are maxima of non-negative linear terms plus a
    curve with non-negative slopes."""
    models: dict[str, StepCostModel] = {}
    for key, model in profile.cost_models.items():
        if isinstance(model, GridCostModel):
            models[key] = model.scaled(factor)
            continue
        curve = model.curve
        if curve is not None:
            curve = dataclasses.replace(curve, slopes=tuple(v * factor for v in curve.slopes))
        models[key] = CostModel(tuple(tuple(c * factor for c in term) for term in model.terms),
                                curve)
    return dataclasses.replace(profile, cost_models=models, _by_shape={})


@dataclass(frozen=True)
class Capacity:
    request_rate: float  # req/s the profile predicts the policy sustains
    makespan_s: float  # of the all-at-t=0 simulation
    completed: int

    def to_json(self) -> dict[str, Any]:
        return {"request_rate": self.request_rate, "makespan_s": self.makespan_s,
                "completed": self.completed,
                "method": "simulated: every request at t=0, completed / makespan"}


def estimate_capacity(spec: ValidationSpec, profile: Profile, base: Workload) -> Capacity:
    out = simulate_point(spec, profile, base, math.inf)
    m = out.metrics
    if m["completed"] == 0 or m["duration_s"] <= 0:
        raise ValueError("the simulation at full load completed nothing: cannot estimate capacity")
    return Capacity(m["completed"] / m["duration_s"], m["duration_s"], m["completed"])


@dataclass
class SimPoint:
    load: float
    request_rate: float
    workload: Workload
    sim: RunOutput

    @property
    def predicted_s(self) -> float:
        """The simulated makespan: what the real point should take."""
        return float(self.sim.metrics["duration_s"]) + float(self.workload.arrival_s[0])


@dataclass
class SimPlan:
    """The simulated half of a validation, computed before any real work starts."""

    spec: ValidationSpec
    profile: Profile
    base: Workload  # the requests at 1 req/s; each point sends them at its own rate
    capacity: Capacity
    points: list[SimPoint]

    @property
    def predicted_s(self) -> float:
        return sum(p.predicted_s for p in self.points)


def plan_validation(spec: ValidationSpec, profile: Profile) -> SimPlan:
    """Capacity, then every load level simulated (seconds of CPU, no torch)."""
    base = base_workload(spec.workload, spec.seed)
    capacity = estimate_capacity(spec, profile, base)
    points = []
    for load in spec.loads:
        rate = load * capacity.request_rate
        points.append(SimPoint(load, rate, at_rate(base, rate),
                               simulate_point(spec, profile, base, rate)))
    return SimPlan(spec, profile, base, capacity, points)


# -- comparison ---------------------------------------------------------------------------------


def metric_value(metrics: Mapping[str, Any], path: Sequence[str]) -> float | None:
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


def relative_error(real: float | None, sim: float | None) -> float | None:
    """Signed (sim - real) / real; 0 when both are 0; None when undefined."""
    if real is None or sim is None or not (math.isfinite(real) and math.isfinite(sim)):
        return None
    if real == 0:
        return 0.0 if sim == 0 else None
    return (sim - real) / real


def compare(real: Mapping[str, Any], sim: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{metric: {real, sim, rel_error}} over METRICS."""
    out = {}
    for name, path in METRICS:
        r, s = metric_value(real, path), metric_value(sim, path)
        out[name] = {"real": r, "sim": s, "rel_error": relative_error(r, s)}
    return out


def error_summary(comparisons: Sequence[Mapping[str, Mapping[str, Any]]]
                  ) -> dict[str, dict[str, Any]]:
    """Per metric across points: MAPE, median and max absolute relative error, points counted."""
    out = {}
    for name in METRIC_NAMES:
        errs = [abs(c[name]["rel_error"]) for c in comparisons
                if c[name]["rel_error"] is not None]
        out[name] = {
            "mape": float(np.mean(errs)) if errs else None,
            "median_abs_error": float(np.median(errs)) if errs else None,
            "max_abs_error": float(np.max(errs)) if errs else None,
            "num_points": len(errs),
        }
    return out


def point_label(point: Mapping[str, Any]) -> str:
    """A point's name in tables: its load level, or its label (an observed run's point)."""
    return str(point.get("label") or f"{point['load']:g}")


def validation_table(points: Sequence[Mapping[str, Any]],
                     summary: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """validation.csv: one row per (load, metric), then one 'all' row per metric with MAPE."""
    rows = []
    for p in points:
        for name in METRIC_NAMES:
            c = p["comparison"][name]
            rows.append({"load": point_label(p), "request_rate": p["request_rate"],
                         "metric": name, "real": c["real"], "sim": c["sim"],
                         "rel_error": c["rel_error"], "mape": None})
    for name in METRIC_NAMES:
        rows.append({"load": "all", "request_rate": None, "metric": name, "real": None,
                     "sim": None, "rel_error": None, "mape": summary[name]["mape"]})
    return pd.DataFrame(rows)


def format_error_table(doc: Mapping[str, Any],
                       metrics: Sequence[str] = (
                           "request_throughput", "ttft_ms.mean", "ttft_ms.p99", "tpot_ms.mean",
                           "itl_ms.p99", "e2el_ms.mean", "e2el_ms.p99", "queue_ms.mean",
                           "gpu_busy_fraction", "mean_batch_size"),
                       label: Callable[[str], str] | None = None) -> str:
    """Plain-text table: metric rows, real / sim / error per load, then MAPE. label: a
    metric's row name (the CLI's `TTFT mean (ms)`); default its key (`ttft_ms.mean`)."""
    points = doc["points"]
    names = {name: label(name) if label is not None else name for name in metrics}
    width = max(24, *(len(n) + 2 for n in names.values()))
    head = f"{'metric':<{width}}" + "".join(
        f"{(p.get('label') or 'load ' + format(p['load'], 'g')):>30}" for p in points
    ) + f"{'MAPE':>8}"
    sub = f"{'':<{width}}" + "".join(f"{'real':>10}{'sim':>10}{'err':>10}" for _ in points)
    lines = [head, sub]
    for name in metrics:
        row = f"{names[name]:<{width}}"
        for p in points:
            c = p["comparison"][name]
            row += f" {_num(c['real']):>9} {_num(c['sim']):>9} {_pct(c['rel_error']):>9}"
        mape = doc["errors"][name]["mape"]
        lines.append(row + f"{'n/a' if mape is None else f'{mape * 100:.1f}%':>8}")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


# -- the run folder -----------------------------------------------------------------------------


VALIDATION_FILES = ("validation.json",)  # what an existing validation folder holds


def write_validation(out: Path, doc: Mapping[str, Any], tables: Mapping[str, pd.DataFrame],
                     jsons: Mapping[str, Any],
                     report: Callable[[Path], object] | None = None) -> None:
    """validation.json, validation.csv, per-point tables (relative paths) and the report,
    assembled in a temporary sibling folder and renamed into place (nothing half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, "folder", VALIDATION_FILES) as tmp:
        (tmp / "validation.json").write_text(json.dumps(json_safe(doc), indent=2,
                                                         allow_nan=False) + "\n")
        validation_table(doc["points"], doc["errors"]).to_csv(
            tmp / "validation.csv", index=False, float_format="%.6g")
        for rel, df in tables.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            write_csv(df, tmp / rel)
        for rel, data in jsons.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(json.dumps(json_safe(data), indent=2, allow_nan=False)
                                   + "\n")
        if report is not None:
            report(tmp)
