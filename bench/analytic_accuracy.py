"""How wrong is the analytic profile? Leave-one-out over public kernel measurements.

For each measured source (GPU x model; all of its tensor-parallel tables together), the kernel
calibration is fitted on every other source (leave-one-source-out) and on every other GPU
(leave-one-GPU-out), and the left-out source's kernels and whole steps are predicted from its
GPU's published peaks alone. Printed: MAPE per kernel class and per step phase (prefill, decode,
mixed from LLMServingSim's tables; "token-ops" = a step's per-layer token ops from Vidur's MLP
tables, which have no attention). Whole steps are composed from the source's own rows
(profiler/analytic/sources.measured_steps), so the comparison is kernel sums against kernel sums.

    python bench/analytic_accuracy.py [--data ../shared/data] [--json OUT.json]

Then the real vLLM run of the shared data (Llama-3.1-8B on the RTX PRO 6000, 300 ShareGPT
requests, vLLM 0.19 with CUDA graphs) is simulated with `batchsim validate --observed` three
times: with the analytic profile from the calibration fitted on every source (the PRO 6000
tables included), with the analytic profile from the calibration fitted without any PRO 6000
source (leave-one-GPU-out: only the GPU's published figures are known), and with the profile
imported from the measured tables (`batchsim profile --import llmservingsim`); mean TTFT, TPOT
and E2EL against the run's own.

Needs the shared data folder (LLMServingSim and Vidur tables, MIT); prints a line and exits 2
without it. Takes a minute or two (one calibration fit per left-out source).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
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
    lss = args.data / "llmservingsim"
    if (lss / RUN).is_dir():
        fits = {"analytic, calibrated on all sources": C.fit_calibration(all_recs),
                "analytic, leave-one-GPU-out (no PRO 6000 data)": C.fit_calibration(
                    [r for s in sources if s.gpu.name != "rtx-pro-6000" for r in recs[s.name]])}
        results["real run"] = real_run(lss, fits)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


RUN = "bench/examples/RTXPRO6000/Llama-3.1-8B/vllm"
PERF = "profiler/perf/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
CONFIG = "configs/model/meta-llama/Llama-3.1-8B.json"


def batchsim(*words: str) -> None:
    exe = Path(sys.executable).parent / "batchsim"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "batchsim"]
    done = subprocess.run([*cmd, *words], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"batchsim {' '.join(words)} failed: {done.stderr.strip()}")


def real_run(lss: Path, fits: dict[str, C.Calibration]) -> dict[str, dict[str, float]]:
    """Mean TTFT/TPOT/E2EL of the real run against the simulation with each profile."""
    from batchsim.profiler.analytic.builder import analytic_profile
    from batchsim.profiler.analytic.gpus import GPUS
    from batchsim.profiler.model_arch import read_config

    run, out = lss / RUN, {}
    arch = read_config(lss / CONFIG)
    with tempfile.TemporaryDirectory(prefix="analytic-accuracy-") as tmp:
        profiles = {}
        for label, calib in fits.items():
            path = Path(tmp) / f"{len(profiles)}.json"
            doc = analytic_profile(arch, dict(arch.raw), GPUS["rtx-pro-6000"],
                                   calibration=(calib, {"fitted_for": label}))
            path.write_text(json.dumps(doc))
            profiles[label] = path
        imported = Path(tmp) / "imported.json"
        batchsim("profile", "--import", "llmservingsim", str(lss / PERF), "--model",
                 str(lss / CONFIG), "--tp", "1", "--out", str(imported), "--quiet")
        profiles["imported from the measured tables"] = imported
        for label, path in profiles.items():
            folder = Path(tmp) / f"v{len(out)}"
            batchsim("validate", "--observed", str(run / "requests.jsonl"), "--policy",
                     "continuous", "--profile", str(path), "--engine-config",
                     str(run / "meta.json"), "--out", str(folder), "--quiet")
            doc = json.loads((folder / "validation.json").read_text())
            comp = doc["points"][0]["comparison"]
            out[label] = {m: comp[f"{m}.mean"]["rel_error"] for m in ("ttft_ms", "tpot_ms",
                                                                      "e2el_ms")}
            out[label].update({f"real_{m}": comp[f"{m}.mean"]["real"] for m in ("ttft_ms",
                                                                                "tpot_ms",
                                                                                "e2el_ms")})
    print("\nthe real vLLM run (Llama-3.1-8B, RTX PRO 6000, 300 requests), simulated; error of "
          "the mean (target: TPOT and E2EL within 10%)")
    print(f"{'profile':<50} {'TTFT':>8} {'TPOT':>8} {'E2EL':>8}")
    for label, e in out.items():
        print(f"{label:<50} {100 * e['ttft_ms']:>+7.1f}% {100 * e['tpot_ms']:>+7.1f}% "
              f"{100 * e['e2el_ms']:>+7.1f}%")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
