"""`batchsim validate --observed RUN`: a simulation of a real run's requests against the run."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
from pathlib import Path

from batchsim.args import (
    SYNTHETIC_FLAGS,
    TRACE_READ_FLAGS,
    engine_config,
    flag,
    knobs_from_args,
)
from batchsim.reports.fmt import metric_label
from batchsim.sim.errors import UsageError
from batchsim.sim.validation.observed_compare import ObservedSpec, validate_observed
from batchsim.sim.validation.plan import format_error_table, write_validation

logger = logging.getLogger(__name__)

# live-validation options that mean nothing here: the run fixes the requests and the engine
_LIVE_ONLY = ("trace", *TRACE_READ_FLAGS, *SYNTHETIC_FLAGS, "model", "device", "cpu_profile",
              "kv_copy_gbps")
_TABLE = ("request_throughput", "output_token_throughput", "ttft_ms.mean", "ttft_ms.median",
          "ttft_ms.p90", "ttft_ms.p99", "tpot_ms.mean", "tpot_ms.median", "tpot_ms.p90",
          "tpot_ms.p99", "e2el_ms.mean", "e2el_ms.median", "e2el_ms.p90", "e2el_ms.p99",
          "queue_ms.mean")


def spec_from_args(args: argparse.Namespace) -> ObservedSpec:
    given = [flag(k) for k in _LIVE_ONLY if getattr(args, k, None) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be combined with --observed: the observed "
                         "run fixes the requests and the engine")
    return ObservedSpec(observed=args.observed, policy=args.policy, profile=args.profile,
                        knobs=knobs_from_args(args, [args.policy]),
                        engine_config=engine_config(args.engine_config, [args.policy]),
                        seed=args.seed, step_jitter=bool(args.jitter),
                        jitter_replicas=args.jitter_replicas)


def run_observed(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    out = args.out or Path("runs") / (dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                                      + f"-observed-{spec.policy}")
    if out.exists() and not args.force:
        raise UsageError(f"{out} already exists: choose another --out or pass --force")
    result = validate_observed(spec)
    for line in result.engine_warnings:
        logger.warning("%s", line)
    doc = result.document(command_line(args, out))
    write_validation(out, doc, result.tables(), result.jsons(), report=_report)
    if not args.quiet:
        print(format_error_table(doc, _TABLE, label=metric_label))
        if result.run.timeseries is None:
            print("note: no timeseries.csv beside the run: no over-time comparison")
    print(f"validation folder: {out}")
    return 0


def command_line(args: argparse.Namespace, out: Path) -> str:
    words = ["batchsim", "validate", "--observed", args.observed, "--policy", args.policy]
    for dest in ("profile", "engine_config", "scheduling_policy"):
        if getattr(args, dest) is not None:
            words += [flag(dest), str(getattr(args, dest))]
    for item in args.knobs:
        words += ["--set", item]
    if args.jitter:
        words += ["--jitter", "--jitter-replicas", str(args.jitter_replicas)]
    return shlex.join([*words, "--seed", str(args.seed), "--out", str(out)])


def _report(folder: Path) -> None:
    from batchsim.reports.validation import write_validation_report

    write_validation_report(folder, folder / "report.html")
