"""Trace loading speed: seconds and peak memory to read a large file of each format.

Writes one file per format (default 1,000,000 requests; Poisson arrivals at 5.5 req/s,
Azure-conversation-like lengths, Mooncake lines with one 512-token block hash per started block)
into a temporary folder, then loads each in its own subprocess with
`batchsim.sim.workload.traces.read_trace`, so
each peak RSS is its own. "added MB" is the peak RSS minus the peak before loading (imports).
Usage: python bench/trace_load.py [--lines 1000000] [--formats azure,mooncake]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMATS = ("azure", "burstgpt", "vidur", "mooncake", "native")


def columns(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival seconds, input and output lengths of n requests (seeded)."""
    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(1 / 5.5, n))
    inputs = np.maximum(1, rng.lognormal(6.9, 0.6, n)).astype(np.int64)
    outputs = np.maximum(1, rng.lognormal(4.9, 0.9, n)).astype(np.int64)
    return arrival, inputs, outputs


def write(fmt: str, path: Path, n: int) -> None:
    arrival, inputs, outputs = columns(n)
    if fmt == "azure":
        start = np.datetime64("2023-11-16T18:15:46", "ns")
        stamps = np.datetime_as_string(start + (arrival * 1e9).astype("timedelta64[ns]"))
        frame = pd.DataFrame({"TIMESTAMP": np.char.replace(stamps, "T", " "),
                              "ContextTokens": inputs, "GeneratedTokens": outputs})
    elif fmt == "burstgpt":
        frame = pd.DataFrame({"Timestamp": arrival.round(3), "Model": "ChatGPT",
                              "Request tokens": inputs, "Response tokens": outputs,
                              "Total tokens": inputs + outputs, "Log Type": "Conversation log"})
    elif fmt == "vidur":
        frame = pd.DataFrame({"arrived_at": arrival, "num_prefill_tokens": inputs,
                              "num_decode_tokens": outputs})
    else:
        with path.open("w") as f:
            f.writelines(_json_lines(fmt, arrival, inputs, outputs))
        return
    frame.to_csv(path, index=False)


def _json_lines(fmt: str, arrival: np.ndarray, inputs: np.ndarray, outputs: np.ndarray):
    next_block = 0
    for a, n_in, n_out in zip(arrival.tolist(), inputs.tolist(), outputs.tolist(), strict=True):
        if fmt == "native":
            yield f'{{"arrival_s": {a:.6f}, "input_tokens": {n_in}, "output_tokens": {n_out}}}\n'
            continue
        blocks = -(-n_in // 512)
        ids = ", ".join(map(str, range(next_block, next_block + blocks)))
        next_block += blocks // 2 + 1  # later requests share some prefix blocks
        yield (f'{{"timestamp": {int(a * 1000)}, "input_length": {n_in}, '
               f'"output_length": {n_out}, "hash_ids": [{ids}]}}\n')


def load_one(path: str) -> None:
    """Runs in a subprocess: load the file, print seconds and memory as JSON."""
    from batchsim.sim.workload.traces import read_trace

    base = _peak_rss_mb()
    start = time.perf_counter()
    workload = read_trace(path)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    print(json.dumps({"seconds": seconds, "requests": len(workload), "peak_mb": peak,
                      "added_mb": peak - base}))


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM, because ru_maxrss survives exec and would report
    the parent's peak (the parent held the generated data)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--load", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        load_one(args.load)
        return
    print(f"{'format':<10}{'lines':>11}{'file MB':>9}{'write s':>9}{'load s':>8}"
          f"{'peak MB':>9}{'added MB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            suffix = "csv" if fmt in ("azure", "burstgpt", "vidur") else "jsonl"
            path = Path(tmp) / f"{fmt}.{suffix}"
            start = time.perf_counter()
            write(fmt, path, args.lines)
            written = time.perf_counter() - start
            done = subprocess.run([sys.executable, __file__, "--load", str(path)], check=True,
                                  capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            assert r["requests"] == args.lines, r
            print(f"{fmt:<10}{args.lines:>11,}{path.stat().st_size / 2**20:>9.0f}"
                  f"{written:>9.1f}{r['seconds']:>8.2f}{r['peak_mb']:>9.0f}{r['added_mb']:>10.0f}",
                  flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
