"""`batchsim bench`: measure an OpenAI-compatible server with a workload (serve extra)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np

from batchsim.args import ArgGroup, add_workload_options, workload_from_args
from batchsim.extras import require_serve_extra
from batchsim.progress import Progress
from batchsim.result_options import add_result_options, result_options
from batchsim.sim.run import RunSpec, check_out_dir, make_workload, write_run
from batchsim.sim.vllm_result import vllm_result
from batchsim.sim.workload.synthetic import SyntheticSpec
from batchsim.sim.workload.workload import Workload
from batchsim.summary import format_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_endpoint_options(p)
    p.add_argument("--out", type=Path, help="run folder to write (default: runs/<time>-bench)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic workload and of the prompts' token ids")
    p.add_argument("--quiet", action="store_true", help="print only the run folder")
    add_workload_options(p, defaults=SyntheticSpec(), request_rate=True, rescale=True,
                         trace_help="trace file: native JSONL, or Azure, BurstGPT, Mooncake or "
                                    "Vidur (detected)")
    add_result_options(p)


def add_endpoint_options(p: ArgGroup, required: bool = True) -> None:
    """The server to measure (bench, validate --endpoint)."""
    p.add_argument("--endpoint", required=required, metavar="URL",
                   help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    p.add_argument("--served-model", dest="served_model", metavar="NAME",
                   help="model name to request (default: the server's first in /v1/models)")
    p.add_argument("--max-concurrency", type=int, metavar="N",
                   help="requests in flight at most (closed-loop clients); default: no limit")
    p.add_argument("--request-timeout-s", type=float, default=600.0,
                   help="a request not answered completely by then fails (default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=256,
                   help="prompt token ids are drawn from [0, N) (default %(default)s: valid for "
                        "any model)")


def bench_prompts(workload: Workload, vocab_size: int, seed: int) -> list[list[int]]:
    """Seeded random token ids per request (step cost does not depend on their values)."""
    if vocab_size <= 0:
        raise ValueError(f"--vocab-size must be positive, got {vocab_size}")
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, int(n)).tolist() for n in workload.input_tokens]


def measure(args: argparse.Namespace, workload: Workload, label: str) -> tuple[Any, str]:
    """Send the workload; returns (RunOutput, model). Scrapes /metrics before and after."""
    from batchsim.serve.bench_run import bench_output, parse_prometheus, server_deltas
    from batchsim.serve.loadgen import LoadSpec, run_load

    spec = LoadSpec(args.endpoint, args.served_model, args.max_concurrency,
                    args.request_timeout_s)
    prompts = bench_prompts(workload, args.vocab_size, args.seed)
    bar = Progress(len(workload), label, " req")
    before = _scrape(spec.base)
    results, model = asyncio.run(run_load(spec, workload, prompts, bar.update))
    bar.update(len(workload))
    bar.close()
    after = _scrape(spec.base)
    server = server_deltas(parse_prometheus(before) if before else None,
                           parse_prometheus(after) if after else None)
    config = {
        "policy": "server",
        "bench": {"endpoint": args.endpoint, "model": model,
                  "max_concurrency": args.max_concurrency,
                  "request_timeout_s": args.request_timeout_s, "vocab_size": args.vocab_size,
                  "ignore_eos": True, "stream": True},
        "profile": {"model": model, "device": args.endpoint, "source": "observed",
                    "digest": "-"},
        "workload": {"source": workload.source, "num_requests": len(workload)},
        "seed": args.seed,
    }
    return bench_output(workload, results, config, server), model


def _scrape(base: str) -> str | None:
    """The server's /metrics text, or None if it has none (any OpenAI server may lack it)."""
    import httpx

    try:
        resp = httpx.get(f"{base}/metrics", timeout=5.0, trust_env=False)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


def run(args: argparse.Namespace) -> int:
    require_serve_extra("bench", ("httpx",))
    work = workload_from_args(args, request_rate=True)
    synthetic = None if work.trace is not None else SyntheticSpec(**work.synthetic)
    workload = make_workload(RunSpec(
        policy="", seed=args.seed, trace=work.trace, time_scale=work.time_scale,
        trace_options=work.trace_options, synthetic=synthetic))
    out = args.out or Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-bench"
    check_out_dir(out, args.force)
    saved = result_options(args)
    output, model = measure(args, workload, "benchmarking")
    if synthetic is not None:  # what was sent, as simulate records it (and --save-result reads)
        output.config["workload"]["synthetic"] = dataclasses.asdict(synthetic)
    from batchsim.reports.run_report import write_into_run

    def as_vllm(run: Any) -> dict[str, Any]:
        return vllm_result(run, saved.percentile_metrics, saved.metric_percentiles,
                           saved.detailed, backend="openai",
                           max_concurrency=args.max_concurrency)

    write_run(out, output, extra={"command": " ".join(["batchsim", *sys.argv[1:]])},
              writers=(write_into_run, *saved.writer(as_vllm)))
    elsewhere = saved.write_outside(as_vllm(output)) if saved.path else None
    m = output.metrics
    if not args.quiet:
        print(format_summary(m, f"server ({model})", output.requests,
                             title="Serving Benchmark Result",
                             percentile_metrics=saved.percentile_metrics,
                             metric_percentiles=saved.metric_percentiles))
        print(bench_lines(m))
    print(f"run folder: {out}")
    if saved.save:
        print(f"result JSON: {elsewhere or out / saved.name}")
    if m["completed"] == 0:
        first = output.requests["reject_reason"].iloc[0] if len(output.requests) else ""
        print(f"batchsim: error: no request completed against {args.endpoint} ({first})",
              file=sys.stderr)
        return 1
    return 0


def bench_lines(m: dict[str, Any]) -> str:
    """What only a bench run has: failures, token counts, server-side times and overhead."""
    lines = [f"failed requests: {m['failed']}, rejected (HTTP 503/429): {m['rejected']}",
             "every completed request got exactly its output tokens: "
             + ("yes" if m["generated_tokens_match"] else "NO")]
    overhead = (m.get("client_overhead_ttft_ms") or {}).get("mean")
    server = m.get("server_ttft_ms") or {}
    if server.get("mean") is not None:
        lines.append(f"server-side TTFT mean {server['mean']:.2f} ms, median "
                     f"{server['median']:.2f} ms (measured by the server)")
    if overhead is not None:
        lines.append(f"client + HTTP overhead on TTFT (client - server), mean: {overhead:.2f} ms")
    sm = m.get("server_metrics") or {}
    if sm.get("host_ms_per_step") is not None:
        lines.append(f"server engine-thread host time per step: {sm['host_ms_per_step']:.3f} ms")
    return "\n".join(lines)
