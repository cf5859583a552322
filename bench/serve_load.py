"""What does the HTTP server cost? `batchsim serve` under closed-loop load at 1, 16, 64 streams.

For each concurrency N, alternating in one run (A, B, A, B):
  A  `batchsim serve` (subprocess, loopback) measured by `batchsim bench --max-concurrency N`:
     sustained requests/s and tokens/s seen by the client; from the server's /metrics the engine
     step time (device busy / steps) and the engine thread's host time between steps (schedule,
     complete, token hand-off, stats, and any wait for the GIL held by the HTTP thread), per step
     and per generated token; client TTFT minus the server's own TTFT (the client and HTTP
     overhead the bench client adds to what it measures).
  B  the same EngineLoop, policy and engine in this process with N in-process clients and no
     HTTP: tokens/s and step time without the server around it.
The server's overhead is A's host time per step over A's step time, and A's throughput against
B's. Every run is bounded (a fixed number of requests; each request has a timeout).

Usage: python bench/serve_load.py [--model tiny-qwen2] [--streams 1,16,64] [--rounds 2]
       [--input-len 32] [--output-len 64] [--requests-per-stream 4]
CPU numbers from this machine; they say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, n: int) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "batchsim", "serve", "--model", model,
                             "--policy", "continuous", "--set", f"max_num_seqs={n}",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def run_a(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """Through HTTP: serve + bench."""
    from batchsim.cli import main

    proc, url = start_server(args.model, n)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "b"
            requests = max(16, n * args.requests_per_stream)
            rc = main(["bench", "--endpoint", url, "--max-concurrency", str(n),
                       "--num-requests", str(requests), "--input-len", str(args.input_len),
                       "--output-len", str(args.output_len), "--out", str(out), "--quiet",
                       "--request-timeout-s", "300"])
            assert rc == 0, "bench failed"
            m = json.loads((out / "metrics.json").read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    sm = m["server_metrics"]
    steps = sm["engine_steps"]
    return {"req_s": m["request_throughput"], "tok_s": m["output_token_throughput"],
            "step_ms": sm["busy_s"] / steps * 1e3, "host_ms": sm["host_s"] / steps * 1e3,
            "host_cpu_ms": sm["host_cpu_ms_per_step"],
            "host_us_per_token": sm["host_s"] / sm["generation_tokens"] * 1e6,
            "client_ttft_ms": m["ttft_ms"]["mean"], "server_ttft_ms": m["server_ttft_ms"]["mean"],
            "exact": m["generated_tokens_match"] and m["completed"] == requests}


def run_b(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """In process, no HTTP: N closed-loop clients on the same EngineLoop."""
    from batchsim.serve.builder import ServeSpec, build_served
    from batchsim.serve.engine_loop import EngineLoop
    from batchsim.serve.events import Event
    from batchsim.serve.live_stats import LiveStats
    from batchsim.serve.protocol import GenerationRequest

    served = build_served(ServeSpec("continuous", {"max_num_seqs": str(n)}, model=args.model))
    stats = LiveStats(args.model)
    loop = EngineLoop(served.policy, served.runner, stats, **served.loop_options())
    total = max(16, n * args.requests_per_stream)
    gen = GenerationRequest("completion", [1] * args.input_len, args.output_len,
                            args.output_len, True, True, True, 0)
    lock, done, sent = threading.Lock(), threading.Event(), [0]
    finished = [0]

    def sink(ev: Event) -> None:  # on the engine thread
        if ev.reason is None:
            return
        with lock:
            finished[0] += 1
            if finished[0] == total:
                done.set()
            elif sent[0] < total:
                sent[0] += 1
                loop.submit(gen, sink)

    loop.start()
    t0 = time.perf_counter()
    with lock:
        for _ in range(min(n, total)):
            sent[0] += 1
            loop.submit(gen, sink)
    assert done.wait(600), "in-process run did not finish"
    wall = time.perf_counter() - t0
    loop.drain(0)
    loop.join(30)
    return {"req_s": total / wall, "tok_s": total * args.output_len / wall,
            "step_ms": stats.busy_s / stats.steps * 1e3,
            "host_ms": stats.host_s / stats.steps * 1e3,
            "host_cpu_ms": stats.host_cpu_s / stats.steps * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-qwen2")
    p.add_argument("--streams", default="1,16,64")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--requests-per-stream", type=int, default=4)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for n in (int(x) for x in args.streams.split(",")):
        a_runs, b_runs = [], []
        for _ in range(args.rounds):  # alternate A and B
            a_runs.append(run_a(args, n))
            b_runs.append(run_b(args, n))

        def mean(runs: list[dict[str, Any]], key: str) -> float:
            return sum(r[key] for r in runs) / len(runs)

        rows.append((n, mean(a_runs, "req_s"), mean(a_runs, "tok_s"), mean(b_runs, "tok_s"),
                     mean(a_runs, "step_ms"), mean(b_runs, "step_ms"), mean(a_runs, "host_ms"),
                     mean(b_runs, "host_ms"), mean(a_runs, "host_cpu_ms"),
                     mean(b_runs, "host_cpu_ms"),
                     mean(a_runs, "host_us_per_token"), mean(a_runs, "client_ttft_ms"),
                     mean(a_runs, "server_ttft_ms"), all(r["exact"] for r in a_runs)))
        print(f"done: {n} streams", file=sys.stderr, flush=True)
    print(f"model {args.model}, input {args.input_len}, output {args.output_len} tokens, "
          f"{args.rounds} rounds (A = serve over HTTP, B = same engine loop in-process)")
    head = ("streams", "req/s A", "tok/s A", "tok/s B", "A/B", "step ms A", "step ms B",
            "host ms/step A", "host ms/step B", "host CPU ms A", "host CPU ms B",
            "host/step A", "host us/tok A", "TTFT client",
            "TTFT server", "client ovh ms", "exact")
    print(" | ".join(head))
    for (n, req_s, tok_a, tok_b, step_a, step_b, host, host_b, cpu_a, cpu_b, host_tok, c_ttft,
         s_ttft, exact) in rows:
        print(" | ".join([str(n), f"{req_s:.1f}", f"{tok_a:.0f}", f"{tok_b:.0f}",
                          f"{tok_a / tok_b:.2f}", f"{step_a:.2f}", f"{step_b:.2f}",
                          f"{host:.3f}", f"{host_b:.3f}", f"{cpu_a:.3f}", f"{cpu_b:.3f}",
                          f"{host / step_a:.1%}",
                          f"{host_tok:.1f}",
                          f"{c_ttft:.1f}", f"{s_ttft:.1f}", f"{c_ttft - s_ttft:.1f}",
                          "yes" if exact else "NO"]))


if __name__ == "__main__":
    main()
