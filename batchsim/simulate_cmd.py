"""`batchsim simulate`: run one policy on one workload and write a run folder."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

from batchsim.args import add_cpu_path_options, add_jitter_option, add_knob_option, parse_knobs
from batchsim.policies.registry import available
from batchsim.progress import Progress
from batchsim.sim.metrics import parse_goodput
from batchsim.sim.run import RunSpec, check_out_dir, prepare, simulate, write_run
from batchsim.sim.workload.workload import SyntheticSpec
from batchsim.summary import format_summary
from batchsim.trace_cmd import add_trace_options, given_trace_flags, trace_options

SYNTHETIC_FLAGS = ("request_rate", "burstiness", "num_requests", "input_len", "output_len",
                   "range_ratio", "lengths_from")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, choices=available(), help="batching policy")
    add_knob_option(p)
    p.add_argument("--profile", help="profile JSON (default: the shipped qwen2.5-0.5b profile)")
    add_cpu_path_options(p)
    p.add_argument("--out", type=Path, help="run folder to write (default: runs/<time>-<policy>)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic workload")
    p.add_argument("--goodput", nargs="+", metavar="SLO", default=None,
                   help="SLOs in ms for goodput, e.g. ttft:500 tpot:50 e2el:5000")
    p.add_argument("--reject-too-long", action="store_true",
                   help="reject requests longer than the model's context instead of failing")
    add_workload_options(p)
    add_jitter_option(p, default=False)
    p.add_argument("--quiet", action="store_true", help="print only the run folder")


def add_workload_options(p: argparse.ArgumentParser) -> None:
    """A trace, or a synthetic workload with vllm bench semantics (simulate, bench)."""
    g = p.add_argument_group("trace workload")
    g.add_argument("--trace", help="trace file: native JSONL, or Azure, BurstGPT, Mooncake or "
                   "Vidur (detected; see docs/TRACES.md)")
    g.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply trace arrival times by this (0.5 = replay twice as fast)")
    add_trace_options(g, scale_and_seed=False)
    s = p.add_argument_group("synthetic workload (vllm bench semantics)")
    s.add_argument("--request-rate", type=float, help="requests/s; inf = all at t=0 (default)")
    s.add_argument("--burstiness", type=float, help="gamma shape of gaps; 1 = Poisson (default)")
    s.add_argument("--num-requests", type=int, help="number of requests (default 1000)")
    s.add_argument("--input-len", type=int, help="prompt tokens (default 1024)")
    s.add_argument("--output-len", type=int, help="output tokens (default 128)")
    s.add_argument("--range-ratio", type=float, help="lengths uniform in len*(1±r) (default 0)")
    s.add_argument("--lengths-from", help="sample (input, output) lengths from this trace")


def workload_fields(args: argparse.Namespace) -> dict[str, Any]:
    """RunSpec's workload fields from add_workload_options' flags (checked)."""
    given = {k: getattr(args, k) for k in SYNTHETIC_FLAGS if getattr(args, k) is not None}
    if args.trace is not None and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} cannot be combined with --trace")
    if args.trace is None and given_trace_flags(args):
        raise ValueError(f"{', '.join(given_trace_flags(args))} needs --trace")
    return {"trace": args.trace, "time_scale": args.time_scale,
            "trace_options": trace_options(args) if args.trace is not None else None,
            "synthetic": None if args.trace is not None else SyntheticSpec(**given)}


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    workload = workload_fields(args)
    knobs = parse_knobs(args.knobs)
    return RunSpec(
        policy=args.policy,
        knobs=knobs,
        profile=args.profile,
        cpu_profile=args.cpu_profile,
        kv_copy_gbps=args.kv_copy_gbps,
        kv_copy_latency_us=args.kv_copy_latency_us,
        **workload,
        seed=args.seed,
        reject_too_long=args.reject_too_long,
        goodput=parse_goodput(args.goodput) if args.goodput else None,
        step_jitter=args.jitter,
    )


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    prep = prepare(spec)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{stamp}-{spec.policy}"
    check_out_dir(out, args.force)
    bar = Progress(len(prep.workload), "simulating", " req")
    result = simulate(prep, progress=bar.update)
    bar.update(len(prep.workload))
    bar.close()
    write_run(out, result, extra={"command": " ".join(["batchsim", *sys.argv[1:]])},
              writers=_writers())
    if not args.quiet:
        print(format_summary(result.metrics, spec.policy))
        if math.isinf(spec.synthetic.request_rate if spec.synthetic else 0.0):
            print("note: request rate inf: every request arrives at t=0")
    print(f"run folder: {out}")
    return 0


def _writers() -> tuple:
    """Extra files for the run folder: the HTML report (and the ITL quantiles it draws)."""
    from batchsim.reports.run_report import write_into_run

    return (write_into_run,)
