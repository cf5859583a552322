"""Table writing: pandas' to_csv against sim.csv_table.write_csv on a large run's tables.

Usage: python bench/csv_speed.py [--rounds 3]

Simulates the Azure-conversation-like hour (traces/generate_chat.py: 19,366 requests at 5.5 req/s;
the Azure trace itself is not shipped) once, then writes its steps and requests tables with each
writer alternately, checks the bytes are equal, and prints the minimum CPU seconds per writer.
A second table sets steps.csv as `simulate` writes it (Recorder.write_steps_csv: from the run
records, no steps table) against building the steps table and write_csv-ing it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "traces"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from generate_chat import generate

    from batchsim.sim.csv_table import write_csv
    from batchsim.sim.run import RunSpec, prepare, simulate

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        trace = tmp / "azure-conv-like.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in generate(19_366, seed=2023)))
        out = simulate(prepare(RunSpec(policy="continuous", trace=str(trace))))
        best: dict[tuple[str, str], float] = {}
        for k in range(args.rounds):
            for table_name, df in (("steps", out.steps), ("requests", out.requests)):
                writers = [("pandas", lambda d, f: d.to_csv(f, index=False, float_format="%.6f")),
                           ("write_csv", write_csv)]
                for writer_name, write in (writers if k % 2 == 0 else writers[::-1]):
                    path = tmp / f"{table_name}-{writer_name}.csv"
                    t0 = time.process_time()
                    write(df, path)
                    dt = time.process_time() - t0
                    key = (table_name, writer_name)
                    best[key] = min(dt, best.get(key, float("inf")))
                same = ((tmp / f"{table_name}-pandas.csv").read_bytes()
                        == (tmp / f"{table_name}-write_csv.csv").read_bytes())
                if not same:
                    raise SystemExit(f"{table_name}.csv differs between the writers")
        print(f"min CPU s over {args.rounds} alternating rounds; bytes identical")
        print(f"{'table':<10}{'rows':>9}{'pandas s':>10}{'write_csv s':>13}{'ratio':>7}")
        for table_name, df in (("steps", out.steps), ("requests", out.requests)):
            a, b = best[(table_name, "pandas")], best[(table_name, "write_csv")]
            print(f"{table_name:<10}{len(df):>9}{a:>10.3f}{b:>13.3f}{a / b:>7.2f}")
        rec = out.recorder
        table_s, runs_s = float("inf"), float("inf")
        for k in range(args.rounds):
            for side in (("table", "runs") if k % 2 == 0 else ("runs", "table")):
                t0 = time.process_time()
                if side == "table":
                    rec._steps = None  # build it again, as a run without a cached table would
                    write_csv(rec.steps_table(), tmp / "steps-table.csv")
                    table_s = min(table_s, time.process_time() - t0)
                else:
                    assert rec.write_steps_csv(tmp / "steps-runs.csv")
                    runs_s = min(runs_s, time.process_time() - t0)
        if (tmp / "steps-table.csv").read_bytes() != (tmp / "steps-runs.csv").read_bytes():
            raise SystemExit("steps.csv differs between the table and the run records")
        print(f"\nsteps.csv, {rec.num_steps} rows, bytes identical: steps_table() + write_csv "
              f"{table_s:.3f} s, write_steps_csv {runs_s:.3f} s, ratio {table_s / runs_s:.2f}")


if __name__ == "__main__":
    main()
