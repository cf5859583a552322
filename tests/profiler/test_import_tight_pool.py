"""The held-out shape of issue 15, end to end on hand-written tables: a MoE model imported at
tp 2 (tp1's expert table scaled), an LLMServingSim workload file, and an engine config whose
kv_cache pool is tight, through the exact `profile --import` and `simulate --engine-config`
commands: every request completes, preemptions happen, the pool is the file's less vLLM's null
block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from batchsim.cli import main
from tests.profiler.test_import_llmservingsim import TINY_MOE, run_import


def test_moe_tp2_with_a_tight_pool_preempts_and_completes(tmp_path: Path) -> None:
    profile = run_import(tmp_path, TINY_MOE, "tiny-moe.json", "--tp", "2")
    rng = np.random.default_rng(0)
    lines = [json.dumps({"input_toks": int(rng.integers(8, 60)),
                         "output_toks": int(rng.integers(4, 40)),
                         "arrival_time_ns": int(i * 2e6)}) for i in range(40)]
    trace = tmp_path / "workload.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    # 13 blocks of 8 tokens: 12 usable (96 tokens), room for any one request, not for four
    longest = max(sum(json.loads(x)[k] for k in ("input_toks", "output_toks")) for x in lines)
    assert 48 < longest <= 96
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({
        "schema_version": 1, "model": "org/tiny-moe", "vllm_version": "0.19.0",
        "engine_kwargs": {"tensor_parallel_size": 2, "max_num_seqs": 4,
                          "max_num_batched_tokens": 32, "enable_expert_parallel": False},
        "kv_cache": {"num_gpu_blocks": 13, "block_size": 8, "num_kv_tokens": 104,
                     "num_cpu_blocks": None, "kv_cache_memory_bytes": None}}))
    run = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(trace), "--profile",
                 str(profile), "--engine-config", str(meta), "--out", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert metrics["completed"] == 40 and metrics["preemptions"] > 0
    assert config["kv_capacity_blocks"] == 12
    assert config["engine_config"]["knobs"]["num_gpu_blocks_override"]["value"] == 13
