"""When does the CPU path pay off? Hybrid vs continuous batching over load and prompt mix.

Scenarios (committed profiles only; every figure printed names where its numbers come from):
  h100+vm-cpu  GPU: profiles/qwen2.5-0.5b-h100-analytic.json (ANALYTIC roofline, not measured);
               CPU path: profiles/qwen2.5-0.5b-cpu.json packed.prefill (MEASURED on this 2-core
               dev VM, fp32, one thread); KV copy ASSUMED (no measured kv_copy exists yet).
  vm-cpu x2    CPU-only stand-in: the measured CPU profile is both the "GPU" and the CPU path,
               as on a machine with two such workers. Shows the mechanics, not a CPU+GPU claim.
For each scenario and prompt mix, continuous batching's capacity is measured (all requests at
t=0); loads are fractions of it. Cells: p99 TTFT and goodput (requests/s meeting the SLOs) of
both policies, the change, and the share of requests the hybrid policy prefilled on the CPU.
Also printed: the derived B1 and, for h100+vm-cpu, how much faster the CPU's prefill would have
to be for a prompt of each mix's length to ever go to the CPU.

Usage: python bench/hybrid_gain.py [--requests 600] [--kv-copy-gbps 25] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchsim.sim.profile import cpu_cost_model, execution_paths, load_profile  # noqa: E402
from batchsim.sim.run import RunSpec, prepare, simulate  # noqa: E402
from batchsim.sim.workload.synthetic import SyntheticSpec  # noqa: E402

GPU_ANALYTIC = str(ROOT / "profiles" / "qwen2.5-0.5b-h100-analytic.json")
VM_CPU = str(ROOT / "profiles" / "qwen2.5-0.5b-cpu.json")
CHAT = str(ROOT / "traces" / "chat.jsonl")
LOADS = (0.5, 0.8, 0.95, 1.2)


@dataclass(frozen=True)
class Scenario:
    name: str
    gpu_profile: str
    slo_ms: dict[str, float]  # goodput SLOs, scaled to the "GPU"'s speed


@dataclass(frozen=True)
class Mix:
    name: str
    input_len: int
    output_len: int
    range_ratio: float = 0.5
    lengths_from: str | None = None


SCENARIOS = (
    Scenario("h100+vm-cpu", GPU_ANALYTIC, {"ttft_ms": 100.0, "tpot_ms": 50.0}),
    Scenario("vm-cpu x2", VM_CPU, {"ttft_ms": 5000.0, "tpot_ms": 1000.0}),
)
MIXES = (
    Mix("short 32", 32, 32),
    Mix("medium 256", 256, 32),
    Mix("chat trace", 0, 0, lengths_from=CHAT),
)


def spec(sc: Scenario, mix: Mix, policy: str, rate: float, args: argparse.Namespace,
         num_requests: int) -> RunSpec:
    synthetic = SyntheticSpec(num_requests=num_requests, request_rate=rate,
                              input_len=mix.input_len or 1024, output_len=mix.output_len or 128,
                              range_ratio=mix.range_ratio if not mix.lengths_from else 0.0,
                              lengths_from=mix.lengths_from)
    hybrid = policy == "hybrid"
    return RunSpec(policy=policy, profile=sc.gpu_profile, synthetic=synthetic, seed=args.seed,
                   goodput=sc.slo_ms, reject_too_long=True,
                   cpu_profile=VM_CPU if hybrid else None,
                   kv_copy_gbps=args.kv_copy_gbps if hybrid else None)


def run(sc: Scenario, mix: Mix, policy: str, rate: float, args: argparse.Namespace,
        num_requests: int | None = None) -> dict[str, Any]:
    out = simulate(prepare(spec(sc, mix, policy, rate, args, num_requests or args.requests)))
    m = out.metrics
    cpu = m.get("prefill_path_requests", {}).get("cpu", 0)
    return {"p99_ttft_ms": m["ttft_ms"]["p99"], "goodput": m["goodput"]["request_goodput"],
            "throughput": m["request_throughput"], "cpu_share": cpu / max(m["completed"], 1),
            "cpu_busy": m.get("cpu_busy_fraction", 0.0),
            "b1": out.config.get("derived_knobs", {}).get("cpu_max_prompt_tokens")}


def change(new: float, old: float, lower_is_better: bool, floor: float = 0.0) -> str:
    if max(new, old) <= floor:
        return "~0 both"
    if old == 0:
        return "n/a" if new == 0 else "+inf"
    pct = (new - old) / old * 100
    better = pct < 0 if lower_is_better else pct > 0
    tag = "" if abs(pct) < 0.5 else (" win" if better else " loss")
    return f"{pct:+.1f}%{tag}"


def break_even(args: argparse.Namespace) -> list[str]:
    """Speed-up of the CPU's prefill needed for a prompt of n tokens to pass B1 against the
    analytic H100: s * C(n) + X(n) < G(8192) + G(n)."""
    gpu_profile = load_profile(GPU_ANALYTIC)
    paths = execution_paths(gpu_profile, cpu_cost_model(gpu_profile, load_profile(VM_CPU),
                                                        args.kv_copy_gbps))
    gpu, cpu = paths["gpu"], paths["cpu"]
    assert cpu.transfer is not None
    full = gpu.prefill_latency(8192)
    lines = []
    for n in (32, 256, 1024):
        compute = cpu.prefill_latency(n) - cpu.transfer.seconds(n)
        room = full + gpu.prefill_latency(n) - cpu.transfer.seconds(n)
        lines.append(f"  prompt {n:>5}: CPU prefill {compute * 1e3:8.1f} ms (measured, 1 thread) "
                     f"vs GPU budget {room * 1e3:6.1f} ms (analytic) -> needs "
                     f"{compute / room:6.0f}x faster CPU prefill")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--kv-copy-gbps", type=float, default=25.0,
                   help="ASSUMED CPU->GPU KV copy bandwidth (no measured figure exists)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"KV copy: ASSUMED {args.kv_copy_gbps} GB/s (PCIe-class), no latency; "
          f"{args.requests} requests per cell, Poisson arrivals, seed {args.seed}")
    print("CPU path: MEASURED qwen2.5-0.5b fp32 prefill, 1 thread of this 2-core AMD EPYC VM")
    header = (f"{'scenario':<12} {'mix':<11} {'load':>5} {'req/s':>8} | {'p99 TTFT ms':>23} "
              f"{'change':>12} | {'goodput req/s':>17} {'change':>12} | {'on CPU':>6} "
              f"{'CPU busy':>8}")
    for sc in SCENARIOS:
        gpu_kind = "ANALYTIC H100" if sc.gpu_profile == GPU_ANALYTIC else "MEASURED VM CPU"
        print(f"\n== {sc.name}: GPU side {gpu_kind}; SLO ttft<={sc.slo_ms['ttft_ms']:.0f} ms, "
              f"tpot<={sc.slo_ms['tpot_ms']:.0f} ms")
        print(header)
        print(f"{'':<31}| {'continuous':>11} {'hybrid':>11}")
        for mix in MIXES:
            # Saturated throughput over many requests (few would measure the longest one).
            capacity = run(sc, mix, "continuous", math.inf, args,
                           num_requests=max(2000, 4 * args.requests))["throughput"]
            for load in LOADS:
                rate = load * capacity
                c = run(sc, mix, "continuous", rate, args)
                h = run(sc, mix, "hybrid", rate, args)
                print(f"{sc.name:<12} {mix.name:<11} {load:>5.2f} {rate:>8.2f} | "
                      f"{c['p99_ttft_ms']:>11.1f} {h['p99_ttft_ms']:>11.1f} "
                      f"{change(h['p99_ttft_ms'], c['p99_ttft_ms'], True):>12} | "
                      f"{c['goodput']:>8.3f} {h['goodput']:>8.3f} "
                      f"{change(h['goodput'], c['goodput'], False, 0.01 * rate):>12} | "
                      f"{h['cpu_share']:>6.0%} {h['cpu_busy']:>8.2f}   B1={h['b1']}")
    print("\nBreak-even for h100+vm-cpu (B1 = 0 above means no prompt ever goes to this CPU):")
    print("\n".join(break_even(args)))


if __name__ == "__main__":
    main()
