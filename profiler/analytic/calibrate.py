"""Refit the kernel calibration (calibration.json) from the public measurements.

    python -m batchsim.profiler.analytic.calibrate [--data ../shared/data] [--out FILE]

Reads every LLMServingSim and Vidur table set under --data (their READMEs: MIT, never copied
into the project), fits each kernel class's parameters (calibration.fit_calibration) and writes
only the fitted parameters, the sources' names and the in-sample kernel MAPE per class. The
leave-one-out scores come from `python bench/analytic_accuracy.py`.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

from batchsim.profiler.analytic import sources
from batchsim.profiler.analytic.calibration import (
    CALIBRATION_FILE,
    ape,
    calibration_to_json,
    fit_calibration,
)

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = ap.parse_args(argv)
    srcs = sources.all_sources(args.data)
    if not srcs:
        raise SystemExit(f"calibrate: no LLMServingSim or Vidur tables under {args.data}")
    records = [r for s in srcs for r in sources.records(s)]
    calib = fit_calibration(records)
    errors: dict[str, list[float]] = collections.defaultdict(list)
    for r, e in zip(records, ape(records, calib), strict=True):
        errors[r.op.kind].append(float(e))
    in_sample = {k: round(float(np.mean(v)), 4) for k, v in sorted(errors.items())}
    meta = {
        "fitted_on": sorted({s.name for s in srcs}),
        "records": len(records),
        "in_sample_kernel_mape": in_sample,
        "how": "python -m batchsim.profiler.analytic.calibrate (least squares on log time)",
        "scores": "python bench/analytic_accuracy.py (leave-one-source-out, leave-one-GPU-out)",
    }
    args.out.write_text(json.dumps(calibration_to_json(calib, meta), indent=1) + "\n")
    print(f"calibration: {len(records)} kernel timings from {len(srcs)} table sets -> {args.out}")
    for kind, v in in_sample.items():
        print(f"  {kind:<12} in-sample MAPE {100 * v:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
