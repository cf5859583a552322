"""`batchsim validate --observed RUN`: a simulation of an observed run's own requests, compared.

The simulation replays the run's requests (same arrivals, same lengths) through the policy on
the profile, and the comparison is today's validation's (plan.compare / error_summary, written
by plan.write_validation): one point, labelled "observed". Beside it: each request's TTFT and
E2EL, real and simulated (per_request.csv), and, when the run has a timeseries.csv, the server's
throughput, running and waiting over time against the simulation's (timeseries.csv).

The simulation's timeseries uses the server's definitions at each of its ticks t (interval
tick): prompt and generation throughput = tokens in steps ending in (t - tick, t] / tick (a
request's first token counts as generated); running = requests scheduled and not finished at t
(a preempted request still counts); waiting = arrived and not yet scheduled at t.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from batchsim.sim.engine_config import EngineConfig
from batchsim.sim.profile import Profile
from batchsim.sim.run import RunOutput, RunSpec, prepare, simulate
from batchsim.sim.validation.observed import ObservedRun, load_observed
from batchsim.sim.validation.plan import (
    SCHEMA,
    TARGET_METRICS,
    compare,
    error_summary,
    mean_metrics,
)

POINT = "observed"  # the one point's label and folder


@dataclass(frozen=True)
class ObservedSpec:
    observed: str  # RUN: a vLLM request log or a batchsim run folder
    policy: str
    profile: str | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)  # --set
    engine_config: EngineConfig | None = None
    seed: int = 0
    step_jitter: bool = False
    jitter_replicas: int = 8

    def __post_init__(self) -> None:
        if self.jitter_replicas < 1:
            raise ValueError(f"jitter replicas must be at least 1, got {self.jitter_replicas}")


@dataclass
class ObservedValidation:
    spec: ObservedSpec
    run: ObservedRun
    sim: RunOutput  # tables of the first draw; metrics the mean over the jitter replicas
    profile: Profile
    engine_warnings: list[str]

    def document(self, command: str) -> dict[str, Any]:
        """validation.json, in today's shape with one point labelled "observed"."""
        comparison = compare(self.run.metrics, self.sim.metrics)
        errors = error_summary([comparison])
        duration = self.run.metrics.get("duration_s") or 0.0
        config = self.sim.config
        return {
            "schema": SCHEMA, "schema_version": 1, "kind": "observed", "command": command,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "policy": self.spec.policy, "knobs": config["knobs"],
            "engine_config": config.get("engine_config"),
            "step_jitter": config.get("step_jitter"),
            "profile": {**config["profile"], "fingerprint": self.profile.fingerprint,
                        "cv_mape": {k: v.get("mape") for k, v in self.profile.cv.items()}},
            "observed": {"source": self.run.source, "kind": self.run.kind,
                         "num_requests": len(self.run.workload),
                         "timeseries": self.run.timeseries is not None},
            "points": [{
                "load": None, "label": POINT, "num_requests": len(self.run.workload),
                "request_rate": (len(self.run.workload) / duration if duration else None),
                "comparison": comparison, "folder": POINT,
            }],
            "errors": errors,
            "target": {m: errors[m]["median_abs_error"] for m in TARGET_METRICS},
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {f"{POINT}/real/requests.csv": self.run.requests,
               f"{POINT}/sim/requests.csv": self.sim.requests,
               f"{POINT}/sim/steps.csv": self.sim.steps,
               "per_request.csv": per_request_table(self.run.requests, self.sim.requests)}
        if self.run.timeseries is not None:
            out["timeseries.csv"] = timeseries_table(self.run.timeseries, self.sim,
                                                     self.run.tick_s)
        return out

    def jsons(self) -> dict[str, Any]:
        return {f"{POINT}/real/metrics.json": self.run.metrics,
                f"{POINT}/sim/metrics.json": self.sim.metrics,
                f"{POINT}/sim/config.json": self.sim.config}


def validate_observed(spec: ObservedSpec) -> ObservedValidation:
    """Read RUN, simulate its requests, keep both sides (nothing written here)."""
    run = load_observed(spec.observed)
    run_spec = RunSpec(policy=spec.policy, knobs=dict(spec.knobs), profile=spec.profile,
                       trace=run.source, seed=spec.seed, step_jitter=spec.step_jitter,
                       engine_config=spec.engine_config)
    prep = prepare(run_spec, workload=run.workload)
    first = simulate(prep)
    if spec.step_jitter and spec.jitter_replicas > 1:
        others = [simulate(prepare(run_spec, workload=run.workload), jitter_seed_offset=k).metrics
                  for k in range(1, spec.jitter_replicas)]
        first.config["step_jitter"]["replicas"] = spec.jitter_replicas
        first = dataclasses.replace(first, metrics=mean_metrics([first.metrics, *others]))
    return ObservedValidation(spec, run, first, prep.profile, prep.engine_warnings)


def per_request_table(real: pd.DataFrame, sim: pd.DataFrame) -> pd.DataFrame:
    """One row per request: TTFT and E2EL real and simulated, and the signed relative errors."""
    assert len(real) == len(sim), (len(real), len(sim))
    out = pd.DataFrame({"id": real["id"].astype(str).to_numpy(),
                        "arrival_s": real["arrival_s"].to_numpy(),
                        "input_tokens": real["input_tokens"].to_numpy(),
                        "output_tokens": real["output_tokens"].to_numpy()})
    for name in ("ttft_ms", "e2el_ms"):
        r = real[name].to_numpy(dtype=np.float64)
        s = sim[name].to_numpy(dtype=np.float64)
        out[f"real_{name}"], out[f"sim_{name}"] = r, s
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{name.removesuffix('_ms')}_rel_error"] = np.where(r > 0, (s - r) / r, np.nan)
    return out


def engine_queued_s(arrival_s: np.ndarray, steps: pd.DataFrame) -> np.ndarray:
    """When a simulated engine would stamp each request QUEUED, as vLLM's engine core does: it
    reads new requests only at the top of its loop, just before a scheduling decision, so a
    request arriving while a step runs is stamped as that step ends, and one arriving at an
    idle engine at once. A vLLM log's latencies count from that stamp (its `queued_ts`, which
    is why its scheduled_ts - queued_ts is microseconds for a request that finds a seat)."""
    start = steps["start_s"].to_numpy(dtype=np.float64)
    end = start + steps["duration_s"].to_numpy(dtype=np.float64)
    i = np.searchsorted(start, arrival_s, side="right") - 1
    j = np.maximum(i, 0)
    running = (i >= 0) & (arrival_s < end[j]) if len(start) else np.zeros(len(arrival_s), bool)
    return np.where(running, end[j] if len(start) else arrival_s, arrival_s)


def from_engine_queue(requests: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """A simulation's requests table with TTFT, E2EL and queue time counted from
    engine_queued_s, the origin of a vLLM log's own latencies (TPOT is unchanged)."""
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    shift_ms = (engine_queued_s(arrival, steps) - arrival) * 1e3
    out = requests.copy()
    for name in ("ttft_ms", "e2el_ms", "queue_ms"):
        out[name] = requests[name].to_numpy(dtype=np.float64) - shift_ms
    return out


def timeseries_table(real: pd.DataFrame, sim: RunOutput, tick_s: float) -> pd.DataFrame:
    """The server's periodic stats beside the simulation's at the same ticks."""
    t = real["t"].to_numpy(dtype=np.float64)
    steps, req = sim.steps, sim.requests
    end = (steps["start_s"] + steps["duration_s"]).to_numpy()
    firsts = req["first_token_s"].to_numpy(dtype=np.float64)
    arrival = req["arrival_s"].to_numpy(dtype=np.float64)
    sched = arrival + req["queue_ms"].to_numpy(dtype=np.float64) / 1e3
    finish = req["finish_s"].to_numpy(dtype=np.float64)

    def in_window(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        order = np.argsort(times)
        cum = np.concatenate(([0.0], np.cumsum((weights if weights is not None
                                                else np.ones(len(times)))[order])))
        sorted_t = times[order]
        hi = np.searchsorted(sorted_t, t, side="right")
        lo = np.searchsorted(sorted_t, t - tick_s, side="right")
        return (cum[hi] - cum[lo]) / tick_s

    prompt = in_window(end, steps["prefill_tokens"].to_numpy(dtype=np.float64))
    gen = (in_window(end, steps["decode_tokens"].to_numpy(dtype=np.float64))
           + in_window(firsts[np.isfinite(firsts)]))
    # counts of events at or before t (never scheduled / unfinished: never happened)
    def upto(times: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.sort(np.where(np.isfinite(times), times, np.inf)), t,
                               side="right")

    running = upto(sched) - upto(finish)
    waiting = upto(arrival) - upto(sched)
    return pd.DataFrame({"t": t,
                         "real_prompt_throughput": real["prompt_throughput"].to_numpy(),
                         "sim_prompt_throughput": prompt,
                         "real_gen_throughput": real["gen_throughput"].to_numpy(),
                         "sim_gen_throughput": gen,
                         "real_running": real["running"].to_numpy(), "sim_running": running,
                         "real_waiting": real["waiting"].to_numpy(), "sim_waiting": waiting})
