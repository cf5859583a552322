"""Sweep speed: wall time of a 100-point sweep of 5,000-request runs, as `batchsim sweep` runs it.

Default grid: continuous batching, max_num_seqs 8, 16, 32, 64, 128 × 20 request rates from 2 to
60 req/s (linspace), 5,000 requests each (input 1024, output 128 tokens, ±20%), SLO ttft:500
tpot:50, in os.cpu_count() workers. Prints the wall time, points per second, CPU seconds of the
sweep's processes (the CLI and its workers), and the load average before and after (the
development machine is a shared 2-core VM: quote both).
With --other CHECKOUT the same sweep also runs on that checkout (A) and this one (B), in
alternating order over --rounds, and the sweep tables are compared (they must be identical).
Usage: python bench/sweep_speed.py [--workers N] [--num-requests N] [--rates 2:60:20]
                                   [--other CHECKOUT] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_sweep(checkout: Path, argv: list[str], out: Path) -> dict[str, float]:
    """One `batchsim sweep` process: wall s, CPU s (it and its workers), points."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, "-m", "batchsim", *argv, "--out", str(out), "--force", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # the workers' time is in the child's rusage
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
    points = len((out / "sweep.csv").read_text().splitlines()) - 1
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--num-requests", type=int, default=5000)
    parser.add_argument("--rates", default="2:60:20")
    parser.add_argument("--seqs", default="8,16,32,64,128")
    parser.add_argument("--other", type=Path, help="another checkout to run alternately (A)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    argv = ["sweep", "--policy", "continuous", "--vary", f"max_num_seqs={args.seqs}",
            "--request-rate", args.rates, "--num-requests", str(args.num_requests),
            "--range-ratio", "0.2", "--goodput", "ttft:500", "tpot:50",
            "--workers", str(args.workers)]
    sides = [("B", ROOT)] if args.other is None else [("A", args.other.resolve()), ("B", ROOT)]
    load_before = os.getloadavg()
    results: list[tuple[str, dict[str, float]]] = []
    tables: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for side, checkout in (sides if k % 2 == 0 else sides[::-1]):
                out = Path(tmp) / f"sweep-{side}"
                results.append((side, run_sweep(checkout, argv, out)))
                tables[side] = (out / "sweep.csv").read_bytes()
    same = len(set(tables.values())) == 1
    print(f"{' '.join(f'{s} = {c}' for s, c in sides)}; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs"
          + ("; sweep.csv identical" if len(sides) > 1 and same else ""))
    if not same:
        print("sweep.csv DIFFERS between the sides")
    for side, r in results:
        print(f"{side}: {r['points']:.0f} points × {args.num_requests:,} requests, "
              f"{args.workers} workers: {r['wall_s']:.1f} s wall "
              f"({r['points'] / r['wall_s']:.2f} points/s), {r['cpu_s']:.1f} s CPU "
              f"({r['points'] / r['cpu_s']:.2f} points per CPU s)")


if __name__ == "__main__":
    main()
