"""Observed validation: import a measured vLLM profile, simulate a real vLLM run's requests with the
run's own engine settings, and compare with what the server measured.

Pipeline, each step the user's own command run as a subprocess (nothing else is tuned to the run):
  1. batchsim profile --import llmservingsim PERF_DIR --model CONFIG --tp N --out P.json
     (N = the run's meta.json engine_kwargs.tensor_parallel_size)
  2. batchsim simulate --policy continuous --trace REQUESTS.jsonl --profile P.json
                       --engine-config META.json
  3. the real side read from REQUESTS.jsonl (batchsim.sim.validation.observed: TTFT and E2EL from
     queued_ts, TPOT = (last - first) / (output - 1)), against the simulation's metrics.json.
Prints mean, median, p90 and p99 of TTFT, TPOT and E2EL, real vs simulated, with the signed
error, and whether each is within the target (3%); then the simulation's TTFT and E2EL errors
counted from its engine's QUEUED stamp instead of the arrival (observed_compare.engine_queued_s:
the end of the step running at arrival, the origin of vLLM's own logged latencies).

When this checkout's `batchsim profile` has no --import yet, step 1 is replaced by a STAND-IN:
an analytic roofline of the model on the run's GPU (memory size and bandwidth from the run's
config.json, the roofline's assumed efficiencies; peak FLOP/s ASSUMED), and the output says so
in capitals: its errors measure the stand-in, not the importer.

Usage: python bench/observed_validation.py [--data ../shared/data/llmservingsim]
         [--perf REL_DIR] [--model REL_CONFIG] [--run REL_DIR] [--keep DIR] [--report]
Defaults: the RTX PRO 6000 Llama-3.1-8B run of the shared data.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PERF = "profiler/perf/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
DEFAULT_MODEL = "configs/model/meta-llama/Llama-3.1-8B.json"
DEFAULT_RUN = "bench/examples/RTXPRO6000/Llama-3.1-8B/vllm"
METRICS = ("ttft_ms", "tpot_ms", "e2el_ms")
STATS = ("mean", "median", "p90", "p99")
TARGET = 0.03


def batchsim() -> list[str]:
    exe = Path(sys.executable).parent / "batchsim"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "batchsim"]


def run(words: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(["batchsim", *words]), flush=True)
    return subprocess.run([*batchsim(), *words], cwd=cwd, capture_output=True, text=True)


def make_profile(perf: Path, model: Path, tp: int, out: Path, cwd: Path,
                 run_dir: Path) -> str:
    """Step 1; returns "imported" or "STAND-IN" (the importer is not in this checkout)."""
    done = run(["profile", "--import", "llmservingsim", str(perf), "--model", str(model),
                "--tp", str(tp), "--out", str(out)], cwd)
    if done.returncode == 0:
        return "imported"
    if "--import" not in done.stderr and "unrecognized arguments" not in done.stderr:
        sys.exit(f"profile import failed:\n{done.stderr.strip()}")
    print("  -> this checkout has no `profile --import`: writing a STAND-IN analytic profile",
          flush=True)
    out.write_text(json.dumps(stand_in_profile(model, run_dir.parent / "config.json"), indent=1))
    return "STAND-IN"


def stand_in_profile(model_config: Path, cluster_config: Path) -> dict[str, Any]:
    """An analytic roofline of the model on the run's GPU: a placeholder until the importer."""
    from batchsim.profiler.analytic.roofline import H100_SXM, analytic_profile

    c = json.loads(model_config.read_text())
    npu = json.loads(cluster_config.read_text())["nodes"][0]["instances"][0]["npu_mem"]
    m = {"name": model_config.stem.lower(), "family": c["model_type"],
         "num_layers": c["num_hidden_layers"], "hidden_size": c["hidden_size"],
         "intermediate_size": c["intermediate_size"],
         "num_attention_heads": c["num_attention_heads"],
         "num_kv_heads": c["num_key_value_heads"],
         "head_dim": c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]),
         "vocab_size": c["vocab_size"], "max_model_len": c["max_position_embeddings"],
         "tie_word_embeddings": c.get("tie_word_embeddings", False),
         "qkv_bias": c.get("attention_bias", False)}
    import dataclasses

    device = dataclasses.replace(
        H100_SXM, name="STAND-IN analytic roofline of the run's GPU",
        total_bytes=int(npu["mem_size"] * 1e9), peak_bandwidth=npu["mem_bw"] * 1e9,
        peak_flops=500e12)  # ASSUMED: a stand-in, not a published figure
    return analytic_profile(m, device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "llmservingsim")
    p.add_argument("--perf", default=DEFAULT_PERF)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--run", default=DEFAULT_RUN)
    p.add_argument("--keep", type=Path, help="keep the profile and run folder here")
    p.add_argument("--report", action="store_true",
                   help="also run `batchsim validate --observed` on the same inputs (per-request "
                        "and over-time comparison, report.html)")
    args = p.parse_args()
    run_dir = (args.data / args.run).resolve()
    if not run_dir.exists():
        sys.exit(f"{run_dir}: no such run (the shared data is absent?)")
    meta = json.loads((run_dir / "meta.json").read_text())
    tp = int((meta.get("engine_kwargs") or {}).get("tensor_parallel_size") or 1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="observed-validation-"))
    work.mkdir(parents=True, exist_ok=True)
    profile = work / "P.json"
    kind = make_profile((args.data / args.perf).resolve(), (args.data / args.model).resolve(),
                        tp, profile, work, run_dir)
    done = run(["simulate", "--policy", "continuous", "--trace", str(run_dir / "requests.jsonl"),
                "--profile", str(profile), "--engine-config", str(run_dir / "meta.json")], work)
    if done.returncode != 0:
        sys.exit(f"simulate failed:\n{done.stderr.strip()}")
    for line in done.stderr.strip().splitlines():
        print("  " + line)
    found = re.search(r"^run folder: (.+)$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    sim_dir = work / found.group(1)
    sim = json.loads((sim_dir / "metrics.json").read_text())
    config = json.loads((sim_dir / "config.json").read_text())

    from batchsim.sim.validation.observed import load_observed

    real = load_observed(run_dir / "requests.jsonl").metrics
    print(f"\nprofile: {kind} ({config['profile']['source']}, {config['profile']['device']}); "
          f"knobs from the engine config: "
          + ", ".join(f"{k}={v['value']}" for k, v in config["engine_config"]["knobs"].items()))
    print(f"code: {git_rev()}\n")
    print(f"{'metric':<16}{'real':>12}{'sim':>12}{'error':>10}  within {TARGET:.0%}")
    ok = 0
    for metric in METRICS:
        for stat in STATS:
            r, s = real[metric][stat], sim[metric][stat]
            err = (s - r) / r
            ok += abs(err) <= TARGET
            print(f"{metric + '.' + stat:<16}{r:>12.1f}{s:>12.1f}{err:>+10.1%}  "
                  f"{'yes' if abs(err) <= TARGET else 'no'}")
    print(f"\n{ok} of {len(METRICS) * len(STATS)} within {TARGET:.0%}"
          + ("   (STAND-IN PROFILE: not the importer's accuracy)" if kind != "imported" else ""))
    queued = queued_origin_metrics(sim_dir)
    print("\nthe same simulation, TTFT and E2EL counted from its engine's QUEUED stamp (the end "
          "of the step running at arrival: the origin of the log's own latencies):")
    print("  " + "   ".join(
        f"{metric.removesuffix('_ms').upper()} " + " / ".join(
            f"{(queued[metric][stat] - real[metric][stat]) / real[metric][stat]:+.1%}"
            for stat in STATS) for metric in ("ttft_ms", "e2el_ms"))
        + "   (mean / median / p90 / p99)")
    print(f"throughput: real {real['request_throughput']:.3f} req/s, "
          f"sim {sim['request_throughput']:.3f} req/s; files in {work}")
    if args.report:
        done = run(["validate", "--observed", str(run_dir / "requests.jsonl"), "--policy",
                    "continuous", "--profile", str(profile), "--engine-config",
                    str(run_dir / "meta.json"), "--out", str(work / "validation"), "--quiet"],
                   work)
        print(done.stdout.strip() if done.returncode == 0 else done.stderr.strip())
    return 0


def queued_origin_metrics(sim_dir: Path) -> dict[str, Any]:
    import pandas as pd

    from batchsim.sim.validation.observed import request_metrics
    from batchsim.sim.validation.observed_compare import from_engine_queue

    requests = pd.read_csv(sim_dir / "requests.csv")
    return request_metrics(from_engine_queue(requests, pd.read_csv(sim_dir / "steps.csv")))


def git_rev() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                          capture_output=True, text=True)
    return done.stdout.strip()[:100] or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
