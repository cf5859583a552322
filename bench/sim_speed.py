"""Simulator speed: simulated requests per wall second, real-time factor and peak memory.

Cases (each in its own subprocess so peak RSS is its own):
  capacity   saturate the continuous policy (all requests at t=0) to measure its capacity
  200k       200,000 requests, input ~1000 / output ~200 tokens (range ratio 0.2), Poisson
             arrivals at 90% of that capacity, continuous policy
  azure-hour the shape of the Azure conversation trace's hour: 19,366 requests at 5.5 req/s,
             lengths from traces/chat.jsonl, continuous policy
Usage: python bench/sim_speed.py [--profile FILE] [--requests 200000] [--jitter]
  --jitter   simulate with step-time jitter (sim.jitter; needs a measured --profile)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_case(args: argparse.Namespace) -> None:
    from batchsim.sim.run import RunSpec, prepare, simulate
    from batchsim.sim.workload.synthetic import SyntheticSpec

    synthetic = SyntheticSpec(
        num_requests=args.n, request_rate=args.rate, input_len=args.input_len,
        output_len=args.output_len, range_ratio=args.range_ratio, lengths_from=args.lengths_from)
    spec = RunSpec(policy="continuous", profile=args.profile, seed=0, synthetic=synthetic,
                   step_jitter=args.jitter)
    prep = prepare(spec)
    start, cpu0 = time.perf_counter(), time.process_time()
    out = simulate(prep)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = out.metrics
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "sim_s": m["duration_s"],
                      "completed": m["completed"], "steps": len(out.steps),
                      "request_throughput": m["request_throughput"],
                      "peak_rss_mb": peak_mb}))


def run_case(profile: str | None, n: int, rate: float, jitter: bool = False,
             **kw: object) -> dict:
    cmd = [sys.executable, __file__, "--case", "--n", str(n), "--rate", str(rate)]
    if profile:
        cmd += ["--profile", profile]
    if jitter:
        cmd.append("--jitter")
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile")
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int)
    p.add_argument("--rate", type=float)
    p.add_argument("--input-len", type=int, default=1000)
    p.add_argument("--output-len", type=int, default=200)
    p.add_argument("--range-ratio", type=float, default=0.2)
    p.add_argument("--lengths-from")
    p.add_argument("--jitter", action="store_true")
    args = p.parse_args()
    if args.case:
        one_case(args)
        return
    cap = run_case(args.profile, 20_000, float("inf"), args.jitter)
    capacity = cap["request_throughput"]
    rows = [("capacity (rate inf)", 20_000, cap)]
    big = run_case(args.profile, args.requests, 0.9 * capacity, args.jitter)
    rows.append((f"90% of capacity ({0.9 * capacity:.0f} req/s)", args.requests, big))
    chat = str(ROOT / "traces" / "chat.jsonl")
    azure = run_case(args.profile, 19_366, 5.5, args.jitter, lengths_from=chat)
    rows.append(("azure-conv hour (5.5 req/s)", 19_366, azure))
    # Rates use CPU seconds of the simulating process (one core): on a shared machine wall time
    # also counts other processes' turns. Both are printed.
    print(f"{'case':<34}{'requests':>9}{'wall s':>8}{'cpu s':>8}{'req/cpu s':>10}{'sim s':>8}"
          f"{'x real':>8}{'steps':>8}{'peak MB':>8}")
    for name, n, r in rows:
        print(f"{name:<34}{n:>9}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}"
              f"{r['completed'] / r['cpu_s']:>10.0f}{r['sim_s']:>8.0f}"
              f"{r['sim_s'] / r['cpu_s']:>8.0f}{r['steps']:>8}{r['peak_rss_mb']:>8.0f}")


if __name__ == "__main__":
    main()
