"""Where a `batchsim simulate` run's peak memory is: the peak RSS of each stage, in one process.

Usage: python bench/memory_stages.py [--num-requests 1000000] [--out DIR]

Runs issue 17's case (`--policy continuous --request-rate 300 --input-len 1000 --output-len 200
--range-ratio 0.5`, every default output) through the CLI's own `main`, with the stages wrapped:
before and after each, VmRSS and VmHWM are read from /proc/self/status and the peak is reset
(`echo 5 > /proc/self/clear_refs`), so each line's peak is that stage's own. Linux only. The
stages nest (write_csv runs inside write_run): a "(before X)" line's peak is whatever ran since
the line above it (steps.csv before write_itl_cdf, say).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

CASE = ["--policy", "continuous", "--request-rate", "300", "--input-len", "1000",
        "--output-len", "200", "--range-ratio", "0.5"]
T0 = time.perf_counter()


def memory_mb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in MiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) // 1024
    return values["VmRSS"], values["VmHWM"]


def mark(what: str) -> None:
    """Print the memory since the last mark, then reset the peak."""
    rss, peak = memory_mb()
    print(f"{what:36s} rss {rss:5d} MB  peak {peak:5d} MB  {time.perf_counter() - T0:6.1f} s",
          flush=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def wrap(module: ModuleType, name: str) -> None:
    inner: Callable[..., Any] = getattr(module, name)

    def stage(*args: Any, **kwargs: Any) -> Any:
        mark(f"  (before {name})")
        out = inner(*args, **kwargs)
        mark(f"  {name}")
        return out

    setattr(module, name, stage)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-requests", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=Path("/tmp/memory_stages_run"))
    args = p.parse_args()
    import batchsim.simulate_cmd as simulate_cmd
    from batchsim.cli import main as cli_main
    from batchsim.reports import run_report
    from batchsim.sim import overload, run

    for module, name in ((run, "prepare"), (run, "simulate"), (run, "write_run"),
                         (run, "write_csv"), (overload, "overload"),
                         (simulate_cmd, "format_summary"), (run_report, "write_itl_cdf"),
                         (run_report, "run_sections"), (run_report, "write_report")):
        wrap(module, name)
    mark("imports")
    cli_main(["simulate", *CASE, "--num-requests", str(args.num_requests), "--out",
              str(args.out), "--force", "--quiet"])
    mark("end")


if __name__ == "__main__":
    main()
