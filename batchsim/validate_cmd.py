"""`batchsim validate`: the same policy on the real engine and in the simulator, side by side."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchsim.args import (
    SYNTHETIC_FLAGS,
    add_cpu_path_options,
    add_engine_config_option,
    add_jitter_option,
    add_knob_option,
    add_workload_options,
    engine_config,
    flag,
    knobs_from_args,
    trace_words,
    workload_from_args,
)
from batchsim.bench_cmd import add_endpoint_options
from batchsim.extras import require_profile_extra, require_serve_extra
from batchsim.policies.registry import available, get_policy, make_config
from batchsim.progress import Progress
from batchsim.reports.fmt import metric_label
from batchsim.sim.errors import UsageError
from batchsim.sim.outputs import check_output
from batchsim.sim.profile import Profile, load_profile
from batchsim.sim.validation.plan import (
    DEFAULT_LOADS,
    VALIDATION_FILES,
    ValidationSpec,
    WorkloadSpec,
    format_error_table,
    parse_loads,
    plan_validation,
    write_validation,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile",
                   help="measured profile JSON (from `batchsim profile`) of the engine to "
                        "validate; with --observed, the profile to simulate with (default: the "
                        "shipped one)")
    p.add_argument("--policy", required=True, choices=available(), help="batching policy")
    add_knob_option(p, "max_num_seqs=16")
    add_engine_config_option(p)
    p.add_argument("--observed", metavar="RUN",
                   help="compare with an observed real run instead of running the engine: a "
                        "vLLM request log (JSONL with queued_ts, first_token_ts, ...) or a "
                        "batchsim run folder; its own requests are simulated")
    p.add_argument("--loads", default=",".join(f"{x:g}" for x in DEFAULT_LOADS),
                   help="load levels as fractions of the capacity the profile predicts "
                        "(default %(default)s)")
    p.add_argument("--model", help="the profiled model's config.json or checkpoint directory "
                                   "(default: the preset the profile names)")
    p.add_argument("--device", help="cuda or cpu (default: the profile's device)")
    p.add_argument("--out", type=Path,
                   help="folder to write (default: runs/<time>-validate-<policy>)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and prompts")
    p.add_argument("--quiet", action="store_true", help="print only the output folder")
    add_cpu_path_options(p)
    e = p.add_argument_group("a running server instead of the engine (batchsim bench's client)")
    add_endpoint_options(e, required=False)
    add_jitter_option(p, default=True)
    p.set_defaults(jitter=None)  # on, except with --observed (a measured profile's repeats)
    p.add_argument("--jitter-replicas", type=int, default=8, metavar="N",
                   help="with --jitter, the simulated metrics are the mean over N draws "
                        "(default %(default)s)")
    # no --request-rate, --time-scale or --target-rate: --loads sets every point's rate
    add_workload_options(p, defaults=WorkloadSpec(), request_rate=False, rescale=False,
                         trace_help="trace (any format simulate reads); its arrival pattern is "
                                    "rescaled to each load", per="per load level")


def spec_from_args(args: argparse.Namespace) -> ValidationSpec:
    work = workload_from_args(args)
    if args.profile is None:
        raise UsageError("validate needs --profile (the measured profile of the engine), "
                         "or --observed RUN")
    knobs: dict[str, Any] = dict(knobs_from_args(args, [args.policy]))
    engine = engine_config(args.engine_config, [args.policy])
    if engine is not None:
        knobs = engine.knobs_for(get_policy(args.policy).config_class, knobs,
                                 f"policy {args.policy}")
    make_config(args.policy, dict(knobs))  # unknown knob or bad value: one line, now
    workload = WorkloadSpec(trace=work.trace, trace_options=work.trace_options, **work.synthetic)
    workload.synthetic()  # checks the synthetic parameters
    return ValidationSpec(policy=args.policy, profile=args.profile, knobs=knobs,
                          workload=workload, loads=parse_loads(args.loads), seed=args.seed,
                          cpu_profile=args.cpu_profile, kv_copy_gbps=args.kv_copy_gbps,
                          kv_copy_latency_us=args.kv_copy_latency_us,
                          step_jitter=args.jitter is not False,
                          jitter_replicas=args.jitter_replicas)


def run(args: argparse.Namespace) -> int:
    if args.observed is not None:
        from batchsim.validate_observed import run_observed

        return run_observed(args)
    spec = spec_from_args(args)
    if args.endpoint is None:
        require_profile_extra("validate")
    else:
        require_serve_extra("validate --endpoint", ("httpx",))
    profile = load_profile(spec.profile)
    out = args.out or Path("runs") / (dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                                      + f"-validate-{spec.policy}")
    check_output(out, args.force, "folder", VALIDATION_FILES)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))
    if args.endpoint is not None:
        return _run_endpoint(args, spec, profile, out, say)
    from batchsim.profiler.real.validate import engine_spec, run_validation

    engine = engine_spec(profile, args.model, args.device)
    plan = plan_validation(spec, profile)
    say(f"capacity predicted by the profile for {spec.policy}: "
        f"{plan.capacity.request_rate:.3g} req/s")
    say(f"validating {len(plan.points)} load levels x {len(plan.points[0].workload)} requests on "
        f"{engine.model} ({engine.device}): about {_fmt_s(plan.predicted_s)} of real time "
        f"(simulated makespans {', '.join(_fmt_s(p.predicted_s) for p in plan.points)}) "
        "plus building the model and re-measuring a few profile points before each level")
    total = sum(len(p.workload) for p in plan.points)
    bar = Progress(total, "validating", " req", final_line=not args.quiet)
    result = run_validation(plan, engine, bar.update)
    bar.update(total)
    bar.phase("writing validation folder")
    doc = result.document(command_line(args, out))
    write_validation(out, doc, result.tables(), result.jsons(), report=_report)
    bar.close()
    if not args.quiet:
        print(format_error_table(doc, label=metric_label))
        host = [p["host_overhead"]["per_step_mean_s"] * 1e3 for p in doc["points"]]
        print("executor host time per step (ms, not in the simulation): "
              + ", ".join(f"{h:.3f}" for h in host))
        drift = [(p.get("machine_drift") or {}).get("ratio") for p in doc["points"]]
        print("machine drift (profile points re-measured before and after each point / "
              "profiled): " + ", ".join("n/a" if d is None else f"{d:.3f}" for d in drift))
        levels = [p.get("step_cost_level") for p in doc["points"]]
        print("step cost level (real steps / the profile's prediction for their shapes): "
              + ", ".join("n/a" if x is None else f"{x:.3f}" for x in levels))
        hint = level_hint(doc)
        if hint:
            print(hint)
    print(f"validation folder: {out}")
    return 0


def _run_endpoint(args: argparse.Namespace, spec: ValidationSpec, profile: Profile, out: Path,
                  say: Callable[[str], None]) -> int:
    """validate --endpoint: the bench client against a running server, then the comparison."""
    from batchsim.validate_endpoint import format_endpoint_result, run_endpoint_validation

    if args.model is not None or args.device is not None:
        raise ValueError("--model and --device rebuild the engine; with --endpoint the server "
                         "is already running (pick its model with --served-model)")
    plan = plan_validation(spec, profile)
    say(f"capacity predicted by the profile for {spec.policy}: "
        f"{plan.capacity.request_rate:.3g} req/s")
    doc = run_endpoint_validation(args, plan, out, command_line(args, out), say)
    if not args.quiet:
        print(format_endpoint_result(doc))
    print(f"validation folder: {out}")
    return 0


def level_hint(doc: dict, tolerance: float = 0.05) -> str | None:
    """When the real steps ran off the profile's level, say so and what the simulation gives at
    the real level (a diagnostic: that level comes from the real run itself)."""
    off = [p for p in doc["points"]
           if p.get("step_cost_level") and abs(p["step_cost_level"] - 1) > tolerance
           and p.get("comparison_level_matched")]
    if not off:
        return None
    parts = [f"load {p['load']:g}: {p['step_cost_level']:.2f}x, mean E2EL error "
             f"{p['comparison']['e2el_ms.mean']['rel_error']:+.1%} -> "
             f"{p['comparison_level_matched']['e2el_ms.mean']['rel_error']:+.1%}"
             for p in off if p["comparison"]["e2el_ms.mean"]["rel_error"] is not None]
    return ("note: the real steps ran more than 5% off the profile's prediction for their own "
            "shapes, so the machine's speed differs from when it was profiled (re-profile, or "
            "validate on a quieter machine). At the real level (diagnostic, not a prediction): "
            + "; ".join(parts))


def command_line(args: argparse.Namespace, out: Path) -> str:
    """The canonical command that reruns this validation (every input spelled out)."""
    words = ["batchsim", "validate", "--profile", args.profile, "--policy", args.policy]
    for item in args.knobs:
        words += ["--set", item]
    if args.scheduling_policy is not None:
        words += ["--scheduling-policy", args.scheduling_policy]
    words += ["--loads", args.loads, "--seed", str(args.seed)]
    # jitter is on by default: spell out both states, and the replicas it averages over
    # (None = the default: on, except with --observed)
    if args.jitter is False:
        words += ["--no-jitter"]
    else:
        words += (["--jitter"] if args.jitter else []) + ["--jitter-replicas",
                                                         str(args.jitter_replicas)]
    if args.kv_copy_latency_us:
        words += ["--kv-copy-latency-us", str(args.kv_copy_latency_us)]
    for name in ("model", "device", "cpu_profile", "kv_copy_gbps", "endpoint", "served_model",
                 "max_concurrency", "trace", *SYNTHETIC_FLAGS):
        value = getattr(args, name)
        if value is not None:
            words += [flag(name), str(value)]
    return shlex.join([*words, *trace_words(args), "--out", str(out)])


def _report(folder: Path) -> None:
    from batchsim.reports.validation import write_validation_report

    write_validation_report(folder, folder / "report.html")


def _fmt_s(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
