"""Profiling speed: wall time of `batchsim profile` grids per model and device.

Each case runs the full profile (grid, max-batch search, fit) into a temporary file and reports
the number of grid tasks (a padded task measures a prefill and a decode point) and the wall
seconds of the run (model build included; interpreter start and imports excluded). Not part of
the test suite.

Usage: python bench/profile_speed.py [--case MODEL:DEVICE:GRID ...] [--threads N]
Default cases: tiny-qwen2 on cpu (quick, standard) and qwen2.5-0.5b on cpu (quick).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CASES = ("tiny-qwen2:cpu:quick", "tiny-qwen2:cpu:standard", "qwen2.5-0.5b:cpu:quick")


def run_case(case: str, threads: int | None) -> dict[str, object]:
    from batchsim.profiler.profiling.runner import ProfileConfig, run_profile

    model, device, grid = case.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        config = ProfileConfig(model=model, out=Path(tmp) / "p.json", device=device,
                               dtype="float32" if device == "cpu" else "bfloat16", grid=grid,
                               threads=threads)
        start = time.perf_counter()
        result = run_profile(config)
        wall = time.perf_counter() - start
    doc = result.document
    worst = max((e["cv"]["mape"] or 0.0) for e in doc["cost_models"].values())
    return {"model": model, "device": device, "grid": grid, "points": len(doc["measured"]),
            "wall_s": wall, "load_s": doc["run"]["load_model_s"], "worst_mape": worst}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", help="MODEL:DEVICE:GRID (repeatable)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # import torch and transformers before timing anything
    for module in ("batchsim.profiler.engine.paged_engine",
                   "batchsim.profiler.engine.static_engine"):
        importlib.import_module(module)

    rows = [run_case(c, args.threads) for c in (args.case or DEFAULT_CASES)]
    print(f"{'model':<16} {'device':<6} {'grid':<9} {'points':>6} {'wall s':>8} {'load s':>7} "
          f"{'worst CV MAPE':>13}")
    for r in rows:
        print(f"{r['model']:<16} {r['device']:<6} {r['grid']:<9} {r['points']:>6} "
              f"{r['wall_s']:>8.1f} {r['load_s']:>7.2f} {r['worst_mape'] * 100:>12.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
