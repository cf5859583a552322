"""`batchsim simulate`: run one policy on one workload and write a run folder."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from batchsim.args import (
    add_cpu_path_options,
    add_engine_config_option,
    add_jitter_option,
    add_knob_option,
    add_max_concurrency_option,
    add_workload_options,
    engine_config,
    knobs_from_args,
    with_cpu_path_defaults,
    workload_from_args,
)
from batchsim.cluster_args import add_cluster_options, cluster_from_args
from batchsim.policies.registry import available
from batchsim.progress import Progress, Status
from batchsim.result_options import add_result_options, result_options
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.summary import format_replicas, format_summary

if TYPE_CHECKING:
    from batchsim.sim.run import RunSpec

# The simulator, pandas and plotly are imported in run(), not here: parsing the arguments (and
# --help, and a bad flag's error) stays cheap.
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
    add_result_options(p)
    add_max_concurrency_option(p)
    p.add_argument("--quiet", action="store_true", help="print only the run folder")
    p.add_argument("--no-report", action="store_true",
                   help="skip report.html (faster on large runs; `batchsim report RUN_DIR` "
                        "writes it later)")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    from batchsim.sim.metrics import parse_goodput
    from batchsim.sim.run import RunSpec

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
        max_concurrency=args.max_concurrency,
    )


def run(args: argparse.Namespace) -> int:
    from batchsim.sim.overload import overload
    from batchsim.sim.run import check_out_dir, prepare, simulate, write_run
    from batchsim.sim.vllm_result import vllm_result

    spec, assumed = with_cpu_path_defaults(spec_from_args(args), [args.policy])
    prep = prepare(spec)
    for line in prep.engine_warnings:
        logger.warning("%s", line)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"{stamp}-{spec.policy}"
    check_out_dir(out, args.force)
    saved = result_options(args)  # bad names or an existing JSON: before any work
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
                             percentile_metrics=saved.percentile_metrics,
                             metric_percentiles=saved.metric_percentiles),
              flush=True)
        if "replicas" in result.metrics:
            print(format_replicas(result.metrics, result.config["cluster"]["router"]))
        if math.isinf(spec.synthetic.request_rate if spec.synthetic else 0.0):
            print("note: request rate inf: every request arrives at t=0")
    # the summary is out; a large run then spends seconds writing: say so
    def as_vllm(run: object) -> dict:
        return vllm_result(run, saved.percentile_metrics, saved.metric_percentiles,
                           saved.detailed)

    with Status("writing run folder", final_line=not args.quiet):
        write_run(out, result, extra=extra,
                  writers=_writers(args.no_report) + saved.writer(as_vllm))
        elsewhere = saved.write_outside(as_vllm(result)) if saved.path else None
    print(f"run folder: {out}")
    if saved.save:
        print(f"result JSON: {elsewhere or out / saved.name}")
    return 0


def _writers(no_report: bool) -> tuple:
    """Extra files for the run folder: the ITL quantiles and (unless no_report) the HTML
    report, which imports plotly and costs about as much as the tables on a large run."""
    if no_report:
        from batchsim.reports.itl_cdf import write_itl_cdf

        return (write_itl_cdf,)
    from batchsim.reports.run_report import write_into_run

    return (write_into_run,)
