"""Sweep speed: wall time of a 100-point sweep of 5,000-request runs, as `batchsim sweep` runs it.

Default grid: continuous batching, max_num_seqs 8, 16, 32, 64, 128 × 20 request rates from 2 to
60 req/s (linspace), 5,000 requests each (input 1024, output 128 tokens, ±20%), SLO ttft:500
tpot:50, in os.cpu_count() workers. Prints the wall time, points per second, and the load
average before and after (the development machine is a shared 2-core VM: quote both).
Usage: python bench/sweep_speed.py [--workers N] [--num-requests N] [--rates 2:60:20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--num-requests", type=int, default=5000)
    parser.add_argument("--rates", default="2:60:20")
    parser.add_argument("--seqs", default="8,16,32,64,128")
    args = parser.parse_args()
    from batchsim.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["sweep", "--policy", "continuous", "--vary", f"max_num_seqs={args.seqs}",
                "--request-rate", args.rates, "--num-requests", str(args.num_requests),
                "--range-ratio", "0.2", "--goodput", "ttft:500", "tpot:50",
                "--workers", str(args.workers), "--out", str(Path(tmp) / "sweep"), "--quiet"]
        load_before = os.getloadavg()
        start, cpu0 = time.perf_counter(), os.times()
        assert cli(argv) == 0
        wall = time.perf_counter() - start
        cpu1 = os.times()
        points = len((Path(tmp) / "sweep" / "sweep.csv").read_text().splitlines()) - 1
    cpu = (cpu1.user + cpu1.children_user) - (cpu0.user + cpu0.children_user)
    print(f"{points} points × {args.num_requests:,} requests, {args.workers} workers: "
          f"{wall:.1f} s wall ({points / wall:.2f} points/s), {cpu:.1f} s CPU (all processes); "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
