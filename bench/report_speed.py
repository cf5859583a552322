"""Report-writing speed and size: the demo run and a 200,000-request run.

Simulates each run once (not timed), then times only the report step as `simulate` runs it
(reports.run_report.write_into_run: ITL quantiles + report.html) and prints the page's size.
Usage: python bench/report_speed.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    from batchsim.reports.run_report import write_into_run
    from batchsim.sim.run import RunSpec, prepare, simulate
    from batchsim.sim.workload.synthetic import SyntheticSpec

    cases = {
        "demo (traces/chat.jsonl)": RunSpec("continuous", trace=str(ROOT / "traces/chat.jsonl")),
        f"{args.requests:,} requests at 70 req/s": RunSpec("continuous", synthetic=SyntheticSpec(
            num_requests=args.requests, request_rate=70.0, input_len=1000, output_len=200,
            range_ratio=0.2)),
    }
    for name, spec in cases.items():
        t0 = time.perf_counter()
        run = simulate(prepare(spec))
        sim_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / ".case.x"
            folder.mkdir()
            t0 = time.perf_counter()
            write_into_run(folder, run)
            report_s = time.perf_counter() - t0
            size = (folder / "report.html").stat().st_size
        print(f"{name}: {len(run.requests):,} requests, {len(run.steps):,} steps; simulate "
              f"{sim_s:.2f} s, report {report_s:.2f} s, report.html {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
