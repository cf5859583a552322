"""The analytic profile: FLOPs and bytes per operation, MoE, tensor parallelism, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batchsim.cli import main
from batchsim.policies.base import StepShape, chunk_attn_pairs
from batchsim.profiler.analytic.arch import ModelArch, arch_from_config, resolve_arch
from batchsim.profiler.analytic.calibration import KernelParams, load_calibration, op_time
from batchsim.profiler.analytic.gpus import GpuSpec, resolve_gpu
from batchsim.profiler.analytic.ops import expected_experts, step_ops
from batchsim.sim.profile import load_profile

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

# hidden 64, 4 query heads and 2 KV heads of 16, MLP 128, vocab 100, 2 layers
SMALL = ModelArch(name="small", model_type="llama", num_layers=2, hidden_size=64, num_heads=4,
                  num_kv_heads=2, head_dim=16, intermediate_size=128, vocab_size=100,
                  max_model_len=1024, tie_word_embeddings=False)


def by_name(shape: StepShape, arch: ModelArch = SMALL, tp: int = 1) -> dict:
    return {op.name: op for op in step_ops(arch, shape, tp)}


def test_prefill_ops_count_flops_and_bytes_by_hand():
    """One prompt of 8 tokens: QKV is an (8 x 64) @ (64 x 128) GEMM, 2*8*64*128 FLOPs, moving
    the 64*128 weight, 8*64 inputs and 8*128 outputs in bf16; attention does 4*4*16 FLOPs per
    causal pair (36 pairs); the varlen kernel runs it as one query tile of 64 rows per head."""
    ops = by_name(StepShape(1, 8, 0, chunk_attn_pairs(0, 8), 0))
    qkv = ops["qkv_proj"]
    assert (qkv.flops, qkv.bytes, qkv.count) == (2 * 8 * 64 * 128, (64 * 128 + 8 * 64 + 8 * 128)
                                                 * 2, 2)
    assert ops["o_proj"].flops == 2 * 8 * 64 * 64
    assert ops["gate_up_proj"].flops == 2 * 8 * 64 * 256
    assert ops["down_proj"].flops == 2 * 8 * 128 * 64
    attn = ops["attention"]
    assert attn.flops == 4 * 4 * 16 * 36
    assert attn.kind == "attention" and attn.kv_bytes == 0
    # keys seen: pairs / chunk + (chunk - 1) / 2 = 36/8 + 3.5 = 8 (the chunk itself); their K and
    # V once per KV head (2 x 2 x 16 values each), plus the queries in and outputs out (4 x 16)
    assert attn.bytes == (8 * 2 * 2 * 16 + 2 * 8 * 4 * 16) * 2
    # one 64-row tile per head walks the 8 keys: 4 x 16 x 64 FLOPs per key, 4 heads
    assert attn.padded_flops == 4 * (4 * 16 * 64) * 8
    assert attn.walk_flops == (4 * 16 * 64) * 8
    assert ops["lm_head"].flops == 2 * 1 * 64 * 100  # only the sampled token
    assert ops["layernorm"].count == 4  # before attention and before the MLP, in each layer


def test_decode_attention_reads_each_context_once_per_kv_head():
    """Three decodes of 100 cached tokens each (101 keys with their own): K and V of 2 heads of
    16, 303 tokens, bf16, in the decode kernel."""
    attn = by_name(StepShape(3, 0, 3, 0, 3 * 101))["attention"]
    assert attn.kind == "decode_attention"
    assert attn.kv_bytes == attn.bytes == 2 * 32 * 303 * 2
    assert attn.flops == 4 * 4 * 16 * 303


def test_decodes_beside_a_chunk_read_their_context_once_per_query_head():
    """A chunk of 8 and two decodes of 50 keys in one varlen kernel: each decode is a 64-row
    tile per query head walking its 50 keys, reading them for each of the 4 query heads."""
    attn = by_name(StepShape(3, 8, 2, chunk_attn_pairs(0, 8), 100))["attention"]
    assert attn.kind == "attention" and attn.seqs == 3 and attn.tokens == 10
    chunk_bytes = (8 * 2 * 2 * 16 + 2 * 8 * 4 * 16) * 2
    assert attn.bytes == chunk_bytes + 100 * 2 * 4 * 16 * 2
    assert attn.padded_flops == 4 * (4 * 16 * 64) * (8 + 100)
    assert attn.walk_flops == (4 * 16 * 64) * 50  # the longest tile: a decode's 50 keys


def test_expected_experts_under_top_k_routing():
    assert expected_experts(8, 2, 1) == pytest.approx(2.0)
    assert expected_experts(8, 2, 2) == pytest.approx(8 * (1 - 0.75**2))  # 3.5
    assert expected_experts(128, 8, 10_000) == pytest.approx(128.0)
    assert expected_experts(128, 8, 0) == 0.0


def test_moe_layer_reads_only_the_experts_its_tokens_activate():
    cfg = {"model_type": "qwen3_moe", "hidden_size": 64, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 256,
           "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
           "num_hidden_layers": 2, "vocab_size": 100, "max_position_embeddings": 512}
    arch = arch_from_config(cfg, "tiny-moe")
    one = by_name(StepShape(1, 0, 1, 0, 10), arch)["moe"]
    # one token: 2 experts' gate, up and down (3 x 64 x 32 each) + the token in and out per expert
    assert one.bytes == (2 * 3 * 64 * 32 + 2 * 1 * 2 * 64) * 2
    assert one.flops == 2 * 1 * 2 * 3 * 64 * 32
    many = by_name(StepShape(0, 64, 0, 0, 0), arch)["moe"]
    assert many.bytes == pytest.approx((expected_experts(8, 2, 64) * 3 * 64 * 32
                                        + 2 * 64 * 2 * 64) * 2)
    assert "gate_up_proj" not in by_name(StepShape(1, 0, 1, 0, 10), arch)
    assert arch.num_params() == 2 * (64 * (64 + 64) + 64 * 64 + 8 * 3 * 64 * 32 + 64 * 8
                                     + 2 * 64) + 2 * 100 * 64 + 64


def test_tensor_parallel_halves_each_gpu_s_work_and_adds_two_all_reduces_per_layer():
    shape = StepShape(4, 0, 4, 0, 4 * 50)
    one, two = by_name(shape), by_name(shape, tp=2)
    for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"):
        assert two[name].flops == one[name].flops / 2, name
    assert two["attention"].kv_bytes == one["attention"].kv_bytes / 2
    assert "allreduce" not in one
    ar = two["allreduce"]
    assert ar.count == 2 * SMALL.num_layers
    assert ar.bytes == 2 * (2 - 1) / 2 * 4 * 64 * 2  # ring: 2(N-1)/N of 4 tokens x 64 x bf16
    gpu = resolve_gpu("h100-sxm")
    assert op_time(ar, gpu, {}) == pytest.approx(ar.bytes / gpu.link_bandwidth
                                                 + 2 * gpu.link_latency_s)


def test_kernel_model_is_memory_bound_small_and_compute_bound_large():
    """A GEMM of 1 token costs its weight read; of 8k tokens, its FLOPs (at the fitted
    efficiencies); the smooth maximum never undercuts either bound."""
    gpu = GpuSpec("g", "hopper", 1e15, 1e12, 80 * 2**30, 1e11)
    kp = KernelParams(c_s=0.0, e_c=1.0, e_m=1.0, p=4.0)
    for tokens in (1, 8192):
        op = by_name(StepShape(0, tokens, 0, 0, 0), resolve_arch("llama-2-7b")[0])["down_proj"]
        t = kp.time(op, gpu)
        assert t >= max(op.flops / gpu.peak_flops, op.bytes / gpu.mem_bandwidth)
        assert t <= 2 ** 0.25 * max(op.flops / gpu.peak_flops, op.bytes / gpu.mem_bandwidth)


@pytest.mark.skipif(not (SHARED / "llmservingsim").is_dir() and not (SHARED / "vidur").is_dir(),
                    reason="the shared public measurements are not here")
def test_calibration_reproduces_its_training_points_within_the_reported_error():
    from batchsim.profiler.analytic import sources
    from batchsim.profiler.analytic.calibration import ape

    calib, meta = load_calibration()
    srcs = sources.all_sources(SHARED)
    if sorted(s.name for s in srcs) != meta["fitted_on"]:
        pytest.skip("the shared data differs from what calibration.json was fitted on")
    recs = [r for s in srcs for r in sources.records(s)]
    errors = ape(recs, calib)
    for kind, reported in meta["in_sample_kernel_mape"].items():
        mine = float(np.mean([e for r, e in zip(recs, errors, strict=True) if r.op.kind == kind]))
        assert mine == pytest.approx(reported, abs=0.005), kind


def test_committed_calibration_covers_every_kernel_class():
    calib, _ = load_calibration()
    assert {"gemm", "attention", "decode_attention", "norm", "moe"} <= set(calib["pooled"])
    for params in calib["pooled"].values():
        assert params.e_m > 0 and params.e_c > 0 and params.c_s >= 0


def test_profile_analytic_writes_a_profile_the_simulator_runs(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "--analytic", "--model", "qwen2.5-0.5b", "--gpu", "a100-80gb",
                 "--out", str(out)]) == 0
    profile = load_profile(str(out))
    assert profile.source == "analytic"
    doc = json.loads(out.read_text())
    assert doc["assumptions"]["gpu"]["name"] == "a100-80gb"
    assert doc["assumptions"]["engine"] == "vllm"
    assert main(["simulate", "--policy", "continuous", "--profile", str(out), "--num-requests",
                 "30", "--request-rate", "5", "--out", str(tmp_path / "run"), "--quiet"]) == 0


def test_vllm_engine_is_faster_than_eager_per_decode_step(tmp_path):
    """Eager steps are at least their kernel launches; CUDA graphs remove that floor."""
    arch, raw = resolve_arch("qwen2.5-0.5b")
    from batchsim.profiler.analytic.builder import analytic_profile

    gpu = resolve_gpu("h100")
    vllm = analytic_profile(arch, raw, gpu, engine="vllm")
    eager = analytic_profile(arch, raw, gpu, engine="eager")
    decode = [p for p in vllm["points"] if p["model"] == "packed.decode"]
    slow = {p["id"]: p["time_s"] for p in eager["points"]}
    assert all(slow[p["id"]] > p["time_s"] for p in decode)


@pytest.mark.parametrize(("args", "words"), [
    (["--model", "qwen2.5-0.5b", "--gpu", "z100"], "unknown GPU"),
    (["--model", "llama-3.1-8b", "--gpu", "l4", "--tp", "1", "--dtype", "float32"],
     "does not fit"),
    (["--model", "qwen2.5-0.5b", "--gpu", "h100", "--tp", "3"], "power of two"),
    (["--model", "qwen2.5-0.5b", "--gpu", "h100", "--device", "cpu"], "does not apply"),
])
def test_profile_analytic_refuses_bad_input_in_one_line(tmp_path, capsys, args, words):
    assert main(["profile", "--analytic", *args, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_unsupported_architecture_and_own_gpu_file(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "bloom"}))
    assert main(["profile", "--analytic", "--model", str(cfg), "--gpu", "h100"]) == 2
    assert "bloom" in capsys.readouterr().err
    gpu = tmp_path / "mygpu.json"
    gpu.write_text(json.dumps({"family": "ada", "peak_flops": 2e14, "mem_bandwidth": 9e11,
                               "mem_bytes": 48 * 2**30, "link_bandwidth": 3.2e10}))
    out = tmp_path / "p.json"
    assert main(["profile", "--analytic", "--model", "qwen2.5-0.5b", "--gpu", str(gpu), "--out",
                 str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["assumptions"]["gpu"]["name"] == "mygpu"
    gpu.write_text(json.dumps({"family": "ada", "peak_flops": -1}))
    assert main(["profile", "--analytic", "--model", "qwen2.5-0.5b", "--gpu", str(gpu)]) == 2
    assert "missing fields" in capsys.readouterr().err


def test_listing_gpus(capsys):
    assert main(["profile", "--analytic"]) == 0
    out = capsys.readouterr().out
    for name in ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l40s", "l4",
                 "rtx-4090", "rtx-pro-6000", "b200"):
        assert name in out


def test_a_few_long_attention_tiles_are_bound_by_one_sm_each():
    """One short chunk after a long prefix: 4 tiles (one per head) on a GPU of 100 SMs take the
    time one SM needs for one tile's walk, not the whole GPU's time for all the FLOPs; without
    attention measurements the kernel takes the GEMMs' efficiencies."""
    gpu = GpuSpec("g", "hopper", 1e15, 1e12, 80 * 2**30, 1e11, sm_count=100)
    attn = by_name(StepShape(1, 8, 0, chunk_attn_pairs(1000, 8), 0))["attention"]
    gemm = KernelParams(c_s=0.0, e_c=0.5, e_m=1.0, p=50.0)
    t = op_time(attn, gpu, {"pooled": {"gemm": gemm}})
    walk = attn.walk_flops * 100 / (1e15 * 0.5)
    assert t == pytest.approx(walk, rel=0.02)
    assert walk > attn.padded_flops / (1e15 * 0.5)
