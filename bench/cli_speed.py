"""Full `batchsim simulate` runs, A against B: CPU and wall seconds and peak RSS per run.

Usage: python bench/cli_speed.py OTHER_CHECKOUT [--rounds 3] [--million] [--phases]

The workload stands in for the Azure LLM inference trace 2023, conversation hour (not shipped
here): traces/generate_chat.py's generator with 19,366 requests at 5.5 req/s (~3,500 s) and
Azure-conv-like lengths, written to a temporary folder. Each round runs the CLI on A
(OTHER_CHECKOUT) and on B (this checkout) in alternating order, every default output included;
B is also run with --no-report. --million adds the issue's 1M synthetic case (slow: minutes).
"x real" is simulated seconds per CPU second. CPU seconds are the child's user + system time
(on a shared machine wall time also counts other processes' turns); the table gives the minimum
over the rounds. --phases then prints, for B, where one run's time goes: the same steps as
`batchsim simulate` (sim.run and the report writer), timed one by one in a child process.
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
MILLION = ["--request-rate", "300", "--num-requests", "1000000", "--input-len", "1000",
           "--output-len", "200", "--range-ratio", "0.5"]


def timed(checkout: Path, argv: list[str], out: Path) -> dict[str, float]:
    """One CLI run in its own process: CPU s, wall s, peak RSS MB."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, "-m", "batchsim", "simulate", *argv, "--out", str(out), "--force",
           "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
    sim_s = json.loads((out / "metrics.json").read_text())["duration_s"]
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "rss_mb": usage.ru_maxrss / 1024, "sim_s": sim_s}


PHASES_CHILD = r"""
import sys, time
t0 = time.perf_counter()
marks = []
def mark(name):
    marks.append((name, time.perf_counter()))
import batchsim.simulate_cmd
from batchsim.cli import build_parser
args = build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
mark("imports + parse (no pandas)")
from pathlib import Path
from batchsim.sim import run as sim_run
from batchsim.sim.metrics import summarize
from batchsim.sim.simulator import Simulator
mark("imports: simulator, numpy, pandas")
spec, _ = batchsim.simulate_cmd.with_cpu_path_defaults(
    batchsim.simulate_cmd.spec_from_args(args), [args.policy])
prep = sim_run.prepare(spec)
mark("prepare (profile, workload)")
result = Simulator(prep.profile, prep.policy, prep.workload, prep.too_long).run()
mark("event loop")
requests = (result.recorder.workload_table(prep.workload) if result.kept is None
            else result.recorder.requests_table(result.kept))  # as sim.run.simulate
metrics = summarize(result.recorder, requests, None, prep.policy.kv_capacity_blocks,
                    prep.profile.source, spec.goodput)
mark("requests table + metrics")
run = sim_run.RunOutput(sim_run.resolved_config(prep), metrics, requests, None, result.recorder)
from batchsim.reports import run_report
mark("imports: plotly, report")
sim_run.write_run(Path(args.out), run)
mark("files: json, requests.csv, steps.csv")
tmp = Path(args.out)
run_report.write_into_run(tmp, run)  # as simulate's writer: itl_cdf.csv, then the page
mark("itl_cdf.csv + report.html")
last = t0
for name, t in marks:
    print(f"{name:<52}{t - last:>8.3f}")
    last = t
print(f"{'total':<52}{last - t0:>8.3f}")
"""


def phases(trace: Path, out: Path) -> None:
    """Where B's time goes on one run (wall seconds per step, in a child process)."""
    cmd = [sys.executable, "-c", PHASES_CHILD, "simulate", "--policy", "continuous",
           "--trace", str(trace), "--out", str(out)]
    print(f"where the time goes (B, one run, wall s; load average {os.getloadavg()[0]:.2f}):")
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("other", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--million", action="store_true")
    p.add_argument("--phases", action="store_true", help="then time B's steps one by one")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "traces"))
    from generate_chat import generate

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trace = tmp / "azure-conv-like.jsonl"
        rows = generate(19_366, seed=2023)
        trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
        azure = ["--policy", "continuous", "--trace", str(trace)]
        runs = [("azure-conv-like hour", "A", args.other.resolve(), azure),
                ("azure-conv-like hour", "B", ROOT, azure),
                ("azure-conv-like hour --no-report", "B", ROOT, [*azure, "--no-report"])]
        if args.million:
            million = ["--policy", "continuous", *MILLION]
            runs += [("1M synthetic", "A", args.other.resolve(), million),
                     ("1M synthetic", "B", ROOT, million)]
        best: dict[tuple[str, str], dict[str, float]] = {}
        if args.phases:
            phases(trace, tmp / "phases")
        for k in range(args.rounds):
            for name, side, checkout, argv in (runs if k % 2 == 0 else runs[::-1]):
                r = timed(checkout, argv, tmp / f"run-{side}")
                key = (name, side)
                if key not in best or r["cpu_s"] < best[key]["cpu_s"]:
                    best[key] = r
            print(f"round {k + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    span = rows[-1]["arrival_s"]
    print(f"A = {args.other.resolve()}, B = {ROOT}; {len(rows)} requests over {span:.0f} s; "
          f"min over {args.rounds} alternating rounds")
    print(f"{'case':<36}{'side':>5}{'cpu s':>8}{'wall s':>8}{'x real':>8}{'peak MB':>9}")
    for (name, side), r in best.items():
        print(f"{name:<36}{side:>5}{r['cpu_s']:>8.2f}{r['wall_s']:>8.2f}"
              f"{r['sim_s'] / r['cpu_s']:>8.0f}{r['rss_mb']:>9.0f}")


if __name__ == "__main__":
    main()
