"""The `batchsim` command: parse, build, run, write; user errors become one line and exit 2.

A user error is a `UsageError` (or any ValueError: configs reject impossible values with one,
JSON and number parsing raise them) or an OSError on a path the user named. Anything else,
KeyError included, is a bug: it propagates with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from types import ModuleType
from typing import NoReturn

from batchsim import __version__, signals


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"batchsim: error: {message}\n")


# name -> (module under batchsim, help). Modules are imported only for the command being run
# (all of them only for a listing that needs their options), so `batchsim simulate` does not pay
# for pandas, torch or uvicorn while parsing its arguments.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate_cmd", "simulate a batching policy on a workload"),
    "profile": ("profile_cmd", "measure step costs on a real engine and fit cost models"),
    "validate": ("validate_cmd", "run a policy on the real engine and in the simulator, "
                                 "and compare"),
    "sweep": ("sweep_cmd", "simulate policies x knob values x loads in parallel; best under "
                           "an SLO"),
    "plan": ("plan_cmd", "the fewest replicas (and the knobs) that meet --goodput at "
                         "--request-rate R"),
    "trace": ("trace_cmd", "inspect a trace (stats) or convert it to the native format "
                           "(window, rate, filters, sampling)"),
    "report": ("report_cmd", "write an HTML report of run folders, a profile, a sweep or a "
                             "validation"),
    "serve": ("serve_cmd", "serve the real engine with a policy over an OpenAI-compatible "
                           "HTTP API (live /metrics and dashboard)"),
    "bench": ("bench_cmd", "send a workload to an OpenAI-compatible server (vllm bench "
                           "semantics) and write a run folder of what the client measured"),
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"batchsim.{COMMANDS[name][0]}")


def _command_in(argv: list[str]) -> str | None:
    """The command argv names (its first word that is not an option), if it is one of ours."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given argv, only the command it names gets its options (and its module
    imported): the others stay listed with their help, which is all `batchsim --help` shows."""
    parser = _Parser(prog="batchsim", description="Profile once, simulate batching policies "
                     "in seconds, validate on the real engine.")
    parser.add_argument("--version", action="version", version=f"batchsim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    chosen = _command_in(argv) if argv is not None else None
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == chosen:
            module = _module(name)
            module.add_arguments(p)
            p.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    with signals.handled():
        try:
            words = sys.argv[1:] if argv is None else argv
            args = build_parser(words).parse_args(words)  # imports: Ctrl-C may land here too
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
