"""Sweeps: the cartesian grid of configurations × loads, each point one simulation, in parallel.

A configuration is a policy plus knob values; a load is a request rate (synthetic arrivals), or
for a trace the mean rate it is replayed at (its arrival times rescaled). Every point is a
`batchsim.sim.run.prepare` + `simulate` of a `RunSpec`; only its summary metrics are kept, as one
row of the sweep table, so a 100-point sweep holds 100 rows, not 100 run folders. Points run in
worker processes (the simulator is single-threaded Python) or as Ray tasks; each point's
randomness comes from the sweep's one seed, so a point's result does not depend on which worker
ran it or in which order.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.atomic import atomic_dir
from batchsim.sim.checks import MAX_RATE
from batchsim.sim.cluster.spec import ClusterSpec, parse_replicas
from batchsim.sim.errors import UsageError
from batchsim.sim.outputs import json_safe
from batchsim.sim.run import RunSpec, prepare, simulate
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.sim.workload.traces import load_trace
from batchsim.sim.workload.transform import TraceOptions

Backend = Literal["local", "ray"]  # where the points run: local processes, or Ray tasks
BACKENDS: tuple[str, ...] = get_args(Backend)
MAX_POINTS = 10_000  # rates (or grid points) in one sweep
SWEEP_FILES = ("sweep.json", "sweep.csv")  # what an existing sweep folder holds
LATENCY_KEYS = ("ttft", "tpot", "itl", "e2el", "queue")
STATS = ("mean", "median", "p90", "p95", "p99")
SCALAR_KEYS = ("num_requests", "completed", "rejected", "duration_s", "request_throughput",
               "output_token_throughput", "total_token_throughput", "gpu_busy_fraction",
               "prefill_time_share", "mean_batch_size", "max_kv_utilization", "preemptions")


@dataclass(frozen=True)
class Configuration:
    """One policy with its varied knob values (strings, parsed by the policy's config)."""

    policy: str
    knobs: tuple[tuple[str, str], ...] = ()
    name: str = ""  # display name; default: policy and knobs

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return " ".join([self.policy, *(f"{k}={v}" for k, v in self.knobs)])


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep. `base` carries everything shared: profile, workload, seed, SLO, fixed knobs.

    rates are request rates in req/s (inf = all at t=0); with a trace, the mean rate to replay it
    at (empty: the trace as recorded, one load).
    """

    configurations: tuple[Configuration, ...]
    rates: tuple[float, ...]
    base: RunSpec
    assumptions: tuple[str, ...] = ()  # defaults the caller filled in, one sentence each

    def __post_init__(self) -> None:
        if not self.configurations:
            raise ValueError("a sweep needs at least one configuration")
        if self.base.trace is None and not self.rates:
            raise ValueError("a synthetic sweep needs --request-rate")


def parse_rates(text: str) -> tuple[float, ...]:
    """`1:40:10` = 10 rates from 1 to 40 inclusive (numpy.linspace); `1,5,inf` = a list."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        try:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            raise ValueError(f"--request-rate {text!r}: use START:STOP:COUNT (e.g. 1:40:10) or "
                             "a comma-separated list (e.g. 1,5,10,inf)") from None
        if len(parts) != 3 or not 0 < lo <= hi <= MAX_RATE or not 1 <= n <= MAX_POINTS or (
                n == 1 and lo != hi):
            raise UsageError(f"--request-rate {text!r}: need 0 < START <= STOP <= {MAX_RATE:g} "
                             f"and 2 <= COUNT <= {MAX_POINTS} (or COUNT 1 with START = STOP)")
        return tuple(float(x) for x in np.linspace(lo, hi, n))
    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--request-rate {text!r}: not a number list (e.g. 1,5,10,inf)") from None
    if not rates or any(not (0 < r <= MAX_RATE or r == math.inf) for r in rates):
        raise UsageError(f"--request-rate {text!r}: rates must be in (0, {MAX_RATE:g}] or inf")
    if len(rates) > MAX_POINTS:
        raise UsageError(f"--request-rate {text!r}: at most {MAX_POINTS} rates")
    return rates


def parse_vary(items: Sequence[str]) -> dict[str, list[str]]:
    """`max_num_seqs=8,16,32` (repeatable) -> {"max_num_seqs": ["8", "16", "32"]}."""
    vary: dict[str, list[str]] = {}
    for item in items:
        knob, sep, values = item.partition("=")
        knob = knob.strip().replace("-", "_")  # vLLM's spelling: max-num-seqs
        parsed = [v.strip() for v in values.split(",") if v.strip()] if sep else []
        if not knob or not parsed:
            raise ValueError(f"--vary takes KNOB=V1,V2,..., got {item!r}")
        if knob in vary:
            raise ValueError(f"--vary {knob} given twice")
        vary[knob] = parsed
    return vary


def expand(policies: Sequence[str], vary: Mapping[str, Sequence[str]]) -> list[Configuration]:
    """Every policy × every combination of the varied knob values (first knob slowest)."""
    size = len(policies) * math.prod(len(v) for v in vary.values())
    if size > MAX_POINTS:
        raise UsageError(f"the sweep has {size:,} configurations; at most {MAX_POINTS:,}: vary "
                         "fewer knob values")
    combos = list(itertools.product(*vary.values())) if vary else [()]
    return [Configuration(p, tuple(zip(vary, combo, strict=True)))
            for p in policies for combo in combos]


def trace_rate(trace: str, time_scale: float = 1.0, options: TraceOptions | None = None) -> float:
    """Mean request rate of a trace as recorded (requests per second of its span), after the
    options' window, filters and sampling: the rate of exactly the requests a point replays."""
    read = dataclasses.replace(options or TraceOptions(), time_scale=time_scale)
    workload = load_trace(trace, options=read)
    span = float(workload.arrival_s[-1] - workload.arrival_s[0]) if len(workload) else 0.0
    if len(workload) < 2 or span <= 0:
        raise ValueError(f"{trace}: a trace needs two or more arrival times to be rescaled to a "
                         "--request-rate")
    return (len(workload) - 1) / span


def point_spec(sweep: SweepSpec, config: Configuration, rate: float | None,
               native_rate: float | None = None) -> RunSpec:
    """The RunSpec of one grid point: base + the configuration's knobs + the load. The CPU
    path's options (--cpu-profile, --kv-copy-*) go only to policies that have a CPU path."""
    base = sweep.base
    if "cpu" not in get_policy(config.policy).paths:
        base = dataclasses.replace(base, cpu_profile=None, kv_copy_gbps=None,
                                   kv_copy_latency_us=0.0)
    knobs = {**base.knobs, **dict(config.knobs)}
    base = dataclasses.replace(base, cluster=point_cluster(base.cluster, knobs))
    if base.trace is not None:
        scale = base.time_scale
        if rate is not None:
            if math.isinf(rate):
                raise ValueError("--request-rate inf cannot rescale a trace: give finite rates")
            assert native_rate is not None, "rescaling a trace needs its recorded rate"
            scale = base.time_scale * native_rate / rate
        return dataclasses.replace(base, policy=config.policy, knobs=knobs, time_scale=scale)
    assert rate is not None, "a synthetic point has a request rate"
    synthetic = dataclasses.replace(base.synthetic or SyntheticSpec(), request_rate=rate)
    return dataclasses.replace(base, policy=config.policy, knobs=knobs, synthetic=synthetic)


CLUSTER_DIMENSIONS = ("replicas", "router")  # --vary names that are the cluster's, not knobs


def point_cluster(base: ClusterSpec | None, knobs: dict[str, Any]) -> ClusterSpec | None:
    """The point's cluster: `replicas` and `router` taken out of its knobs (sweep dimensions,
    or fixed with --replicas/--router in base); None for one replica."""
    given = {k: knobs.pop(k) for k in CLUSTER_DIMENSIONS if k in knobs}
    if not given:
        return base
    base = base or ClusterSpec()
    replicas = given.get("replicas", base.replicas)
    cluster = ClusterSpec(parse_replicas(replicas) if isinstance(replicas, str) else replicas,
                          str(given.get("router", base.router)), base.profiles)
    return cluster if cluster.replicas > 1 else None


def grid(sweep: SweepSpec) -> list[tuple[Configuration, float, RunSpec]]:
    """All points (configuration, request rate, spec), configuration-major.

    A trace sweep without rates has one load, the trace as recorded (its rate is the trace's).
    """
    base = sweep.base
    size = len(sweep.configurations) * max(1, len(sweep.rates))
    if size > MAX_POINTS:
        raise UsageError(f"the sweep has {size:,} points; at most {MAX_POINTS:,}: vary fewer "
                         "knob values or rates")
    native = (trace_rate(base.trace, base.time_scale, base.trace_options)
              if base.trace is not None else None)
    if not sweep.rates:
        assert native is not None, "a synthetic sweep has rates (checked by SweepSpec)"
        return [(c, native, point_spec(sweep, c, None)) for c in sweep.configurations]
    return [(c, r, point_spec(sweep, c, r, native))
            for c in sweep.configurations for r in sweep.rates]


def check(sweep: SweepSpec) -> list[tuple[Configuration, float, RunSpec]]:
    """Validate every configuration (knob names and values, workload limits) before any work."""
    points = grid(sweep)
    seen: set[Configuration] = set()
    for config, _, spec in points:
        if config not in seen:
            seen.add(config)
            make_config(spec.policy, dict(spec.knobs))
            prepare(spec)
    return points


def flatten(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json of a run -> one flat row (latencies as <metric>_<stat>_ms)."""
    row = {k: metrics[k] for k in SCALAR_KEYS}
    for key in LATENCY_KEYS:
        for stat in STATS:
            row[f"{key}_{stat}_ms"] = metrics[f"{key}_ms"][stat]
    if "goodput" in metrics:
        good = metrics["goodput"]["good_requests"]
        row["good_requests"] = good
        row["request_goodput"] = metrics["goodput"]["request_goodput"]
        row["slo_attainment"] = good / metrics["num_requests"] if metrics["num_requests"] else 0.0
    if "prefix_cache" in metrics:  # enable_prefix_caching: empty in rows without it
        cache = metrics["prefix_cache"]
        row["prefix_hit_rate"] = cache["hit_rate"]
        row["prefill_tokens_saved"] = cache["prefill_tokens_saved"]
    return row


def run_point(spec: RunSpec) -> dict[str, Any]:
    """Simulate one point and return its metrics row (runs in a worker process)."""
    return flatten(simulate(prepare(spec)).metrics)


def _worker_init() -> None:
    """In each worker: die with the parent (Linux), ignore the terminal's Ctrl-C (the parent
    handles it and stops the workers), and let SIGTERM kill quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the parent dies
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued points and kill the running workers at once (shutdown would wait)."""
    # the executor keeps no public handle on its processes; PDEATHSIG covers what this misses
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.kill()
    for process in workers:
        process.join(timeout=5)


def run_sweep(sweep: SweepSpec, workers: int | None = None,
              progress: Callable[[int], None] | None = None,
              points: Sequence[tuple[Configuration, float, RunSpec]] | None = None,
              backend: Backend = "local", address: str | None = None) -> pd.DataFrame:
    """Run every point -> the sweep table.

    backend "local": in `workers` processes (1 = in this process); "ray": as Ray tasks
    (sim.sweep.ray_backend; `address` is the cluster's, None a local instance), the same table.
    points: the result of check(sweep), if the caller already has it. Rows are in grid order
    whatever order the points finish in.
    """
    assert backend in BACKENDS, f"unknown sweep backend {backend!r}"
    points = check(sweep) if points is None else points
    workers = max(1, min(workers or os.cpu_count() or 1, len(points)))
    rows: list[dict[str, Any] | None] = [None] * len(points)
    if backend == "ray":
        from batchsim.sim.sweep.ray_backend import run_on_ray

        rows = list(run_on_ray(run_point, [spec for _, _, spec in points], address, progress))
    elif workers == 1:
        for i, (_, _, spec) in enumerate(points):
            rows[i] = run_point(spec)
            if progress:
                progress(i + 1)
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
        try:
            futures = {pool.submit(run_point, spec): i for i, (_, _, spec) in enumerate(points)}
            for done, future in enumerate(as_completed(futures), start=1):
                rows[futures[future]] = future.result()
                if progress:
                    progress(done)
        except BaseException:
            _stop(pool)  # Ctrl-C, SIGTERM or a failed point: no worker outlives the sweep
            raise
        pool.shutdown()
    varied = list(dict.fromkeys(k for c in sweep.configurations for k, _ in c.knobs))
    table = []
    for i, ((config, rate, spec), row) in enumerate(zip(points, rows, strict=True)):
        assert row is not None, f"point {i} has no result"
        knobs = dict(config.knobs)
        table.append({"point": i, "config": config.label, "policy": config.policy,
                      **{k: knobs.get(k) for k in varied},
                      "request_rate": rate,
                      "time_scale": spec.time_scale if spec.trace is not None else np.nan,
                      **row})
    return pd.DataFrame(table)


def write_sweep(out: Path, table: pd.DataFrame, meta: Mapping[str, Any],
                writers: Sequence[Callable[[Path], None]] = ()) -> None:
    """sweep.csv + sweep.json (+ writers' files, e.g. report.html) into out, atomically."""
    with atomic_dir(out, "folder", SWEEP_FILES) as tmp:
        table.to_csv(tmp / "sweep.csv", index=False, float_format="%.6g")
        (tmp / "sweep.json").write_text(json.dumps(json_safe(meta), indent=2, default=str,
                                                    allow_nan=False) + "\n")
        for writer in writers:
            writer(tmp)
