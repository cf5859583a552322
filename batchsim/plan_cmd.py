"""`batchsim plan`: the fewest replicas, and the knobs, that meet --goodput at --request-rate."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from batchsim import sweep_cmd
from batchsim.extras import require_sweep_extra
from batchsim.sim.cluster.spec import DEFAULT_ROUTER, MAX_REPLICAS
from batchsim.sim.errors import UsageError
from batchsim.sim.outputs import check_output
from batchsim.sim.sweep.capacity import plan_capacity
from batchsim.sim.sweep.sweep import SWEEP_FILES, Configuration, write_sweep


def add_arguments(p: argparse.ArgumentParser) -> None:
    sweep_cmd.add_arguments(p)  # the sweep's grid, workload and backend options
    p.add_argument("--max-replicas", type=int, default=16, metavar="N",
                   help=f"the most replicas to try (default 16, at most {MAX_REPLICAS})")


def run(args: argparse.Namespace) -> int:
    if args.preset:
        raise UsageError("plan searches replicas for --policy/--vary configurations: drop "
                         "--preset")
    if args.replicas != 1:
        raise UsageError("plan tries 1, 2, ... replicas itself: give --max-replicas, not "
                         "--replicas")
    if getattr(args, "max_concurrency", None) is not None:
        raise UsageError("plan sizes replicas for an open-loop --request-rate; --max-concurrency "
                         "(closed-loop clients) applies to one server: drop it")
    if not args.goodput:
        raise UsageError("plan needs --goodput (e.g. ttft:500 tpot:50): the SLO to meet")
    if not args.request_rate and not args.target_rate:
        raise UsageError("plan needs --request-rate R: the load to serve")
    if args.backend == "ray":
        require_sweep_extra()
    elif args.address is not None:
        raise UsageError("--address is the Ray cluster's: give it with --backend ray")
    args.policy = args.policy or ["continuous"]
    router, args.router = args.router, DEFAULT_ROUTER  # routers travel in the configurations
    sweep = sweep_cmd.sweep_from_args(args)
    configs = tuple(c if "router" in dict(c.knobs) else
                    Configuration(c.policy, (*c.knobs, ("router", router)), c.name)
                    for c in sweep.configurations)
    sweep = dataclasses.replace(sweep, configurations=configs)
    out = args.out or Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-plan"
    check_output(out, args.force, "folder", SWEEP_FILES)

    def progress(n: int, rows: pd.DataFrame) -> None:
        if not args.quiet:
            best = rows["slo_attainment"].max()
            print(f"{n} replica{'s' if n > 1 else ' '}: {len(rows)} configurations, best "
                  f"{best:.1%} within the SLO", flush=True)

    plan = plan_capacity(sweep, args.max_replicas, args.workers, progress,
                         backend=args.backend, address=args.address)
    meta: dict[str, Any] = sweep_cmd.sweep_meta(sweep, args, len(plan.table))
    meta["capacity"] = {"request_rate": sweep.rates[0], "max_replicas": args.max_replicas,
                        "replicas": plan.replicas, "config": plan.best["config"],
                        "sentence": plan.sentence}

    def report(tmp: Path) -> None:
        from batchsim.reports.sweep_report import render_sweep_report

        render_sweep_report(pd.read_csv(tmp / "sweep.csv"), meta, tmp / "report.html")

    write_sweep(out, plan.table, meta, writers=(report,))
    if not args.quiet:
        for sentence in sweep.assumptions:
            print(f"note: {sentence}")
        print(plan.sentence)
    print(f"plan folder: {out}", file=sys.stdout)
    return 0
