"""`batchsim sweep`: policies × knob values × loads in parallel; one table and one report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from batchsim.args import (
    add_cpu_path_options,
    add_engine_config_option,
    add_jitter_option,
    add_knob_option,
    add_max_concurrency_option,
    add_workload_options,
    engine_config,
    knobs_from_args,
    resolve_knob_aliases,
    with_cpu_path_defaults,
    workload_from_args,
)
from batchsim.cluster_args import add_cluster_options, cluster_from_args
from batchsim.extras import require_sweep_extra
from batchsim.policies.registry import available, get_policy
from batchsim.progress import Progress
from batchsim.sim.errors import UsageError
from batchsim.sim.metrics import parse_goodput
from batchsim.sim.outputs import check_output
from batchsim.sim.profile import load_profile
from batchsim.sim.run import RunSpec, context_limit
from batchsim.sim.sweep.analysis import max_rate_under_slo, recommendation
from batchsim.sim.sweep.presets import PRESETS, get_preset
from batchsim.sim.sweep.sweep import (
    BACKENDS,
    SWEEP_FILES,
    SweepSpec,
    check,
    expand,
    parse_rates,
    parse_vary,
    run_sweep,
    write_sweep,
)
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.sim.workload.transform import TraceOptions

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", action="append", default=[], metavar="POLICY[,POLICY]",
                   help=f"policies to sweep (repeatable or comma-separated): {available()}")
    p.add_argument("--vary", action="append", default=[], metavar="KNOB=V1,V2,...",
                   help="a knob's values (repeatable; the grid is their cartesian product)")
    add_knob_option(p, what="a knob fixed for every point")
    add_engine_config_option(p)
    p.add_argument("--request-rate", metavar="START:STOP:COUNT|R1,R2,...",
                   help="loads in req/s: 1:40:10 = 10 rates from 1 to 40 inclusive "
                        "(linspace); or a list such as 1,5,inf. With --trace: the mean rates "
                        "to replay the trace at (default: as recorded)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a seed experiment: fixes the configurations and workload")
    p.add_argument("--goodput", nargs="+", metavar="SLO", default=None,
                   help="SLOs in ms, e.g. ttft:500 tpot:50; a load meets them when ≥99%% of "
                        "its requests do")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the number of CPUs; local backend)")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="where the points run: local worker processes (default), or Ray tasks "
                        "(needs the sweep extra: pip install 'batchsim[sweep]')")
    p.add_argument("--address", metavar="ADDR",
                   help="with --backend ray: the Ray cluster (auto, HOST:PORT or "
                        "ray://HOST:PORT; default: RAY_ADDRESS, else a new local instance)")
    p.add_argument("--profile", help="profile JSON (default: the shipped qwen2.5-0.5b profile)")
    add_cluster_options(p, None)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic workload")
    p.add_argument("--reject-too-long", action="store_true",
                   help="reject requests longer than the model's context instead of failing")
    p.add_argument("--out", type=Path, help="folder to write (default: runs/<time>-sweep)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    add_jitter_option(p, default=False)
    add_max_concurrency_option(p)
    add_cpu_path_options(p)
    p.add_argument("--quiet", action="store_true", help="print only the sweep folder")
    add_workload_options(p, defaults=SyntheticSpec(), request_rate=False, rescale=True,
                         trace_help="trace to replay at each --request-rate (any format "
                                    "simulate reads)", per="per point")


def _split(items: list[str]) -> list[str]:
    return [x.strip() for item in items for x in item.split(",") if x.strip()]


def sweep_from_args(args: argparse.Namespace) -> SweepSpec:
    """Build the sweep from the command line; every input error is raised here, before work."""
    work = workload_from_args(args)
    given = work.synthetic
    rates = parse_rates(args.request_rate) if args.request_rate else ()
    options = work.trace_options
    if options is not None and options.target_rate is not None:
        # one load: the trace at that mean rate (what --request-rate R does for a trace)
        if rates:
            raise UsageError("--target-rate and --request-rate both set the trace's rate: "
                             "give --request-rate R1,R2,... alone")
        rates = (options.target_rate,)
        options = dataclasses.replace(options, target_rate=None)
    if args.preset:
        if args.policy or args.vary or args.trace:
            raise ValueError("--preset fixes the configurations and workload: drop --policy, "
                             "--vary and --trace")
        preset = get_preset(args.preset)
        configurations = preset.configurations
        synthetic: SyntheticSpec | None = dataclasses.replace(preset.synthetic, **given)
        rates = rates or preset.rates
    else:
        policies = _split(args.policy)
        if not policies:
            raise ValueError("sweep needs --policy (or --preset)")
        vary = resolve_knob_aliases(parse_vary(args.vary), policies)
        configurations = tuple(expand(policies, vary))
        synthetic = None if work.trace is not None else SyntheticSpec(**given)
    cpu_options = args.cpu_profile is not None or args.kv_copy_gbps is not None
    if cpu_options and not any("cpu" in get_policy(c.policy).paths for c in configurations):
        raise ValueError("--cpu-profile and --kv-copy-gbps apply to policies with a CPU path "
                         "(hybrid), and this sweep has none")
    knobs = knobs_from_args(args, sorted({c.policy for c in configurations}))
    _, cluster = cluster_from_args(args)
    base = RunSpec(policy=configurations[0].policy, knobs=knobs, cluster=cluster,
                   profile=args.profile, trace=work.trace, time_scale=work.time_scale,
                   trace_options=options, synthetic=synthetic, seed=args.seed,
                   reject_too_long=args.reject_too_long,
                   goodput=parse_goodput(args.goodput) if args.goodput else None,
                   step_jitter=args.jitter, cpu_profile=args.cpu_profile,
                   kv_copy_gbps=args.kv_copy_gbps, kv_copy_latency_us=args.kv_copy_latency_us,
                   engine_config=engine_config(args.engine_config,
                                               [c.policy for c in configurations]),
                   max_concurrency=args.max_concurrency)
    base, assumed = with_cpu_path_defaults(base, [c.policy for c in configurations])
    return SweepSpec(tuple(configurations), tuple(rates), base, tuple(assumed))


def sweep_meta(sweep: SweepSpec, args: argparse.Namespace, n_points: int) -> dict[str, Any]:
    """sweep.json: what was swept, on what, and how to run it again."""
    base = sweep.base
    workload: dict[str, Any] = {"source": base.trace or "synthetic"}
    if base.trace is not None:
        workload["time_scale"] = base.time_scale
        if base.trace_options is not None and base.trace_options != TraceOptions(
                seed=base.trace_options.seed):  # the trace read other than as recorded
            workload["trace_options"] = dataclasses.asdict(base.trace_options)
    else:
        workload["synthetic"] = dataclasses.asdict(base.synthetic or SyntheticSpec())
    return {
        "preset": args.preset,
        "configurations": [{"label": c.label, "policy": c.policy, "knobs": dict(c.knobs)}
                           for c in sweep.configurations],
        "request_rates": [r if math.isfinite(r) else "inf" for r in sweep.rates],
        "fixed_knobs": dict(base.knobs),
        **({"cluster": dataclasses.asdict(base.cluster)} if base.cluster is not None else {}),
        "engine_config": (base.engine_config.provenance(base.knobs)
                          if base.engine_config is not None else None),
        "points": n_points,
        "workload": workload,
        "profile": load_profile(base.profile).summary(),
        "seed": base.seed,
        "goodput": dict(base.goodput) if base.goodput else None,
        "command": " ".join(["batchsim", *sys.argv[1:]]),
        **({"assumptions": list(sweep.assumptions)} if sweep.assumptions else {}),
        **({"max_concurrency": base.max_concurrency} if base.max_concurrency else {}),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal: numbers as the reports write them
    (reports.fmt.number: 11,353 rather than 1.135e+04), the presets' shares as percentages."""
    from batchsim.reports.fmt import number, percent
    from batchsim.sim.sweep.presets import SHARE_COLUMNS

    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def cell(v: Any, col: str = "") -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if col in SHARE_COLUMNS and isinstance(v, float):
            return percent(v)
        return number(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)

    cells = [[cell(r.get(c), c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _limit_rows(limits: pd.DataFrame) -> list[dict[str, Any]]:
    """The max-rate-under-SLO table with the reports' column names and the attainment as a
    percentage (`100.0%`, not `1`)."""
    from batchsim.reports.fmt import metric_label, percent

    def cell(key: str, value: Any) -> Any:
        if key == "slo_attainment_at_max" and isinstance(value, float) and math.isfinite(value):
            return percent(value)
        return value

    return [{metric_label(str(k)): cell(str(k), v) for k, v in row.items()}
            for row in limits.to_dict("records")]


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.backend == "ray":
        if args.workers is not None:
            raise UsageError("--workers sets local processes: with --backend ray, Ray runs the "
                             "points on the cluster's CPUs (drop --workers)")
        require_sweep_extra()  # before any work: one line naming the extra
    elif args.address is not None:
        raise UsageError("--address is the Ray cluster's: give it with --backend ray")
    sweep = sweep_from_args(args)
    points = check(sweep)  # unknown knob, bad value, bad workload: one line, nothing run
    if sweep.base.engine_config is not None:  # its warnings about the profile, once
        for line in context_limit(sweep.base.engine_config, load_profile(sweep.base.profile))[1]:
            logger.warning("%s", line)
    out = args.out or Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-sweep"
    check_output(out, args.force, "folder", SWEEP_FILES)
    workers = max(1, min(args.workers or os.cpu_count() or 1, len(points)))
    where = (f"on Ray ({args.address or 'local instance'})" if args.backend == "ray"
             else f"with {workers} workers")
    bar = Progress(len(points), f"sweeping {where}", " points", final_line=not args.quiet)
    start = time.perf_counter()
    table = run_sweep(sweep, workers, progress=bar.update, points=points, backend=args.backend,
                      address=args.address)
    elapsed = time.perf_counter() - start
    bar.phase("writing sweep folder")
    meta = sweep_meta(sweep, args, len(points))
    preset_tables = get_preset(args.preset).tables(table) if args.preset else []

    def report(tmp: Path) -> None:
        from batchsim.reports.sweep_report import render_sweep_report

        render_sweep_report(pd.read_csv(tmp / "sweep.csv"), meta, tmp / "report.html")

    write_sweep(out, table, meta, writers=(report,))
    bar.close()
    if not args.quiet:
        for sentence in sweep.assumptions:
            print(f"note: {sentence}")
        print(recommendation(table, meta["goodput"]))
        if meta["goodput"]:
            print(format_table(_limit_rows(max_rate_under_slo(table))))
        for title, rows in preset_tables:
            print(f"\n{title}\n{format_table(rows)}")
        print(f"\n{len(points)} points in {elapsed:.1f} s {where}")
    print(f"sweep folder: {out}")
    return 0
