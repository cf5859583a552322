"""Simulator speed, A against B: `bench/sim_speed.py`'s cases run alternately on two checkouts.

Usage: python bench/sim_speed_ab.py OTHER_CHECKOUT [--rounds 5] [--requests 100000]

A is OTHER_CHECKOUT (e.g. a worktree of the previous commit), B this checkout. Each round runs
every case once on A and once on B, in alternating order, each in its own process (the checkout
first on PYTHONPATH, so its `batchsim` is the one imported); the table gives the minimum CPU
seconds over the rounds and the ratio B / A (below 1: B is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAT = str(ROOT / "traces" / "chat.jsonl")


def case(checkout: Path, n: int, rate: float, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(checkout / "bench" / "sim_speed.py"), "--case", "--n", str(n),
           "--rate", str(rate), *extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                          cwd=checkout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("other", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=100_000)
    args = p.parse_args()
    cases = {
        "capacity 20k (rate inf)": (20_000, float("inf"), []),
        f"{args.requests} req at 300 req/s": (args.requests, 300.0, []),
        "azure-conv shape 19,366 at 5.5": (19_366, 5.5, ["--lengths-from", CHAT]),
        "jitter 20k at 3 req/s (cpu prof)": (20_000, 3.0, [
            "--jitter", "--profile", str(ROOT / "profiles" / "qwen2.5-0.5b-cpu.json"),
            "--input-len", "256", "--output-len", "32"]),
    }
    sides = {"A": args.other.resolve(), "B": ROOT}
    best: dict[tuple[str, str], dict] = {}
    for k in range(args.rounds):
        order = ("A", "B") if k % 2 == 0 else ("B", "A")
        for name, (n, rate, extra) in cases.items():
            for side in order:
                r = case(sides[side], n, rate, extra)
                key = (name, side)
                if key not in best or r["cpu_s"] < best[key]["cpu_s"]:
                    best[key] = r
                if key in best and best[key]["steps"] != r["steps"]:
                    raise SystemExit(f"{name} {side}: step counts differ between rounds")
        print(f"round {k + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"A = {sides['A']}, B = {sides['B']}; min CPU s over {args.rounds} alternating rounds")
    print(f"{'case':<36}{'A cpu s':>9}{'B cpu s':>9}{'B/A':>7}{'steps A':>9}{'steps B':>9}"
          f"{'A MB':>7}{'B MB':>7}")
    for name in cases:
        a, b = best[(name, "A")], best[(name, "B")]
        print(f"{name:<36}{a['cpu_s']:>9.3f}{b['cpu_s']:>9.3f}{b['cpu_s'] / a['cpu_s']:>7.3f}"
              f"{a['steps']:>9}{b['steps']:>9}{a['peak_rss_mb']:>7.0f}{b['peak_rss_mb']:>7.0f}")


if __name__ == "__main__":
    main()
