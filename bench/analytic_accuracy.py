"""How wrong is the analytic profile? Leave-one-out over public kernel measurements.

For each measured source (GPU x model; all of its tensor-parallel tables together), the kernel
calibration is fitted on every other source (leave-one-source-out) and on every other GPU
(leave-one-GPU-out), and the left-out source's kernels and whole steps are predicted from its
GPU's published peaks alone. Printed: MAPE per kernel class and per step phase (prefill, decode,
mixed from LLMServingSim's tables; "token-ops" = a step's per-layer token ops from Vidur's MLP
tables, which have no attention). Whole steps are composed from the source's own rows
(profiler/analytic/sources.measured_steps), so the comparison is kernel sums against kernel sums.

    python bench/analytic_accuracy.py [--data ../shared/data] [--json OUT.json]

Needs the shared data folder (LLMServingSim and Vidur tables, MIT); prints a line and exits 2
without it. Takes a minute or two (one calibration fit per left-out source).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchsim.profiler.analytic import calibration as C  # noqa: E402
from batchsim.profiler.analytic import sources as S  # noqa: E402
from batchsim.profiler.analytic.ops import step_ops  # noqa: E402

LAYER_TOKEN_OPS = {"layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn",
                   "down_proj", "qk_norm"}


def group(src: S.Source) -> str:
    return src.name.rsplit("/tp", 1)[0]


def predicted_step(src: S.Source, shape, calib: C.Calibration) -> float:
    ops = step_ops(src.arch, shape, src.tp)
    if src.kind == "vidur":  # per-layer token ops only, as measured
        layer = sum(op.count * C.op_time(op, src.gpu, calib) for op in ops
                    if op.name in LAYER_TOKEN_OPS)
        return S.VIDUR_LAYERS * layer
    return C.step_time(ops, src.gpu, calib, "vllm", src.arch.num_layers, shape.num_seqs)


def score(sources: list[S.Source], recs: dict[str, list[C.Record]],
          steps: dict[str, list], held_out: list[str], calib: C.Calibration) -> dict:
    ops: dict[str, list[float]] = collections.defaultdict(list)
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for src in sources:
        if group(src) not in held_out:
            continue
        for r, e in zip(recs[src.name], C.ape(recs[src.name], calib), strict=True):
            ops[r.op.kind].append(float(e))
        for phase, shape, t in steps[src.name]:
            phases[phase].append(abs(predicted_step(src, shape, calib) - t) / t)
    return {"ops": {k: float(np.mean(v)) for k, v in sorted(ops.items())},
            "steps": {k: float(np.mean(v)) for k, v in sorted(phases.items())},
            "n_steps": {k: len(v) for k, v in sorted(phases.items())}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, help="also write the table as JSON")
    args = ap.parse_args()
    sources = S.all_sources(args.data)
    if not sources:
        print(f"analytic_accuracy: no LLMServingSim or Vidur tables under {args.data}",
              file=sys.stderr)
        return 2
    recs = {s.name: S.records(s) for s in sources}
    steps = {s.name: S.measured_steps(s) for s in sources}
    groups = sorted({group(s) for s in sources})
    gpus = sorted({s.gpu.name for s in sources})
    results: dict[str, dict] = {}
    for mode, units in (("leave-one-source-out", groups), ("leave-one-GPU-out", gpus)):
        for unit in units:
            out = [g for g in groups if (g == unit if mode.endswith("source-out")
                                         else g.startswith(unit + "/"))]
            train = [r for s in sources if group(s) not in out for r in recs[s.name]]
            calib = C.fit_calibration(train)
            for g in out:
                results[f"{mode}|{g}"] = score(sources, recs, steps, [g], calib)
    all_recs = [r for v in recs.values() for r in v]
    results["in-sample (all sources)|all"] = score(sources, recs, steps, groups,
                                                   C.fit_calibration(all_recs))
    print(f"{'mode':<28} {'source':<44} {'step MAPE by phase':<48} kernel MAPE by class")
    for key, res in results.items():
        mode, g = key.split("|")
        st = "  ".join(f"{p} {100 * v:.1f}%" for p, v in res["steps"].items())
        op = "  ".join(f"{k} {100 * v:.0f}%" for k, v in res["ops"].items())
        print(f"{mode:<28} {g:<44} {st:<48} {op}")
    worst = max(v for k, r in results.items() if k.startswith("leave-one-GPU")
                for p, v in r["steps"].items())
    print(f"\nworst per-phase step MAPE, leave-one-GPU-out: {100 * worst:.1f}% (target <= 15%)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
