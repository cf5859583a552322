"""One simulation run, from inputs to a run folder.

Everything that can be wrong with the inputs is checked in `prepare` before anything is
written; the run folder is assembled in a temporary sibling directory and renamed into place,
so a failed or interrupted run leaves no half-written folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchsim.policies.base import Policy
from batchsim.policies.registry import get_policy, make_config
from batchsim.policies.request import Request
from batchsim.sim.atomic import atomic_dir
from batchsim.sim.checks import MAX_ARRIVAL_S, MAX_SLO_MS, MAX_TIME_SCALE, number
from batchsim.sim.cluster.spec import ClusterSpec
from batchsim.sim.csv_table import write_csv
from batchsim.sim.engine_config import EngineConfig
from batchsim.sim.jitter import StepJitter
from batchsim.sim.metrics import summarize
from batchsim.sim.outputs import check_output, json_safe
from batchsim.sim.profile import CpuCostModel, Profile, cpu_cost_model, load_profile
from batchsim.sim.recorder import Recorder
from batchsim.sim.simulator import Simulator
from batchsim.sim.workload.synthetic import SyntheticSpec, synthesize
from batchsim.sim.workload.traces import load_trace
from batchsim.sim.workload.transform import TraceOptions
from batchsim.sim.workload.workload import Workload, WorkloadError


@dataclass(frozen=True)
class RunSpec:
    policy: str
    knobs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    profile: str | None = None  # None: the shipped default profile
    trace: str | None = None  # None: synthetic
    time_scale: float = 1.0
    # trace format, window, target rate, filters, sampling (its time_scale is the one above)
    trace_options: TraceOptions | None = None
    synthetic: SyntheticSpec | None = None
    seed: int = 0
    reject_too_long: bool = False
    goodput: Mapping[str, float] | None = None
    cpu_profile: str | None = None  # hybrid: CPU profile whose packed.prefill is the CPU path
    kv_copy_gbps: float | None = None  # hybrid: ASSUMED CPU->GPU KV copy bandwidth (GB/s)
    kv_copy_latency_us: float = 0.0  # hybrid: assumed fixed cost per KV hand-off
    step_jitter: bool = False  # draw GPU step-time noise from the profile's repeats (sim.jitter)
    # a vLLM engine's settings (--engine-config): its knobs lie under `knobs` (--set wins)
    engine_config: EngineConfig | None = None
    # closed-loop clients: at most this many requests outstanding (sim.concurrency_gate)
    max_concurrency: int | None = None
    # replicas behind a router (sim.cluster); None or 1 replica: the single server
    cluster: ClusterSpec | None = None

    def __post_init__(self) -> None:
        # finite and bounded where they enter (sim.checks); NaN would pass `x <= 0` tests
        number("--time-scale", self.time_scale, 0, MAX_TIME_SCALE, low_open=True)
        if self.kv_copy_gbps is not None:
            number("--kv-copy-gbps", self.kv_copy_gbps, 0, 1e6, low_open=True)
        number("--kv-copy-latency-us", self.kv_copy_latency_us, 0, 1e9)
        for key, value in (self.goodput or {}).items():
            number(f"--goodput {key}", value, 0, MAX_SLO_MS, low_open=True)
        if self.max_concurrency is not None and (
                isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int)
                or self.max_concurrency < 1):
            raise ValueError(f"--max-concurrency must be a positive integer, got "
                             f"{self.max_concurrency!r}")
        if self.max_concurrency is not None and self.cluster is not None \
                and self.cluster.replicas > 1:
            raise ValueError("--max-concurrency applies to one server; with --replicas > 1 "
                             "use --request-rate or a trace")


@dataclass
class Prepared:
    spec: RunSpec
    profile: Profile
    policy: Policy
    workload: Workload
    too_long: set[int]
    cpu_costs: CpuCostModel | None = None  # the CPU path's costs, for policies with one
    engine_warnings: list[str] = dataclasses.field(default_factory=list)  # from --engine-config
    # a cluster's replicas, each prepared on its own profile (sim.cluster); empty: one server
    replicas: list[Prepared] = dataclasses.field(default_factory=list)


@dataclass
class RunOutput:
    config: dict[str, Any]
    metrics: dict[str, Any]
    requests: pd.DataFrame
    steps_table: pd.DataFrame | None  # None: built from the recorder when first asked for
    recorder: Recorder

    @property
    def steps(self) -> pd.DataFrame:
        """One row per step. Built on first use: a sweep point or a run without a report never
        needs it (metrics and steps.csv come from the recorder's run records)."""
        if self.steps_table is None:
            self.steps_table = self.recorder.steps_table()
        return self.steps_table


def prepare(spec: RunSpec, workload: Workload | None = None) -> Prepared:
    """Load and check every input; raise ValueError/KeyError with a one-line message.

    workload: requests already in hand (an observed run's), replacing spec's trace/synthetic.
    """
    make_config(get_policy(spec.policy).name, policy_knobs(spec))  # knob errors before file ones
    profile = load_profile(spec.profile)
    check_jitter(spec, profile)
    if workload is None:
        workload = make_workload(spec)
    prep = prepare_workload(spec, profile, workload)
    cluster = spec.cluster
    if cluster is not None and cluster.replicas > 1:
        # every replica its own policy instance (and KV pool), on its own profile
        for r in range(cluster.replicas):
            path = cluster.profile_of(r, spec.profile)
            own = profile if path == spec.profile else load_profile(path)
            prep.replicas.append(prepare_workload(dataclasses.replace(spec, profile=path),
                                                  own, workload))
    return prep


def prepare_workload(spec: RunSpec, profile: Profile, workload: Workload) -> Prepared:
    """A fresh policy for `workload`, checked against the model's (or the engine config's)
    context and the policy's limits (the one place a run is prepared; `prepare` loads the
    inputs first)."""
    policy_class = get_policy(spec.policy)
    # the engine config's knobs, then --set's, over the profile's own defaults (e.g. the vLLM
    # version it was measured with)
    config = make_config(policy_class.name, policy_knobs(spec), profile.policy_defaults())
    check_jitter(spec, profile)
    if len(workload) and float(workload.arrival_s[-1]) > MAX_ARRIVAL_S:
        raise WorkloadError(f"{workload.where(len(workload) - 1)}: arrival at "
                            f"{float(workload.arrival_s[-1]):.3g} s is beyond {MAX_ARRIVAL_S:g} s "
                            "(about 31 years): lower --time-scale or raise --request-rate")
    max_model_len, engine_warnings = context_limit(spec.engine_config, profile)
    policy = policy_class(config, profile.memory, max_model_len)
    total = workload.input_tokens + workload.output_tokens
    over = np.flatnonzero(total > max_model_len)
    if len(over) and not spec.reject_too_long:
        i = int(over[0])
        raise WorkloadError(
            f"{workload.where(i)}: request of {int(workload.input_tokens[i])} input + "
            f"{int(workload.output_tokens[i])} output tokens exceeds the "
            f"{'engine' if max_model_len < profile.max_model_len else 'model'}'s context "
            f"({max_model_len}); pass --reject-too-long to reject such requests"
        )
    keep = total <= max_model_len
    if keep.any():
        policy.check_workload(int(workload.input_tokens[keep].max()), int(total[keep].max()))
    return Prepared(spec, profile, policy, workload, set(over.tolist()),
                    resolve_cpu_costs(spec, profile, policy), engine_warnings)


def policy_knobs(spec: RunSpec) -> dict[str, Any]:
    """The knobs the policy is built with: the engine config's, then --set's on top."""
    if spec.engine_config is None:
        return dict(spec.knobs)
    return spec.engine_config.knobs_for(get_policy(spec.policy).config_class, spec.knobs,
                                        f"policy {spec.policy}")


def context_limit(engine: EngineConfig | None, profile: Profile) -> tuple[int, list[str]]:
    """The context a request may fill (the engine's max_model_len, at most the model's) and the
    engine config's warnings about the profile (TP, dtype)."""
    if engine is None:
        return profile.max_model_len, []
    warnings = engine.check_profile(profile.summary(), profile.fingerprint,
                                    profile.max_model_len)
    return engine.max_model_len or profile.max_model_len, warnings


def make_workload(spec: RunSpec) -> Workload:
    """The run's requests: the trace (transformed), or the synthetic workload seeded by
    spec.seed (`batchsim bench` sends exactly these)."""
    if spec.trace is not None:
        options = dataclasses.replace(spec.trace_options or TraceOptions(),
                                      time_scale=spec.time_scale)
        return load_trace(spec.trace, options=options)
    return synthesize(spec.synthetic or SyntheticSpec(), np.random.default_rng(spec.seed))


def check_jitter(spec: RunSpec, profile: Profile) -> None:
    if spec.step_jitter and not profile.jitter_ratios:
        raise ValueError(f"{profile.path}: --jitter draws step-time noise from a measured "
                         f"profile's repeat samples, and this {profile.source} profile has none")


def make_jitter(prep: Prepared, seed_offset: int = 0) -> StepJitter | None:
    if not prep.spec.step_jitter:
        return None
    return StepJitter(prep.profile.jitter_ratios, prep.spec.seed + seed_offset)


def resolve_cpu_costs(spec: RunSpec, profile: Profile, policy: Policy) -> CpuCostModel | None:
    """The CPU path's costs for a policy that has one; CPU options for any other policy are an
    error."""
    if "cpu" not in policy.paths:
        if spec.cpu_profile is not None or spec.kv_copy_gbps is not None:
            raise ValueError(f"--cpu-profile and --kv-copy-gbps apply to policies with a CPU "
                             f"path (hybrid), not {spec.policy!r}")
        return None
    cpu_profile = load_profile(spec.cpu_profile) if spec.cpu_profile is not None else None
    return cpu_cost_model(profile, cpu_profile, spec.kv_copy_gbps, spec.kv_copy_latency_us)


def simulate(prep: Prepared, progress: Callable[[int], None] | None = None,
             fast_forward: bool = True, jitter_seed_offset: int = 0) -> RunOutput:
    """jitter_seed_offset: another draw of the step-time jitter (replicas of one point)."""
    if prep.replicas:
        from batchsim.sim.cluster.run import simulate_cluster

        # replica i draws its own jitter stream; replica 0 the one a single server draws
        jitters = [make_jitter(p, jitter_seed_offset + r) for r, p in enumerate(prep.replicas)]
        requests, metrics, record, cluster = simulate_cluster(prep, jitters, progress,
                                                              fast_forward)
        config = run_config(prep.replicas[0], jitters[0], prep.spec.seed + jitter_seed_offset)
        config["cluster"] = cluster
        return RunOutput(config, metrics, requests, None, record)
    jitter = make_jitter(prep, jitter_seed_offset)
    sim = Simulator(prep.profile, prep.policy, prep.workload, prep.too_long,
                    fast_forward=fast_forward, progress=progress, cpu_costs=prep.cpu_costs,
                    jitter=jitter, max_concurrency=prep.spec.max_concurrency)
    result = sim.run()
    # the plain loop keeps no requests: the table comes from the workload's columns; a run that
    # kept them (a concurrency gate moves arrival times) tabulates its own
    requests = (result.recorder.workload_table(prep.workload) if result.kept is None
                else result.recorder.requests_table(result.kept))
    metrics = summarize(result.recorder, requests, None, prep.policy.kv_capacity_blocks,
                        prep.profile.source, prep.spec.goodput)
    add_policy_metrics(metrics, prep.policy, result.recorder.kv_cached_blocks())
    config = run_config(prep, jitter, prep.spec.seed + jitter_seed_offset)
    return RunOutput(config, metrics, requests, None, result.recorder)


def run_config(prep: Prepared, jitter: StepJitter | None, jitter_seed: int) -> dict[str, Any]:
    """config.json of a simulated run: the resolved inputs and what the run derived."""
    config = resolved_config(prep)
    if prep.cpu_costs is not None:
        config["cpu_path"] = prep.cpu_costs.source
    if jitter is not None:
        config["step_jitter"] = {"seed": jitter_seed, "repeat_ratios": jitter.summary()}
    if prep.spec.engine_config is not None:
        knob_names = list(config["knobs"])
        config["engine_config"] = {**prep.spec.engine_config.provenance(prep.spec.knobs,
                                                                        knob_names),
                                   "profile_warnings": prep.engine_warnings}
    derived = prep.policy.derived_knobs()
    if derived:
        config["derived_knobs"] = derived
    if prep.spec.max_concurrency is not None:  # absent otherwise: outputs as before
        config["max_concurrency"] = prep.spec.max_concurrency
    return config


def outputs(recorder: Recorder, requests: Sequence[Request], policy: Policy,
            profile_source: str, goodput: Mapping[str, float] | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(requests table, steps table, summary metrics) of a recorded run: the one way a
    recorder becomes outputs, simulated or real."""
    requests_df = recorder.requests_table(requests)
    steps_df = recorder.steps_table()
    metrics = summarize(recorder, requests_df, steps_df, policy.kv_capacity_blocks,
                        profile_source, goodput)
    cached = (steps_df["kv_cached_blocks"].to_numpy() if "kv_cached_blocks" in steps_df
              else None)
    add_policy_metrics(metrics, policy, cached)
    return requests_df, steps_df, metrics


def add_policy_metrics(metrics: dict[str, Any], policy: Policy,
                       cached_blocks: np.ndarray | None) -> None:
    """The policy's own metrics (e.g. prefix caching's hits, with the cached free blocks per
    step); nothing otherwise, so other runs keep their bytes."""
    extra = policy.extra_metrics()
    if not extra:
        return
    metrics.update(extra)
    if cached_blocks is not None:
        metrics["prefix_cache"] = {**metrics["prefix_cache"],
                                   "max_cached_blocks": int(cached_blocks.max(initial=0)),
                                   "mean_cached_blocks": float(cached_blocks.mean())
                                   if len(cached_blocks) else 0.0}


def resolved_config(prep: Prepared) -> dict[str, Any]:
    spec = prep.spec
    workload: dict[str, Any] = {"source": prep.workload.source,
                                "num_requests": len(prep.workload)}
    if spec.trace is not None:
        workload["time_scale"] = prep.workload.provenance.get("time_scale", spec.time_scale)
        workload["trace"] = prep.workload.provenance  # format, window, rate, sample, drops
    else:
        workload["synthetic"] = dataclasses.asdict(spec.synthetic or SyntheticSpec())
    return {
        "policy": spec.policy,
        "knobs": dataclasses.asdict(prep.policy.config),  # type: ignore[call-overload]
        "profile": prep.profile.summary(),
        "workload": workload,
        "seed": spec.seed,
        "reject_too_long": spec.reject_too_long,
        "goodput": dict(spec.goodput) if spec.goodput else None,
        "kv_capacity_blocks": prep.policy.kv_capacity_blocks,
        "kv_block_size": prep.policy.kv_block_size,
    }


RUN_FILES = ("metrics.json", "config.json")  # what an existing run folder holds


def check_out_dir(out: Path, force: bool) -> None:
    """Before the work: `out` may hold a new run folder (sim.outputs: where, --force, kind)."""
    check_output(out, force, "folder", RUN_FILES)


def write_run(out: Path, run: RunOutput, extra: Mapping[str, Any] | None = None,
              writers: tuple[Callable[[Path, RunOutput], None], ...] = ()) -> None:
    """Write config.json, metrics.json, requests.csv, steps.csv (+ writers' files) atomically."""
    with atomic_dir(out, "folder", RUN_FILES) as tmp:
        config = {**run.config, **(extra or {})}
        for name, doc in (("config.json", config), ("metrics.json", run.metrics)):
            text = json.dumps(json_safe(doc), indent=2, allow_nan=False)  # strict JSON
            (tmp / name).write_text(text + "\n")
        write_csv(run.requests, tmp / "requests.csv")
        # from the run records unless another table was given (or the run has CPU steps)
        rec = run.recorder
        fast = isinstance(rec, Recorder) and (run.steps_table is None
                                              or rec.is_steps_table(run.steps_table))
        if not (fast and rec.write_steps_csv(tmp / "steps.csv")):
            write_csv(run.steps, tmp / "steps.csv")
        for writer in writers:
            writer(tmp, run)
