"""CPU validation benchmark: every policy x 3 loads on a small preset, simulated vs real.

    python bench/validate_cpu.py                                  # profile distilgpt2, validate
    python bench/validate_cpu.py --profile profiles/distilgpt2-cpu.json   # reuse a profile

Measures a fresh CPU profile (unless --profile is given): `batchsim profile --threads 1 --clock
thread` in --passes passes with different grid orders, merged point by point (merge_passes),
then runs `batchsim validate`'s library path for static, dynamic and continuous batching at
each load, writes one validation folder per policy under --out, and prints each policy's error
table and the target check: median absolute error over the loads <= 0.8 of throughput, mean
E2EL and p99 E2EL, against 10%. The load average is printed before and after: the machine's
other work inflates wall-clock steps, and the report should say how busy it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchsim.sim.profile import load_profile  # noqa: E402
from batchsim.sim.validation.plan import (  # noqa: E402
    TARGET_METRICS,
    ValidationSpec,
    WorkloadSpec,
    format_error_table,
    plan_validation,
    write_validation,
)

# Knobs per policy: batch limits a 2-core CPU serves in tens of seconds per point.
KNOBS: dict[str, dict[str, str]] = {
    "static": {"max_batch_size": "8"},
    "dynamic": {"max_batch_size": "8", "max_queue_delay_microseconds": "200000"},
    "continuous": {"max_num_seqs": "8", "max_num_batched_tokens": "512"},
}
TARGET = 0.10


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def measure_profile(args: argparse.Namespace, path: Path) -> None:
    """`batchsim profile` in `args.passes` passes (different seeds, so different shuffled
    orders), merged point by point: see merge_passes."""
    passes = []
    for k in range(args.passes):
        part = path.with_name(f"{path.stem}.pass{k}.json")
        part.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "batchsim", "profile", "--model", args.model, "--device",
               "cpu", "--dtype", "float32", "--grid", args.grid, "--threads", "1", "--clock",
               args.clock, "--seed", str(k), "--out", str(part), "--quiet"]
        print("$", " ".join(cmd), f"   # load average {load_average()}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        print(f"pass {k} measured in {time.perf_counter() - t0:.0f} s", flush=True)
        passes.append(part)
    merge_passes(passes, path)


def merge_passes(parts: list[Path], out: Path) -> None:
    """`batchsim profile --merge`: each point's time the median of every pass's samples (see
    batchsim.profiler.profiling.profile_file.merge_profiles for why), then the pass files are
    removed."""
    from batchsim.profiler.profiling.profile_file import merge_profiles

    merge_profiles(parts, out)
    for part in parts:
        part.unlink()
        part.with_suffix(".html").unlink(missing_ok=True)  # the per-pass profile reports
    print(f"merged {len(parts)} passes into {out}", flush=True)


def validate(policy: str, args: argparse.Namespace, profile_path: Path) -> dict:
    from batchsim.profiler.real.validate import engine_spec, run_validation

    profile = load_profile(profile_path)
    spec = ValidationSpec(
        policy=policy, profile=str(profile_path), knobs=KNOBS[policy],
        workload=WorkloadSpec(num_requests=args.num_requests, input_len=args.input_len,
                              output_len=args.output_len, range_ratio=args.range_ratio),
        loads=tuple(float(x) for x in args.loads.split(",")), seed=args.seed)
    plan = plan_validation(spec, profile)
    print(f"\n== {policy}: capacity {plan.capacity.request_rate:.3g} req/s, about "
          f"{plan.predicted_s:.0f} s of real time; load average {load_average()}", flush=True)
    result = run_validation(plan, engine_spec(profile, None, "cpu"))
    knobs = " ".join(f"--set {k}={v}" for k, v in KNOBS[policy].items())
    command = (f"batchsim validate --profile {profile_path} --policy {policy} {knobs} "
               f"--loads {args.loads} --num-requests {args.num_requests} --input-len "
               f"{args.input_len} --output-len {args.output_len} --range-ratio "
               f"{args.range_ratio} --seed {args.seed}")
    doc = result.document(command + f" --out {args.out / policy}")
    # bench-only diagnostic: the same real runs against the simulation without step jitter
    from batchsim.sim.validation.plan import compare, simulate_point

    plain = dataclasses.replace(spec, step_jitter=False)
    for p, real in zip(doc["points"], result.reals, strict=True):
        sim = simulate_point(plain, profile, plan.base, real.point.request_rate)
        p["comparison_no_jitter"] = compare(real.metrics, sim.metrics)
    write_validation(args.out / policy, doc, result.tables(), result.jsons(),
                     report=lambda folder: _report(folder))
    print(format_error_table(doc))
    for p in doc["points"]:
        h = p["host_overhead"]
        print(f"load {p['load']:g}: real {p['real_wall_s']:.1f} s (sim {p['predicted_s']:.1f} s); "
              f"host between steps {h['per_step_mean_s'] * 1e3:.2f} ms/step "
              f"({h['share_of_step_time']:.2%} of step time); step wall/cpu "
              f"{h['step_wall_over_cpu']:.3f}; machine drift (profile points re-measured "
              f"around the point / profiled) {_ratio(p['machine_drift'])}; step cost level "
              f"(real / predicted) {p['step_cost_level']:.3f}")
        for kind, e in p["step_prediction"].items():
            print(f"    {kind:<16} n={e['num_steps']:<4} cost-model error vs wall "
                  f"{e['mean_signed_error']:+.1%} (MAPE {e['mape']:.1%}), vs cpu "
                  f"{e['mean_signed_error_vs_cpu']:+.1%}; real {e['real_total_s']:.2f} s, "
                  f"predicted {e['predicted_total_s']:.2f} s")
    return doc


def _ratio(drift: dict | None) -> str:
    if not drift or drift["ratio"] is None:
        return "n/a"
    return f"{drift['ratio']:.3f} (before {drift['before']:.3f}, after {drift['after']:.3f})"


def _report(folder: Path) -> None:
    from batchsim.reports.validation import write_validation_report

    write_validation_report(folder, folder / "report.html")


def target_table(docs: dict[str, dict], max_load: float, key: str = "comparison") -> str:
    """Median |error| over the loads <= max_load, per policy and target metric (key: the
    comparison, or "comparison_drift_adjusted")."""
    lines = [f"{'policy':<12}" + "".join(f"{m:>22}" for m in TARGET_METRICS)]
    for policy, doc in docs.items():
        row = f"{policy:<12}"
        for m in TARGET_METRICS:
            errs = sorted(abs(p[key][m]["rel_error"]) for p in doc["points"]
                          if p["load"] <= max_load + 1e-9 and p.get(key)
                          and p[key][m]["rel_error"] is not None)
            if not errs:
                row += f"{'n/a':>22}"
                continue
            mid = len(errs) // 2
            med = errs[mid] if len(errs) % 2 else (errs[mid - 1] + errs[mid]) / 2
            row += f"{f'{med:.1%} ' + ('ok' if med <= TARGET else 'MISS'):>22}"
        lines.append(row)
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="distilgpt2")
    p.add_argument("--profile", type=Path, help="use this profile instead of measuring one")
    p.add_argument("--profile-out", type=Path,
                   default=ROOT / "runs" / "validate-cpu-profile.json")
    p.add_argument("--grid", default="standard")
    p.add_argument("--clock", default="thread", choices=("wall", "thread"))
    p.add_argument("--passes", type=int, default=3, help="profiling passes to merge")
    p.add_argument("--policies", default="static,dynamic,continuous")
    p.add_argument("--loads", default="0.5,0.8,0.95")
    p.add_argument("--num-requests", type=int, default=40)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=24)
    p.add_argument("--range-ratio", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "validate-cpu")
    args = p.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    profile = args.profile
    if profile is None:
        profile = args.profile_out
        profile.parent.mkdir(parents=True, exist_ok=True)
        if profile.exists():
            profile.unlink()
        measure_profile(args, profile)
    docs = {policy: validate(policy, args, profile) for policy in args.policies.split(",")}
    print(f"\nload average at end: {load_average()}")
    print(f"\ntarget: median |error| over loads <= 0.8 at most {TARGET:.0%}")
    print(target_table(docs, 0.8))
    print("\ndiagnostic: the same, simulated without step jitter (every step at the cost model's "
          "median)")
    print(target_table(docs, 0.8, "comparison_no_jitter"))
    print("\ndiagnostic: simulated with step costs x the machine drift measured around each "
          "point")
    print(target_table(docs, 0.8, "comparison_drift_adjusted"))
    print("\ndiagnostic, not a prediction: simulated with step costs x the point's own level "
          "(real step time / predicted, over the steps that ran)")
    print(target_table(docs, 0.8, "comparison_level_matched"))
    summary = {policy: {"target": doc["target"], "errors": {m: doc["errors"][m]
                                                            for m in TARGET_METRICS}}
               for policy, doc in docs.items()}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
