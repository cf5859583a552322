"""The `batchsim` command: parse, build, run, write; user errors become one line and exit 2.

A user error is a `UsageError` (or any ValueError: configs reject impossible values with one,
JSON and number parsing raise them) or an OSError on a path the user named. Anything else,
KeyError included, is a bug: it propagates with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from types import ModuleType
from typing import NoReturn

from batchsim import __version__, signals


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"batchsim: error: {message}\n")


def _commands() -> dict[str, tuple[ModuleType, str]]:
    from batchsim import (
        bench_cmd,
        plan_cmd,
        profile_cmd,
        report_cmd,
        serve_cmd,
        simulate_cmd,
        sweep_cmd,
        trace_cmd,
        validate_cmd,
    )

    return {
        "simulate": (simulate_cmd, "simulate a batching policy on a workload"),
        "profile": (profile_cmd, "measure step costs on a real engine and fit cost models"),
        "validate": (validate_cmd, "run a policy on the real engine and in the simulator, "
                                   "and compare"),
        "sweep": (sweep_cmd, "simulate policies x knob values x loads in parallel; best under "
                             "an SLO"),
        "plan": (plan_cmd, "the fewest replicas (and the knobs) that meet --goodput at "
                           "--request-rate R"),
        "trace": (trace_cmd, "inspect a trace (stats) or convert it to the native format "
                             "(window, rate, filters, sampling)"),
        "report": (report_cmd, "write an HTML report of run folders, a profile, a sweep or a "
                               "validation"),
        "serve": (serve_cmd, "serve the real engine with a policy over an OpenAI-compatible "
                             "HTTP API (live /metrics and dashboard)"),
        "bench": (bench_cmd, "send a workload to an OpenAI-compatible server (vllm bench "
                             "semantics) and write a run folder of what the client measured"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchsim", description="Profile once, simulate batching policies "
                     "in seconds, validate on the real engine.")
    parser.add_argument("--version", action="version", version=f"batchsim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module, help_text) in _commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    with signals.handled():
        try:
            args = build_parser().parse_args(argv)  # imports pandas: Ctrl-C may land here too
            logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                                format="batchsim: %(levelname)s: %(message)s")
            with warnings.catch_warnings():
                # inputs are checked before use (sim.checks), so a numpy RuntimeWarning
                # (overflow, invalid value) says nothing the user can act on: shown with -v only
                if not args.verbose:
                    warnings.simplefilter("ignore", RuntimeWarning)
                return int(args.handler(args))
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (batchsim.signals)
            print(signals.message(e), file=sys.stderr)
            return signals.exit_status(e)
        except (ValueError, OSError) as e:  # UsageError is a ValueError
            print(f"batchsim: error: {e or type(e).__name__}", file=sys.stderr)
            return 2
