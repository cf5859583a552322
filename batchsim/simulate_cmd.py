"""`batchsim simulate`: run one policy on one workload and write a run folder."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
from pathlib import Path

from batchsim.args import (
    add_cpu_path_options,
    add_engine_config_option,
    add_jitter_option,
    add_knob_option,
    add_workload_options,
    engine_config,
    knobs_from_args,
    with_cpu_path_defaults,
    workload_from_args,
)
from batchsim.cluster_args import add_cluster_options, cluster_from_args
from batchsim.policies.registry import available
from batchsim.progress import Progress, Status
from batchsim.sim.metrics import parse_goodput
from batchsim.sim.overload import overload
from batchsim.sim.run import RunSpec, check_out_dir, prepare, simulate, write_run
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.summary import (
    PERCENTILE_METRICS,
    PERCENTILES,
    format_replicas,
    format_summary,
    parse_metric_percentiles,
    parse_percentile_metrics,
)

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, choices=available(), help="batching policy")
    add_knob_option(p)
    add_engine_config_option(p)
    add_cluster_options(p, "profile JSON (default: the shipped qwen2.5-0.5b profile)")
    add_cpu_path_options(p)
    p.add_argument("--out", type=Path, help="run folder to write (default: runs/<time>-<policy>)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic workload")
    p.add_argument("--goodput", nargs="+", metavar="SLO", default=None,
                   help="SLOs in ms for goodput, e.g. ttft:500 tpot:50 e2el:5000")
    p.add_argument("--reject-too-long", action="store_true",
                   help="reject requests longer than the model's context instead of failing")
    add_workload_options(p, defaults=SyntheticSpec(), request_rate=True, rescale=True,
                         trace_help="trace file: native JSONL, or Azure, BurstGPT, Mooncake, "
                                    "Vidur, a vLLM request log or LLMServingSim (detected)")
    add_jitter_option(p, default=False)
    p.add_argument("--percentile-metrics", default=",".join(PERCENTILE_METRICS),
                   help="latency sections the summary prints, comma-separated (as vllm bench "
                        f"serve; default {','.join(PERCENTILE_METRICS)})")
    p.add_argument("--metric-percentiles", default="99",
                   help="percentiles the summary prints beside mean and median, "
                        f"comma-separated, from {','.join(map(str, PERCENTILES))} (default 99)")
    p.add_argument("--quiet", action="store_true", help="print only the run folder")
    p.add_argument("--no-report", action="store_true",
                   help="skip report.html (faster on large runs; `batchsim report RUN_DIR` "
                        "writes it later)")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    work = workload_from_args(args, request_rate=True)
    knobs = knobs_from_args(args, [args.policy])
    profile, cluster = cluster_from_args(args)
    return RunSpec(
        policy=args.policy,
        knobs=knobs,
        profile=profile,
        cluster=cluster,
        cpu_profile=args.cpu_profile,
        kv_copy_gbps=args.kv_copy_gbps,
        kv_copy_latency_us=args.kv_copy_latency_us,
        trace=work.trace,
        time_scale=work.time_scale,
        trace_options=work.trace_options,
        synthetic=None if work.trace is not None else SyntheticSpec(**work.synthetic),
        seed=args.seed,
        reject_too_long=args.reject_too_long,
        goodput=parse_goodput(args.goodput) if args.goodput else None,
        step_jitter=args.jitter,
        engine_config=engine_config(args.engine_config, [args.policy]),
    )


def run(args: argparse.Namespace) -> int:
    shown = (parse_percentile_metrics(args.percentile_metrics),
             parse_metric_percentiles(args.metric_percentiles))  # bad names: before any work
    spec, assumed = with_cpu_path_defaults(spec_from_args(args), [args.policy])
    prep = prepare(spec)
    for line in prep.engine_warnings:
        logger.warning("%s", line)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{stamp}-{spec.policy}"
    check_out_dir(out, args.force)
    bar = Progress(len(prep.workload), "simulating", " req", final_line=not args.quiet)
    result = simulate(prep, progress=bar.update)
    bar.update(len(prep.workload))
    bar.close()
    extra: dict[str, object] = {"command": " ".join(["batchsim", *sys.argv[1:]])}
    if assumed:
        extra["assumptions"] = assumed
    behind = overload(result.requests)
    if behind is not None:  # on stderr, so --quiet and pipes still see it
        print(f"batchsim: warning: {behind.message()}", file=sys.stderr)
    if not args.quiet:  # before the files: the summary needs only the metrics
        for sentence in assumed:
            print(f"note: {sentence}")
        print(format_summary(result.metrics, spec.policy, result.requests,
                             percentile_metrics=shown[0], metric_percentiles=shown[1]),
              flush=True)
        if "replicas" in result.metrics:
            print(format_replicas(result.metrics, result.config["cluster"]["router"]))
        if math.isinf(spec.synthetic.request_rate if spec.synthetic else 0.0):
            print("note: request rate inf: every request arrives at t=0")
    # the summary is out; a large run then spends seconds writing: say so
    with Status("writing run folder", final_line=not args.quiet):
        write_run(out, result, extra=extra, writers=_writers(args.no_report))
    print(f"run folder: {out}")
    return 0


def _writers(no_report: bool) -> tuple:
    """Extra files for the run folder: the ITL quantiles and (unless no_report) the HTML
    report, which imports plotly and costs about as much as the tables on a large run."""
    if no_report:
        from batchsim.reports.itl_cdf import write_itl_cdf

        return (write_itl_cdf,)
    from batchsim.reports.run_report import write_into_run

    return (write_into_run,)
