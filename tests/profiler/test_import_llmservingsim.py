"""`batchsim profile --import llmservingsim`: step times composed from hand-written tables (worked
out on paper below), TP all-reduce, MoE experts, bad input, and the shared real folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from batchsim.cli import main
from batchsim.policies.base import StepShape, chunk_attn_pairs
from batchsim.profiler.imported.compose import Link, StepComposer
from batchsim.profiler.imported.dtypes import VariantDtypes
from batchsim.profiler.imported.llmservingsim import ImportConfig, import_profile, sample_shapes
from batchsim.profiler.imported.tables import read_meta
from batchsim.profiler.model_arch import read_config
from batchsim.sim.profile import load_profile

DATA = Path(__file__).resolve().parents[1] / "data" / "llmservingsim"
TINY = DATA / "perf" / "TINYGPU" / "org" / "tiny" / "bf16"
TINY_MOE = DATA / "perf" / "TINYGPU" / "org" / "tiny-moe" / "bf16"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "llmservingsim"
US = 1e-6


def composer(folder: Path, config: str, tp: int = 1, spread: float = 1.0,
             link: Link | None = None) -> StepComposer:
    return StepComposer(folder, read_meta(folder), read_config(DATA / "configs" / config), tp,
                        link or Link(0.016e9, 1e-6), 2, spread)


def test_prefill_step_is_the_sum_worked_on_paper() -> None:
    """One 16-token prompt, 2 layers: 18 dense op-instances at d(16) = 1 + 15/32 * 2 = 1.9375 us
    (2 once, layernorm twice and 6 more per layer), lm_head 10 + sampler 5, attention 4 us per
    layer: 34.875 + 15 + 8 = 57.875 us."""
    c = composer(TINY, "tiny.json")
    shape = StepShape(1, 16, 0, chunk_attn_pairs(0, 16), 0)
    parts = c.breakdown(shape)
    assert parts["once"] + parts["layers"] == pytest.approx(18 * 1.9375 * US)
    assert parts["per_sequence"] == pytest.approx(15 * US)
    assert parts["attention"] == pytest.approx(8 * US)
    assert c.compose(shape) == pytest.approx(57.875 * US)


def test_decode_skew_correction_worked_on_paper() -> None:
    """Two decodes of mean context 24, spread 1 (contexts 0..48): t(mean) = 3 + 8/16 * 2 = 4 us,
    t(max = 48) extrapolates 5 + 2/16 * 16 = 7 us, pooled alpha 0.5: 5.5 us per layer. Dense
    18 * d(2) = 19.125, lm_head 12 + sampler 5: 47.125 us. Without spread: 44.125 us."""
    shape = StepShape(2, 0, 2, 0, 48)
    assert composer(TINY, "tiny.json").compose(shape) == pytest.approx(47.125 * US)
    assert composer(TINY, "tiny.json", spread=0.0).compose(shape) == pytest.approx(44.125 * US)


def test_skew_bucket_lookup() -> None:
    """With bucket lookup, two decodes at skew rate 0.5 and longest context 48 fall in the one
    written bucket (pc 0, n<=2, sr<=50%, kvB>32, kp=0): alpha 0.25; elsewhere alpha_default."""
    c = composer(TINY, "tiny.json")
    assert c.skew.alpha(0, 2, 0.5, 48, 0) == 0.25
    assert c.skew.alpha(0, 4, 0.5, 48, 0) == 0.5
    c.skew_buckets = True
    assert c.attention(0, 0, 2, 24, 0, 48) == pytest.approx((4 + 0.25 * 3) * US)


def test_tp2_adds_two_ring_allreduces_per_layer() -> None:
    """At tp 2 (same tables here), 16 tokens * 8 hidden * 2 bytes = 256 B: ring time
    2 * 1/2 * 256 / 16e6 = 16 us + 2 hops * 1 us = 18 us, twice per layer, 2 layers: +72 us."""
    shape = StepShape(1, 16, 0, chunk_attn_pairs(0, 16), 0)
    t1 = composer(TINY, "tiny.json", tp=1).compose(shape)
    t2 = composer(TINY, "tiny.json", tp=2).compose(shape)
    assert t2 - t1 == pytest.approx(72 * US)


def test_moe_layers_use_expected_distinct_experts() -> None:
    """Two decodes through 4 experts, top 2: E(2) = 4 * (1 - 0.5^2) = 3 experts; the expert table
    at 2 tokens gives 12 us (2 experts) and 20 us (4): 16 us per layer, 2 layers. Dense 14 * d(2)
    = 14.875, lm_head + sampler 17, attention 4 * 2 = 8 (no spread): 71.875 us. At tp 2 tp1's
    expert table is divided by 2 (experts sharded), plus the all-reduces."""
    c = composer(TINY_MOE, "tiny-moe.json", spread=0.0)
    assert c.config.expected_active_experts(2) == pytest.approx(3.0)
    shape = StepShape(2, 0, 2, 0, 48)
    assert c.breakdown(shape)["moe"] == pytest.approx(32 * US)
    assert c.compose(shape) == pytest.approx(71.875 * US)
    c2 = composer(TINY_MOE, "tiny-moe.json", tp=2, spread=0.0)
    assert c2.breakdown(shape)["moe"] == pytest.approx(16 * US)
    # 2 tokens * 16 B = 32 B: 2 us + 2 us per all-reduce, 4 of them
    assert c2.breakdown(shape)["allreduce"] == pytest.approx(16 * US)


def test_nested_interpolation_and_monotone_extrapolation() -> None:
    """Between table rows the composition is linear along each axis; beyond the last row it
    continues the last segment and never decreases."""
    c = composer(TINY, "tiny.json", spread=0.0)
    assert c.attention(24, 0, 0, 0, 0, 0) == pytest.approx(6 * US)  # halfway 16 -> 32 tokens
    assert c.attention(8, 0, 0, 0, 0, 0) == pytest.approx(4 * US)  # below the grid: clamped
    assert c.attention(64, 0, 0, 0, 0, 0) == pytest.approx(16 * US)  # continues +4 per 16
    times = [c.compose(StepShape(b, 0, b, 0, b * 100)) for b in (1, 2, 4, 8, 16, 64)]
    assert times == sorted(times)


def run_import(tmp_path: Path, folder: Path, config: str, *extra: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "p.json"
    assert main(["profile", "--import", "llmservingsim", str(folder), "--model",
                 str(DATA / "configs" / config), "--gpu-memory-gb", "4", "--out", str(out),
                 "--quiet", *extra]) == 0
    return out


@pytest.mark.parametrize(("folder", "config"), [(TINY, "tiny.json"), (TINY_MOE, "tiny-moe.json")])
def test_imported_profile_loads_and_reproduces_composed_times(
        tmp_path: Path, folder: Path, config: str) -> None:
    """The written profile loads as any other, says it is imported, and its models reproduce the
    composition within 2% on held-out shapes (and exactly at its raw points' grid knots)."""
    out = run_import(tmp_path, folder, config, "--tp", "2")
    profile = load_profile(out)
    doc = json.loads(out.read_text())
    assert profile.source == "imported" and doc["fingerprint"]["tensor_parallel_size"] == 2
    assert set(doc["fingerprint"]["imported"]["tables_sha256"]) >= {"tp2/dense.csv",
                                                                  "tp2/attention.csv"}
    assert "GB/s" in doc["assumptions"]["tp_allreduce"]
    c = composer(folder, config, tp=2, link=Link(25e9, 5e-6))
    rng = np.random.default_rng(7)
    limits = {"max_tokens": 33, "max_decodes": 4, "max_kv": 32}
    for phase in ("prefill", "decode", "mixed"):
        shapes = sample_shapes(phase, rng, 200, limits)
        truth = np.array([c.compose(s) for s in shapes])
        pred = np.array([profile.cost_model("packed", phase).predict(s) for s in shapes])
        assert np.mean(np.abs(pred - truth) / truth) < 0.02, phase
        assert doc["cost_models"][f"packed.{phase}"]["cv"]["mape"] < 0.02


def test_simulate_runs_on_an_imported_profile(tmp_path: Path) -> None:
    """simulate, unchanged, runs a continuous-batching workload on the imported profile."""
    out = run_import(tmp_path, TINY, "tiny.json")
    run = tmp_path / "run"
    assert main(["simulate", "--profile", str(out), "--policy", "continuous", "--num-requests",
                 "30", "--request-rate", "50", "--input-len", "20", "--output-len", "8",
                 "--out", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["completed"] == 30 and metrics["profile_source"] == "imported"


def bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: Path, config: Path,
        *extra: str) -> str:
    out = tmp_path / "bad.json"
    code = main(["profile", "--import", "llmservingsim", str(folder), "--model", str(config),
                 "--gpu-memory-gb", "1", "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert not out.exists()
    return err


def copy_tiny(tmp_path: Path) -> Path:
    folder = tmp_path / "perf" / "HW" / "org" / "tiny" / "bf16"
    shutil.copytree(TINY, folder)
    return folder


def test_missing_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_tiny(tmp_path)
    (folder / "tp1" / "attention.csv").unlink()
    err = bad(tmp_path, capsys, folder, DATA / "configs" / "tiny.json")
    assert "tp1/attention.csv" in err and "missing table" in err


@pytest.mark.parametrize(("row", "problem"), [("16,0,0,0,nan", "must be finite"),
                                              ("16,0,0", "malformed row"),
                                              ("16,x,0,0,4", "not a number")])
def test_bad_row_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     row: str, problem: str) -> None:
    folder = copy_tiny(tmp_path)
    with (folder / "tp1" / "attention.csv").open("a") as f:
        f.write(row + "\n")
    err = bad(tmp_path, capsys, folder, DATA / "configs" / "tiny.json")
    assert "attention.csv:20:" in err and problem in err


def test_config_of_another_architecture(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    err = bad(tmp_path, capsys, TINY, DATA / "configs" / "tiny-moe.json")
    assert "qwen3_moe" in err and "meta.yaml" in err


def test_config_of_another_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((DATA / "configs" / "tiny.json").read_text())
    config["num_attention_heads"] = 8
    path = tmp_path / "big.json"
    path.write_text(json.dumps(config))
    assert "do not match the profiled model" in bad(tmp_path, capsys, TINY, path)


def test_missing_tp_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = bad(tmp_path, capsys, TINY, DATA / "configs" / "tiny.json", "--tp", "4")
    assert "tp4" in err and "missing" in err


def test_unknown_gpu_memory_asks_for_the_flag(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "--import", "llmservingsim", str(TINY), "--model",
                 str(DATA / "configs" / "tiny.json"), "--out", str(out)]) == 2
    assert "--gpu-memory-gb" in capsys.readouterr().err and not out.exists()


# -- the shared real folders (skipped without ../shared) ------------------------------------------

REAL = [("meta-llama/Llama-3.1-8B", 1), ("meta-llama/Llama-3.1-8B", 2),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", 1), ("Qwen/Qwen3-30B-A3B-Instruct-2507", 2)]


def real(model: str) -> tuple[Path, Path]:
    if not SHARED.is_dir():
        pytest.skip(f"shared LLMServingSim data not found at {SHARED}")
    return (SHARED / "profiler" / "perf" / "RTXPRO6000" / model / "bf16",
            SHARED / "configs" / "model" / f"{model}.json")


def rows(path: Path) -> dict[tuple[str, ...], float]:
    lines = path.read_text().splitlines()
    return {tuple(line.split(",")[:-1]): float(line.split(",")[-1]) for line in lines[1:]}


@pytest.mark.parametrize(("model", "tp"), REAL)
def test_real_grid_point_equals_table_rows(model: str, tp: int) -> None:
    """At table grid points (no spread), a step is the sum of the rows read directly."""
    folder, config_path = real(model)
    cfg = read_config(config_path)
    c = StepComposer(folder, read_meta(folder), cfg, tp, Link(25e9, 5e-6), 2, 0.0)
    dense = rows(folder / f"tp{tp}" / "dense.csv")
    per_seq = rows(folder / f"tp{tp}" / "per_sequence.csv")
    attn = rows(folder / f"tp{tp}" / "attention.csv")
    layers = cfg.num_layers
    for shape, tokens, seqs, key in [
            (StepShape(1, 512, 0, chunk_attn_pairs(1024, 512), 0), 512, 1, ("512", "1024", "0",
                                                                              "0")),
            (StepShape(32, 0, 32, 0, 32 * 2048), 32, 32, ("0", "0", "32", "2048")),
            (StepShape(3, 54, 2, chunk_attn_pairs(0, 54), 2 * 768), 56, 3,
             ("54", "0", "2", "768"))]:
        ops = {layer for layer, _ in dense}
        want = sum(dense[(op, str(tokens))] * (1 if op in ("embedding", "final_layernorm")
                                                else 2 * layers if op == "layernorm" else layers)
                   for op in ops if (op, str(tokens)) in dense)
        assert all((op, str(tokens)) in dense for op in ops)
        want += per_seq[("lm_head", str(seqs))] + per_seq[("sampler", str(seqs))]
        want += attn[key] * layers
        parts = c.breakdown(shape)
        got = parts["once"] + parts["layers"] + parts["per_sequence"] + parts["attention"]
        assert got == pytest.approx(want * US, rel=1e-9)


@pytest.mark.parametrize(("model", "tp"), REAL)
def test_real_import_fits_within_two_percent(model: str, tp: int) -> None:
    """Both shared models at tp 1 and 2: the chosen models reproduce the composition within 2%
    MAPE on held-out shapes, per phase."""
    folder, config = real(model)
    doc, errors = import_profile(ImportConfig(folder, config, tp=tp, num_points=300,
                                              num_heldout=200))
    assert doc["memory"]["kv_bytes_per_token"] > 0
    for phase, e in errors.items():
        assert e["mape"] < 0.02, (phase, e)


def test_variant_names_give_weight_kv_and_activation_bytes() -> None:
    assert VariantDtypes.parse("bf16") == VariantDtypes(2, 2, 2)
    assert VariantDtypes.parse("fp8") == VariantDtypes(1, 1, 2)
    assert VariantDtypes.parse("bf16-kvfp8") == VariantDtypes(2, 1, 2)
    with pytest.raises(ValueError, match="unknown dtype"):
        VariantDtypes.parse("q4")


def test_memory_facts_per_gpu(tmp_path: Path) -> None:
    """Tiny model: 2 layers * 2 (K, V) * 1 KV head * 4 dims * 2 bytes = 32 B per token at tp 1
    and 2 (one KV head is replicated, not split); weights halve at tp 2."""
    docs = [json.loads(run_import(tmp_path / f"tp{tp}", TINY, "tiny.json", "--tp",
                                  str(tp)).read_text()) for tp in (1, 2)]
    assert [d["memory"]["kv_bytes_per_token"] for d in docs] == [32, 32]
    assert docs[1]["memory"]["weight_bytes"] == docs[0]["memory"]["weight_bytes"] // 2
    assert docs[0]["memory"]["total_bytes"] == 4 * 2**30
    assert "--gpu-memory-gb 4" in docs[0]["memory"]["source"]
