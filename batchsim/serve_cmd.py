"""`batchsim serve`: the real engine behind an OpenAI-compatible HTTP server (serve extra)."""

from __future__ import annotations

import argparse
import sys

from batchsim.args import add_knob_option, parse_knobs
from batchsim.policies.registry import available

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--profile", help="measured profile JSON: rebuild its engine exactly "
                     "(model, dtype, threads, device) and give the policy its memory facts")
    src.add_argument("--model", help="preset name, config.json or checkpoint directory")
    p.add_argument("--device", help="cuda or cpu (default: the profile's device, else cpu)")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (default: the profile's; with "
                   "--model float32 on CPU, the model's own on CUDA)")
    p.add_argument("--policy", required=True, choices=available(), help="batching policy")
    add_knob_option(p, "max_num_seqs=64")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    p.add_argument("--served-model-name", help="name clients use (default: the model's)")
    p.add_argument("--max-waiting", type=int, default=1024, metavar="N",
                   help="waiting requests at most; more get 503 + Retry-After (default "
                        "%(default)s)")
    p.add_argument("--kv-cache-gb", type=float, help="cap the KV pool at this size (default: "
                   "the policy's capacity; on CPU at most 1 GiB)")
    p.add_argument("--shutdown-grace-s", type=float, default=10.0,
                   help="on SIGTERM, seconds in-flight requests may take to finish before they "
                        "are aborted (default %(default)s)")
    p.add_argument("--engine-loop", choices=("process", "thread"), default="process",
                   help="run the engine loop in its own process (default), or in a thread of "
                        "the HTTP process, where it shares the GIL (kept to measure the "
                        "difference: bench/serve_load.py)")


def run(args: argparse.Namespace) -> int:
    from batchsim.extras import require_profile_extra, require_serve_extra

    require_serve_extra("serve")
    require_profile_extra("serve")
    if args.max_waiting <= 0:
        raise ValueError(f"--max-waiting must be positive, got {args.max_waiting}")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if not args.shutdown_grace_s >= 0:
        raise ValueError(f"--shutdown-grace-s must be >= 0, got {args.shutdown_grace_s}")
    if args.host not in LOOPBACK:
        print(f"batchsim: warning: binding {args.host}: the server has no authentication",
              file=sys.stderr)
    from batchsim.serve.app import EventPoster, create_app
    from batchsim.serve.builder import ServeSpec
    from batchsim.serve.events import EngineHandle
    from batchsim.serve.frontend import frontend
    from batchsim.serve.live_stats import LiveStats
    from batchsim.serve.runner import run_server

    spec = ServeSpec(args.policy, parse_knobs(args.knobs), args.profile, args.model,
                     args.device, args.dtype, args.kv_cache_gb)
    poster = EventPoster()
    engine: EngineHandle
    if args.engine_loop == "process":
        from batchsim.serve.engine_process import EngineProcess

        proc = EngineProcess(spec, args.max_waiting)
        facts = proc.boot()
        limits, detokenize = frontend(facts, args.served_model_name)
        stats = LiveStats(limits.name)
        proc.attach(stats, poster)
        engine = proc
    else:
        from batchsim.serve.builder import build_served
        from batchsim.serve.engine_loop import EngineLoop

        served = build_served(spec)
        facts = served.facts
        limits, detokenize = frontend(facts, args.served_model_name)
        stats = LiveStats(limits.name)
        engine = EngineLoop(served.policy, served.runner, stats, served.eos_token_id,
                            args.max_waiting, post=poster, **served.loop_options())
    app = create_app(engine, limits, stats, args.policy, poster, detokenize)
    c = facts.config
    url = f"http://{args.host}:{args.port}"

    def ready() -> None:
        print(f"serving {limits.name} ({c['device']}, {c['dtype']}, policy {args.policy}, "
              f"{c['kv_capacity_blocks']} KV blocks of {c['kv_block_size']}) on {url}  "
              f"(dashboard {url}/, metrics {url}/metrics)", flush=True)

    status = run_server(app, engine, args.host, args.port, args.shutdown_grace_s, ready)
    print("batchsim serve: stopped", flush=True)
    return status
