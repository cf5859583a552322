"""How the full `batchsim simulate` run scales with the number of requests: 20k to 1M.

Usage: python bench/scale.py [--sizes 20000,50000,100000,200000,500000,1000000]
                             [--other CHECKOUT] [--rounds 1] [--no-report]

Each size runs issue 17's synthetic case (`--policy continuous --request-rate 300 --input-len
1000 --output-len 200 --range-ratio 0.5`, N requests) as one CLI process with every default
output (run folder with requests.csv, steps.csv, itl_cdf.csv and report.html, unless
--no-report). The table gives wall s, CPU s (the child's user + system time, from os.wait4),
peak RSS (the child's ru_maxrss: run folder included), steps (steps.csv rows) and per-request
microseconds (CPU), so linearity shows as a flat last column. With --other, each size runs on
that checkout too (A) and this one (B), alternating which goes first per round; the minimum
CPU time over rounds is kept. CPU figures of this machine; on a shared machine wall time also
counts other processes' turns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASE = ["--policy", "continuous", "--request-rate", "300", "--input-len", "1000",
        "--output-len", "200", "--range-ratio", "0.5"]


def run_cli(checkout: Path, n: int, out: Path, report: bool) -> dict[str, float]:
    """One `batchsim simulate` of n requests in its own process: wall, CPU, peak RSS, steps."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, "-m", "batchsim", "simulate", *CASE, "--num-requests", str(n),
           "--out", str(out), "--force", "--quiet", *([] if report else ["--no-report"])]
    with tempfile.TemporaryFile() as err:  # the overload warning, shown only on failure
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if status != 0:
            err.seek(0)
            raise SystemExit(f"failed ({status}): {' '.join(cmd)}\n{err.read().decode()}")
    with open(out / "steps.csv", "rb") as f:
        steps = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b"")) - 1
    completed = json.loads((out / "metrics.json").read_text())["completed"]
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "steps": steps, "completed": completed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20000,50000,100000,200000,500000,1000000")
    p.add_argument("--other", type=Path, help="another checkout to run alternately (A)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-report", action="store_true", help="runs without report.html")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sides = [("B", ROOT)] if args.other is None else [("A", args.other.resolve()), ("B", ROOT)]
    load_before = os.getloadavg()[0]
    best: dict[tuple[int, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for n in sizes:
                for side, checkout in (sides if k % 2 == 0 else sides[::-1]):
                    r = run_cli(checkout, n, Path(tmp) / f"run-{side}", not args.no_report)
                    if (n, side) not in best or r["cpu_s"] < best[(n, side)]["cpu_s"]:
                        best[(n, side)] = r
                    print(f"round {k + 1}: {n} {side} done", file=sys.stderr, flush=True)
    names = ", ".join(f"{side} = {checkout}" for side, checkout in sides)
    print(f"{names}; {'no report' if args.no_report else 'every default output'}; min CPU of "
          f"{args.rounds} round(s); load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs")
    print(f"{'requests':>9}{'side':>5}{'wall s':>8}{'cpu s':>8}{'peak MB':>9}{'steps':>9}"
          f"{'us/req cpu':>11}{'us/req wall':>12}")
    for (n, side), r in best.items():
        print(f"{n:>9}{side:>5}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['rss_mb']:>9.0f}"
              f"{r['steps']:>9}{r['cpu_s'] / n * 1e6:>11.1f}{r['wall_s'] / n * 1e6:>12.1f}")


if __name__ == "__main__":
    main()
