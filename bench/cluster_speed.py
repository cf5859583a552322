"""Cluster simulation speed: 8 replicas at 8x the load against 1 replica at 1x, per request.

The workload is an Azure-conversation-like synthetic hour: 19,366 requests at 5.5 req/s (the
published size and rate of the Azure LLM inference trace 2023, conversation), gamma arrivals of
shape 0.5 and lengths sampled from traces/chat.jsonl (itself fitted to that trace's published
length percentiles; traces/generate_chat.py). B is the same hour at 8x the rate (8 x 19,366
requests at 44 req/s) on 8 replicas of the same profile behind a router, so every replica sees
about the load A's one replica sees. The cost is CPU seconds of `simulate` (the run and its
tables and metrics, not the input preparation) per simulated request; A and B alternate in one
process, and the ratio is taken per round. Target: B/A <= 2.

Usage: python bench/cluster_speed.py [--rounds 2] [--router least_outstanding] [--minutes 60]
       [--profile FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOUR_REQUESTS = 19_366  # the Azure conversation trace: 19,366 requests in 58 minutes
RATE = 5.5  # req/s
SCALE = 8


def case(replicas: int, minutes: float, router: str, profile: str | None) -> dict[str, float]:
    from batchsim.sim.cluster.spec import ClusterSpec
    from batchsim.sim.run import RunSpec, prepare, simulate
    from batchsim.sim.workload.synthetic import SyntheticSpec

    n = round(HOUR_REQUESTS * minutes / 60) * replicas
    synthetic = SyntheticSpec(num_requests=n, request_rate=RATE * replicas, burstiness=0.5,
                              lengths_from=str(ROOT / "traces" / "chat.jsonl"))
    spec = RunSpec(policy="continuous", profile=profile, synthetic=synthetic, seed=0,
                   cluster=ClusterSpec(replicas, router) if replicas > 1 else None)
    prep = prepare(spec)
    cpu0 = time.process_time()
    out = simulate(prep)
    cpu = time.process_time() - cpu0
    m = out.metrics
    return {"replicas": replicas, "requests": n, "cpu_s": cpu, "us_per_req": cpu / n * 1e6,
            "steps": len(out.steps), "req_s": m["request_throughput"],
            "ttft_p99_ms": m["ttft_ms"]["p99"] or float("nan"),
            "busy": m["gpu_busy_fraction"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--router", default="least_outstanding")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="length of the synthetic trace (default: the hour)")
    parser.add_argument("--profile", default=None, help="default: the shipped default profile")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; router {args.router}; "
          f"{args.minutes:g} min of the synthetic hour; profile {args.profile or 'default'}")
    header = (f"{'round':>5} {'replicas':>8} {'requests':>9} {'steps':>9} {'CPU s':>7} "
              f"{'us/req':>7} {'req/s':>7} {'TTFT p99 ms':>11} {'busy':>5}")
    print(header)
    ratios = []
    for r in range(args.rounds):
        a = case(1, args.minutes, args.router, args.profile)
        b = case(SCALE, args.minutes, args.router, args.profile)
        for row in (a, b):
            print(f"{r:>5} {row['replicas']:>8} {row['requests']:>9,} {row['steps']:>9,} "
                  f"{row['cpu_s']:>7.1f} {row['us_per_req']:>7.0f} {row['req_s']:>7.2f} "
                  f"{row['ttft_p99_ms']:>11.1f} {row['busy']:>5.2f}")
        ratios.append(b["us_per_req"] / a["us_per_req"])
    print(f"per-request cost, {SCALE} replicas at {SCALE}x / 1 replica at 1x: "
          + ", ".join(f"{x:.2f}" for x in ratios)
          + f" (median {statistics.median(ratios):.2f}; target <= 2)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
