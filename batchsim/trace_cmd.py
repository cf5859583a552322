"""`batchsim trace`: look at a trace (`stats`) or rewrite it in the native format (`convert`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from batchsim.args import add_format_options, add_trace_options, trace_options
from batchsim.sim.outputs import check_output
from batchsim.sim.workload.stats import trace_stats
from batchsim.sim.workload.traces import read_trace
from batchsim.sim.workload.transform import TraceOptions, write_native


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="trace_command", required=True, metavar="{stats,convert}")
    s = sub.add_parser("stats", help="size, rate, burstiness and lengths of a trace",
                       description="Print a trace's size, arrival rate, burstiness and lengths.")
    s.add_argument("file", help="trace file in any known format")
    add_format_options(s)
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.add_argument("--html", type=Path, metavar="FILE",
                   help="also write an HTML report of the distributions (default: none)")
    s.add_argument("--force", action="store_true", help="replace an existing --html file")
    s.set_defaults(trace_handler=run_stats)
    c = sub.add_parser("convert", help="window, speed up, filter or sample a trace and write it "
                       "in the native JSONL format",
                       description="Rewrite a trace in the native JSONL format, optionally "
                       "windowed, rescaled, filtered and sampled.")
    c.add_argument("file", help="trace file in any known format")
    c.add_argument("--out", type=Path, required=True, help="native JSONL file to write")
    c.add_argument("--force", action="store_true", help="replace an existing --out")
    add_trace_options(c, rescale=True)
    c.add_argument("--seed", type=int, default=0, help="seed of --sample")
    c.set_defaults(trace_handler=run_convert)


def run(args: argparse.Namespace) -> int:
    return int(args.trace_handler(args))


def run_stats(args: argparse.Namespace) -> int:
    if args.html is not None:
        check_output(args.html, args.force, "file", flag="--html")
    workload = read_trace(args.file, TraceOptions(format=args.trace_format, strict=args.strict))
    stats = trace_stats(workload)
    if args.html is not None:
        from batchsim.reports.trace_report import write_trace_report  # plotly only when asked for

        write_trace_report(args.html, stats, workload.arrival_s, workload.input_tokens,
                           workload.output_tokens)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    if args.html is not None and not args.json:
        print(f"report: {args.html}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    check_output(args.out, args.force, "file")  # before reading a large file for nothing
    workload = read_trace(args.file, trace_options(args))
    write_native(workload, args.out, force=args.force)
    print(f"wrote {args.out}: {describe(workload.provenance)}")
    return 0


def describe(provenance: dict[str, Any]) -> str:
    """One line saying what was read, dropped and rescaled."""
    parts = [f"{provenance['num_requests']:,} requests from {provenance['num_read']:,} "
             f"({provenance['format']} format)"]
    for key, what in (("dropped_zero_length", "with 0 tokens"),
                      ("dropped_outside_window", "outside the window"),
                      ("dropped_too_long", "over --max-input-len"),
                      ("dropped_by_sample", "by --sample")):
        if provenance.get(key):
            parts.append(f"{provenance[key]:,} dropped {what}")
    if provenance.get("sorted"):
        parts.append("sorted by arrival")
    if provenance["time_scale"] != 1.0:
        parts.append(f"time x {provenance['time_scale']:.6g}")
    return "; ".join(parts)


def format_stats(stats: dict[str, Any]) -> str:
    """A table in the style of `vllm bench serve`'s summary."""
    def num(value: float | None, spec: str = ",.2f") -> str:
        return "n/a" if value is None else format(value, spec)

    rows = [
        ("File:", stats["file"]),
        ("Format:", stats["format"]),
        ("Requests:", f"{stats['num_requests']:,}"),
        ("Time span (s):", num(stats["span_s"])),
        ("Mean arrival rate (req/s):", num(stats["mean_rate"], ",.3f")),
        ("Peak minute rate (req/s):", num(stats["peak_minute_rate"], ",.3f")),
        ("Gap CV:", num(stats["gap_cv"], ".3f")),
        ("Gamma shape (1/CV^2):", num(stats["gamma_shape"], ".3f")),
        ("Duplicate timestamps:", f"{stats['duplicate_timestamps']:,}"),
    ]
    for key, name in (("input_tokens", "Input"), ("output_tokens", "Output")):
        s = stats[key]
        rows.append((f"{name} tokens mean/median/p99:",
                     f"{s['mean']:,.1f} / {s['median']:,.0f} / {s['p99']:,.0f}"))
    if stats["dropped_zero_length"]:
        rows.append(("Dropped (0 tokens):", f"{stats['dropped_zero_length']:,}"))
    width = max(len(k) for k, _ in rows) + 2
    bar = "=" * 16 + " Trace statistics " + "=" * 16
    return "\n".join([bar, *(f"{k:<{width}}{v}" for k, v in rows), "=" * len(bar)])
