"""Does `continuous` decide as vLLM's V1 scheduler does? vLLM's own Scheduler, driven step by
step on the CPU (bench/vllm_driver.py), beside the policy in batchsim's simulator, on seeded
cases, both priced by the same linear step-cost formula (COSTS).

vLLM is an optional dependency, never installed with batchsim: point --vllm-python at an
interpreter that has it (a separate venv, docs/VLLM.md says how), or set BATCHSIM_VLLM_PYTHON.
Without one the benchmark says so and exits 0.

Per case and side: steps run, the first step whose batch differs (request -> tokens; "-" when
every step is identical), preemptions, and the policy's mean TTFT and E2E latency relative to
vLLM's. Rows: the policy with the vLLM version's defaults (`continuous`), and the policy as it
was before it modelled the three behaviours (`pre-0.14 rules`: first-chunk admission, the cap on
a lone request, synchronous scheduling), both against the same vLLM run.

Usage: python bench/vllm_conformance.py [--vllm-python PY] [--cases NAME,...] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchsim.policies.base import Plan  # noqa: E402
from batchsim.policies.kv import MemoryFacts  # noqa: E402
from batchsim.policies.registry import get_policy, make_config  # noqa: E402
from batchsim.sim.cost_model import REQUIRED_MODELS, CostModel  # noqa: E402
from batchsim.sim.profile import Profile  # noqa: E402
from batchsim.sim.run import Prepared, RunSpec, simulate  # noqa: E402
from batchsim.sim.workload.workload import Workload  # noqa: E402

# Seconds per unit of each step-shape feature, per phase (a GPU-like shape, not a measurement).
DECODE = {"const": 3e-3, "num_decode_seqs": 2e-5, "decode_ctx_tokens": 1e-8}
PREFILL = {"const": 3e-3, "num_prefill_tokens": 5e-5, "prefill_attn_pairs": 2e-10}
COSTS = {"prefill": PREFILL, "decode": DECODE, "mixed": {**PREFILL, **DECODE}}
OLD_RULES = {"async_scheduling": False, "scheduler_reserve_full_isl": False,
             "long_prefill_uncapped_when_alone": False}


@dataclass(frozen=True)
class Case:
    name: str
    knobs: dict[str, Any]  # batchsim knob names, the same settings given to vLLM
    num_blocks: int  # usable KV blocks: both sides get a pool of num_blocks + 1 (vLLM's
    # num_gpu_blocks, and the policy's num_gpu_blocks_override), block 0 being the null block
    rows: list[tuple[float, int, int, int]] = field(repr=False)  # arrival, in, out, priority
    max_model_len: int = 16384


def poisson(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return np.cumsum(rng.exponential(1.0 / rate, n)) - 1.0 / rate


def cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    # The case: 4k-8k prompts, a 512-token budget, a 2,000-block pool.
    n = 60
    rows = list(zip(poisson(rng, n, 1.5), rng.integers(4096, 8193, n), rng.integers(32, 257, n),
                    [0] * n, strict=True))
    base = {"max_num_seqs": 256, "max_num_batched_tokens": 512, "block_size": 16}
    out.append(Case("long-prompts-small-pool", base, 2000, rows))
    out.append(Case("same, first-chunk admission", {**base, "scheduler_reserve_full_isl": False},
                    2000, rows))
    # A lone long request under long_prefill_token_threshold, then one with company.
    lone = {"max_num_seqs": 64, "max_num_batched_tokens": 2048, "block_size": 16,
            "long_prefill_token_threshold": 256}
    out.append(Case("lone-long-request", lone, 4000, [(0.0, 6000, 64, 0)]))
    out.append(Case("long-request-then-company", lone, 4000,
                    [(0.0, 6000, 64, 0), (0.05, 3000, 64, 0), (0.3, 200, 32, 0)]))
    # Moderate load with arrivals during steps: chat-like lognormal lengths.
    n = 300
    chat = list(zip(poisson(rng, n, 12.0),
                    np.clip(rng.lognormal(6.0, 1.0, n), 8, 4000).astype(int),
                    np.clip(rng.lognormal(5.0, 0.8, n), 4, 1000).astype(int), [0] * n,
                    strict=True))
    moderate = {"max_num_seqs": 64, "max_num_batched_tokens": 2048, "block_size": 16}
    out.append(Case("moderate-load", moderate, 20000, chat))
    out.append(Case("moderate-load, synchronous", {**moderate, "async_scheduling": False},
                    20000, chat))
    # A burst into a tight pool: decode-time preemptions.
    n = 80
    burst = list(zip(np.sort(rng.uniform(0, 0.05, n)), rng.integers(16, 200, n),
                     rng.integers(100, 400, n), [0] * n, strict=True))
    tight = {"max_num_seqs": 64, "max_num_batched_tokens": 1024, "block_size": 16}
    out.append(Case("tight-pool-decodes", tight, 600, burst))
    # Priorities in the same tight pool.
    pri = [(a, i, o, int(p)) for (a, i, o, _), p in zip(burst, rng.integers(0, 3, n),
                                                        strict=True)]
    out.append(Case("priority-tight-pool", {**tight, "policy": "priority"}, 600, pri))
    # The threshold with several prefills in flight, and no chunked prefill.
    n = 120
    mixed = list(zip(poisson(rng, n, 8.0), rng.choice([64, 300, 2500], n),
                     rng.integers(16, 200, n), [0] * n, strict=True))
    out.append(Case("threshold-many-prefills", {**moderate, "max_num_batched_tokens": 1024,
                                                "long_prefill_token_threshold": 256},
                    6000, mixed))
    out.append(Case("no-chunked-prefill", {**moderate, "max_num_batched_tokens": 4096,
                                           "enable_chunked_prefill": False}, 6000, mixed,
                    max_model_len=4096))
    return out


# -- batchsim side ------------------------------------------------------------------------------


def bench_profile(case: Case) -> Profile:
    """The COSTS formula; memory for exactly case.num_blocks blocks at gpu_memory_utilization 1
    (the pool itself is set by num_gpu_blocks_override, as vLLM's num_gpu_blocks)."""
    bs = int(case.knobs["block_size"])
    terms = {"packed.prefill": PREFILL, "packed.decode": DECODE, "packed.mixed": COSTS["mixed"],
             "padded.prefill": PREFILL, "padded.decode": DECODE}
    return Profile(path="<vllm_conformance>", source="analytic", fingerprint={"device": "bench"},
                   model={"name": "bench", "max_model_len": case.max_model_len},
                   memory=MemoryFacts(total_bytes=case.num_blocks * bs, weight_bytes=0,
                                      kv_bytes_per_token=1),
                   cost_models={k: CostModel.from_json({"terms": [terms[k]]})
                                for k in REQUIRED_MODELS},
                   cv={}, kv_copy=None, digest="bench")


def run_policy(case: Case, vllm_version: str, extra: dict[str, Any]) -> dict[str, Any]:
    knobs = {**case.knobs, "gpu_memory_utilization": 1.0, "vllm_version": vllm_version,
             "num_gpu_blocks_override": case.num_blocks + 1, **extra}
    profile = bench_profile(case)
    base = get_policy("continuous")
    log: list[dict[str, int]] = []

    class Logged(base):  # type: ignore[valid-type, misc]
        def schedule(self, now_s, arrivals_done):  # type: ignore[no-untyped-def]
            decision = super().schedule(now_s, arrivals_done)
            if isinstance(decision, Plan):
                batch = {c.request.id: c.num_tokens for c in decision.prefills}
                batch.update({r.id: 1 for r in decision.decodes})
                log.append(batch)
            return decision

    policy = Logged(make_config("continuous", knobs), profile.memory, profile.max_model_len)
    arr = np.array([r[0] for r in case.rows])
    order = np.argsort(arr, kind="stable")
    work = Workload(arrival_s=arr[order],
                    input_tokens=np.array([case.rows[i][1] for i in order], dtype=np.int64),
                    output_tokens=np.array([case.rows[i][2] for i in order], dtype=np.int64),
                    priority=np.array([case.rows[i][3] for i in order], dtype=np.int64),
                    ids=[f"r{i}" for i in order], source=case.name)
    out = simulate(Prepared(RunSpec(policy="continuous"), profile, policy, work, set()),
                   fast_forward=False)
    req = out.requests.set_index("id")
    return {"steps": log, "ttft_ms": req["ttft_ms"].to_dict(), "e2el_ms": req["e2el_ms"].to_dict(),
            "preemptions": int(out.metrics["preemptions"])}


# -- vLLM side ------------------------------------------------------------------------------------


def run_vllm(python: str, all_cases: list[Case]) -> dict[str, Any]:
    payload = [{"name": c.name, "knobs": {**c.knobs}, "num_blocks": c.num_blocks,
                "max_model_len": c.max_model_len, "costs": COSTS,
                "requests": [[f"r{i}", float(a), int(n_in), int(n_out), int(p)]
                             for i, (a, n_in, n_out, p) in enumerate(c.rows)]}
               for c in all_cases]
    with tempfile.TemporaryDirectory() as tmp:
        cases_file, out_file = Path(tmp) / "cases.json", Path(tmp) / "out.json"
        cases_file.write_text(json.dumps(payload))
        subprocess.run([python, str(ROOT / "bench" / "vllm_driver.py"), str(cases_file),
                        str(out_file)], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out_file.read_text())


def vllm_available(python: str) -> str | None:
    """vLLM's version under python, or None."""
    try:
        code = "import sys, vllm; sys.stdout.write(vllm.__version__)"
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# -- comparison -----------------------------------------------------------------------------------


def compare(case: Case, ref: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    vsteps = [s[1] for s in ref["steps"]]
    first = next((k + 1 for k, (a, b) in enumerate(zip(vsteps, ours["steps"], strict=False))
                  if a != b), None)
    if first is None and len(vsteps) != len(ours["steps"]):
        first = min(len(vsteps), len(ours["steps"])) + 1
    arrival = {f"r{i}": r[0] for i, r in enumerate(case.rows)}
    vttft = np.mean([(v["first_token_s"] - arrival[k]) * 1e3 for k, v in ref["requests"].items()])
    ve2e = np.mean([(v["finish_s"] - arrival[k]) * 1e3 for k, v in ref["requests"].items()])
    return {"steps": (len(vsteps), len(ours["steps"])), "first_diverging": first,
            "preemptions": (sum(v["preemptions"] for v in ref["requests"].values()),
                            ours["preemptions"]),
            "ttft": (vttft, np.mean(list(ours["ttft_ms"].values()))),
            "e2e": (ve2e, np.mean(list(ours["e2el_ms"].values())))}


def pct(pair: tuple[float, float]) -> str:
    return f"{(pair[1] - pair[0]) / pair[0] * 100:+.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-python", default=os.environ.get("BATCHSIM_VLLM_PYTHON",
                                                            sys.executable))
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    version = vllm_available(args.vllm_python)
    if version is None:
        print(f"vllm_conformance: skipped: {args.vllm_python} cannot import vllm; install vllm "
              "in a separate venv and pass --vllm-python (docs/VLLM.md)")
        return 0
    chosen = cases(args.seed)
    if args.cases:
        names = args.cases.split(",")
        unknown = sorted(set(names) - {c.name for c in chosen})
        if unknown:
            print(f"vllm_conformance: error: unknown case {', '.join(unknown)}; cases: "
                  f"{', '.join(c.name for c in chosen)}", file=sys.stderr)
            return 2
        chosen = [c for c in chosen if c.name in names]
    ref = {c["name"]: c for c in run_vllm(args.vllm_python, chosen)["cases"]}
    print(f"vLLM {version} Scheduler (CPU, driven step by step) vs batchsim continuous "
          f"(vllm_version={version}); seed {args.seed}; step costs: bench/vllm_conformance.py "
          "COSTS (not a measurement)")
    head = ("case", "policy", "steps vLLM/ours", "first diverging step", "preemptions vLLM/ours",
            "mean TTFT", "mean E2E")
    rows = []
    for case in chosen:
        for label, extra in (("continuous", {}), ("pre-0.14 rules", OLD_RULES)):
            r = compare(case, ref[case.name], run_policy(case, version, extra))
            rows.append((case.name, label, "{}/{}".format(*r["steps"]),
                         str(r["first_diverging"] or "-"), "{}/{}".format(*r["preemptions"]),
                         pct(r["ttft"]), pct(r["e2e"])))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print("TTFT/E2E: the policy's mean relative to vLLM's, same requests, same cost formula.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
