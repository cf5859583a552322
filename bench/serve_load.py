"""What does the HTTP server cost? `batchsim serve` under closed-loop load at 1, 16, 64 streams.

For each concurrency N, in one run, alternating the order each round:
  process  `batchsim serve` (the engine loop in its own process, the default), measured by
           `batchsim bench --max-concurrency N` over loopback;
  thread   the same with `--engine-loop thread` (the loop in a thread of the HTTP process,
           sharing its GIL: the previous design);
  inproc   the same EngineLoop, policy and engine in this process with N in-process clients
           and no HTTP at all (the floor).
Per mode: client tokens/s; engine step time (device busy / steps); the engine loop's host time
between steps per step (`batchsim:host_seconds_total`: schedule, complete, token hand-off,
stats, and any wait for a core or the GIL), split into its CPU time, its wait on a run queue
(Linux schedstat: runnable, but another process had the core) and the rest (in thread mode: the
GIL held by the HTTP thread). The server's overhead is host/step, as a share of the step time;
`own` leaves the run-queue wait out: on this shared 2-core VM that wait is the other tenants'
load, not the server's work, and it is what makes the wall-clock share meaningless here. Client
TTFT minus the server's own TTFT is the bench client's (and HTTP's) overhead.

Usage: python bench/serve_load.py [--model tiny-qwen2] [--streams 1,16,64] [--rounds 2]
       [--input-len 32] [--output-len 64] [--requests-per-stream 4] [--modes process,thread,inproc]
       [--pin]   (process mode only: the engine process alone on one CPU, the HTTP process and
                  the bench client on another, as a server gives its engine process a core)
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
MODES = ("process", "thread", "inproc")
# --pin: the engine process's CPU and everyone else's, the first two this process may use
_ALLOWED = sorted(os.sched_getaffinity(0))
CLIENT_CPUS, ENGINE_CPUS = {_ALLOWED[0]}, {_ALLOWED[-1]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, n: int, engine_loop: str,
                 pin: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "batchsim", "serve", "--model", model,
                             "--policy", "continuous", "--set", f"max_num_seqs={n}",
                             "--engine-loop", engine_loop, "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            # the HTTP side (and, until moved, the engine) on the client's core
                            preexec_fn=(lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if pin
                            else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                if pin:
                    try:
                        pin_engine(proc.pid)
                    except BaseException:
                        proc.kill()
                        raise
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def pin_engine(server_pid: int) -> None:
    """Move every thread of the server's engine process (its one child) to ENGINE_CPUS."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    engines = [c for c in children  # not multiprocessing's resource tracker
               if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(engines) == 1, f"expected one engine process among {children}"
    for tid in os.listdir(f"/proc/{engines[0]}/task"):
        os.sched_setaffinity(int(tid), ENGINE_CPUS)


def run_http(args: argparse.Namespace, n: int, engine_loop: str) -> dict[str, Any]:
    """serve (engine loop in a process or a thread) + bench over loopback."""
    from batchsim.cli import main

    proc, url = start_server(args.model, n, engine_loop, args.pin)
    requests = max(16, n * args.requests_per_stream)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "b"
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
    return {"tok_s": m["output_token_throughput"], "step_ms": sm["busy_s"] / steps * 1e3,
            "host_ms": sm["host_ms_per_step"], "cpu_ms": sm["host_cpu_ms_per_step"],
            "rq_ms": sm["host_runqueue_ms_per_step"],
            "us_tok": sm["host_s"] / sm["generation_tokens"] * 1e6,
            "ttft_client": m["ttft_ms"]["mean"], "ttft_server": m["server_ttft_ms"]["mean"],
            "exact": m["generated_tokens_match"] and m["completed"] == requests}


def closed_loop(submit: Any, gen: Any, n: int, total: int) -> float:
    """n closed-loop clients sending total requests of gen through submit(gen, sink) (a new
    one each time one finishes); returns the wall seconds until the last finished."""
    lock, done, sent, finished = threading.Lock(), threading.Event(), [0], [0]

    def sink(ev: Any) -> None:  # on the thread that delivers events
        if ev.reason is None:
            return
        with lock:
            finished[0] += 1
            if finished[0] == total:
                done.set()
            elif sent[0] < total:
                sent[0] += 1
                submit(gen, sink)

    t0 = time.perf_counter()
    with lock:
        for _ in range(min(n, total)):
            sent[0] += 1
            submit(gen, sink)
    assert done.wait(600), "the closed-loop run did not finish"
    return time.perf_counter() - t0


def run_inproc(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """In process, no HTTP: N closed-loop clients on the same EngineLoop."""
    from batchsim.serve.builder import ServeSpec, build_served
    from batchsim.serve.engine_loop import EngineLoop
    from batchsim.serve.live_stats import LiveStats
    from batchsim.serve.protocol import GenerationRequest

    served = build_served(ServeSpec("continuous", {"max_num_seqs": str(n)}, model=args.model))
    stats = LiveStats(args.model)
    loop = EngineLoop(served.policy, served.runner, stats, **served.loop_options())
    total = max(16, n * args.requests_per_stream)
    gen = GenerationRequest("completion", [1] * args.input_len, args.output_len,
                            args.output_len, True, True, True, 0)
    loop.start()
    wall = closed_loop(loop.submit, gen, n, total)
    loop.drain(0)
    loop.join(30)
    steps = stats.steps
    return {"tok_s": total * args.output_len / wall, "step_ms": stats.busy_s / steps * 1e3,
            "host_ms": stats.host_s / steps * 1e3, "cpu_ms": stats.host_cpu_s / steps * 1e3,
            "rq_ms": stats.host_runqueue_s / steps * 1e3,
            "us_tok": stats.host_s / stats.generation_tokens * 1e6,
            "ttft_client": None, "ttft_server": None, "exact": True}


def mean(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return sum(values) / len(values) if values else None


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-qwen2")
    p.add_argument("--streams", default="1,16,64")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--input-len", type=int, default=32)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--requests-per-stream", type=int, default=4)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--pin", action="store_true",
                   help="process mode only: the engine process on one CPU, the HTTP process and "
                        "the bench client on another (the engine has a core to itself)")
    args = p.parse_args()
    modes = args.modes.split(",")
    assert set(modes) <= set(MODES), modes
    if args.pin:
        if modes != ["process"] or CLIENT_CPUS == ENGINE_CPUS:
            raise SystemExit("--pin needs --modes process and two CPUs")
        os.sched_setaffinity(0, CLIENT_CPUS)  # this process: the bench client
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load0 = os.getloadavg()
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for n in (int(x) for x in args.streams.split(",")):
        for r in range(args.rounds):  # alternate the modes, reversing the order each round
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                got = run_inproc(args, n) if mode == "inproc" else run_http(args, n, mode)
                runs.setdefault((n, mode), []).append(got)
        print(f"done: {n} streams (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    print(f"model {args.model}, input {args.input_len}, output {args.output_len} tokens, "
          f"{args.rounds} rounds; load average {load0[0]:.1f} at start, {load1[0]:.1f} at "
          f"end ({os.cpu_count()} CPUs)"
          + (f"; pinned: engine process on CPU {min(ENGINE_CPUS)}, HTTP process and client on "
             f"CPU {min(CLIENT_CPUS)}" if args.pin else ""))
    head = ("streams", "mode", "tok/s", "vs inproc", "step ms", "host ms/step", "CPU ms",
            "run-queue ms", "other ms", "host/step", "own/step", "host us/tok",
            "TTFT client ms", "TTFT server ms", "client ovh ms", "exact")
    print(" | ".join(head))
    for (n, mode), rs in runs.items():
        tok, step, host = mean(rs, "tok_s"), mean(rs, "step_ms"), mean(rs, "host_ms")
        cpu, rq = mean(rs, "cpu_ms"), mean(rs, "rq_ms")
        base = runs.get((n, "inproc"))
        base_tok = mean(base, "tok_s") if base else None
        c_ttft, s_ttft = mean(rs, "ttft_client"), mean(rs, "ttft_server")
        assert tok is not None and step is not None and host is not None and rq is not None
        assert cpu is not None
        print(" | ".join([
            str(n), mode, f"{tok:.0f}", fmt(tok / base_tok if base_tok else None, ".2f"),
            f"{step:.2f}", f"{host:.3f}", f"{cpu:.3f}", f"{rq:.3f}",
            f"{max(host - cpu - rq, 0.0):.3f}", f"{host / step:.1%}",
            f"{(host - rq) / step:.1%}", fmt(mean(rs, "us_tok"), ".1f"), fmt(c_ttft, ".1f"),
            fmt(s_ttft, ".1f"),
            fmt(c_ttft - s_ttft if c_ttft is not None and s_ttft is not None else None, ".1f"),
            "yes" if all(r["exact"] for r in rs) else "NO"]))


if __name__ == "__main__":
    main()
