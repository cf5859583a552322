"""--engine-config: a vLLM engine's settings become continuous knobs (--set wins), one warning line
per setting batchsim does not model, and one error line (exit 2, nothing written) for values
that are unknown or cannot hold."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from batchsim.cli import main
from batchsim.policies.continuous import ContinuousConfig
from batchsim.sim.engine_config import read_engine_config
from batchsim.sim.run import RunSpec, prepare

TRACE = Path(__file__).resolve().parent.parent / "data" / "traces" / "vllm_log.jsonl"
NAMES = {"max_num_seqs", "max_num_batched_tokens", "block_size", "num_gpu_blocks_override",
         "gpu_memory_utilization", "enable_chunked_prefill", "long_prefill_token_threshold",
         "policy"}


def _meta(tmp_path: Path, engine: dict | None = None, kv: dict | None = None,
          **top: object) -> Path:
    path = tmp_path / "meta.json"
    data: dict = {"schema_version": 1, "vllm_version": "0.19.0", **top}
    if engine is not None:
        data["engine_kwargs"] = engine
    if kv is not None:
        data["kv_cache"] = kv
    path.write_text(json.dumps(data))
    return path


def test_settings_map_onto_knobs_and_unmodelled_ones_warn_once_each(tmp_path, caplog):
    meta = _meta(tmp_path, {"max_num_seqs": 8, "max_num_batched_tokens": 64, "block_size": 32,
                            "gpu_memory_utilization": 0.5, "enable_prefix_caching": True,
                            "data_parallel_size": 2, "seed": 42, "model": "x",
                            "kv_cache_dtype": "auto", "max_model_len": None,
                            "some_new_arg": [1, 2]},
                 {"num_gpu_blocks": 100, "swap_space": 4}, dataset_path="d.jsonl",
                 started_at="t")
    with caplog.at_level(logging.WARNING):
        engine = read_engine_config(meta, NAMES)
    assert engine.knobs == {"max_num_seqs": 8, "max_num_batched_tokens": 64, "block_size": 32,
                            "gpu_memory_utilization": 0.5, "num_gpu_blocks_override": 100}
    assert engine.sources["num_gpu_blocks_override"] == "kv_cache.num_gpu_blocks"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 4  # prefix caching, data parallel, the unknown argument, swap_space
    assert any("kv_cache.swap_space = 4: not read" in w for w in warned)
    assert any("enable_prefix_caching = True" in w for w in warned)
    assert any("data_parallel_size = 2" in w for w in warned)
    assert any("some_new_arg" in w for w in warned)
    assert engine.vllm_version == "0.19.0" and engine.max_model_len is None


def test_set_wins_and_the_run_records_where_each_knob_came_from(tmp_path, capsys):
    meta = _meta(tmp_path, {"max_num_seqs": 8, "max_num_batched_tokens": 64},
                 {"num_gpu_blocks": 100, "block_size": 32})
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(TRACE),
                 "--engine-config", str(meta), "--set", "max_num_seqs=4", "--out", str(out),
                 "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["knobs"]["max_num_seqs"] == 4 and config["knobs"]["block_size"] == 32
    assert config["knobs"]["max_num_batched_tokens"] == 64
    # the pool vLLM sized, less its null block, not the memory-derived one
    assert config["kv_capacity_blocks"] == 99
    sources = config["engine_config"]["knob_sources"]
    assert sources["max_num_seqs"] == "--set"
    assert sources["num_gpu_blocks_override"] == "engine config kv_cache.num_gpu_blocks"
    assert sources["policy"] == "default"
    assert config["engine_config"]["overridden_by_set"] == ["max_num_seqs"]


def test_num_gpu_blocks_override_replaces_the_memory_derived_pool():
    spec = RunSpec(policy="continuous", knobs={"num_gpu_blocks_override": "37"}, trace=str(TRACE))
    assert prepare(spec).policy.kv_capacity_blocks == 36  # one is vLLM's null block
    derived = prepare(RunSpec(policy="continuous", trace=str(TRACE))).policy.kv_capacity_blocks
    assert derived > 37
    with pytest.raises(ValueError, match="num_gpu_blocks_override must be at least 2"):
        ContinuousConfig(num_gpu_blocks_override=0)


@pytest.mark.parametrize(("engine", "kv", "message"), [
    ({"max_num_seqs": -1}, None, "engine_kwargs.max_num_seqs must be a positive integer, got -1"),
    ({"max_num_seqs": "many"}, None, "max_num_seqs must be a positive integer, got 'many'"),
    ({"gpu_memory_utilization": 1.5}, None, "gpu_memory_utilization must be a fraction in (0, 1]"),
    ({"enable_chunked_prefill": "yes"}, None, "enable_chunked_prefill must be true or false"),
    ({"dtype": "int3"}, None, "unknown dtype 'int3'"),
    ({"tensor_parallel_size": 0}, None, "tensor_parallel_size must be a positive integer"),
    ({"block_size": 16}, {"block_size": 32}, "kv_cache.block_size = 32 contradicts "
                                             "engine_kwargs.block_size = 16"),
    ({"max_model_len": 10**9}, None, "max_model_len 1000000000 exceeds the model's context"),
    ({"max_num_seqs": 256, "max_num_batched_tokens": 128}, None,
     "max_num_batched_tokens (128) is smaller than max_num_seqs (256)"),
    ({"max_model_len": 150}, None, "exceeds the engine's context (150)"),
])
def test_impossible_values_are_one_line_and_exit_2(tmp_path, capsys, engine, kv, message):
    meta = _meta(tmp_path, engine, kv)
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(TRACE),
                 "--engine-config", str(meta), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "an engine config is a JSON object with engine_kwargs"),
    ("{\"model\": \"x\"}", "an engine config is a JSON object with engine_kwargs"),
    ("{not json", "not a JSON engine config"),
    ("{\"engine_kwargs\": [1]}", "engine_kwargs must be a JSON object"),
])
def test_a_file_that_is_not_an_engine_config(tmp_path, capsys, text, message):
    meta = tmp_path / "meta.json"
    meta.write_text(text)
    assert main(["simulate", "--policy", "continuous", "--trace", str(TRACE),
                 "--engine-config", str(meta), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "meta.json" in err[0] and message in err[0]


def test_a_policy_without_vllm_knobs_is_told_so(tmp_path, capsys):
    meta = _meta(tmp_path, {"max_num_seqs": 8})
    assert main(["simulate", "--policy", "static", "--trace", str(TRACE),
                 "--engine-config", str(meta), "--out", str(tmp_path / "run")]) == 2
    assert "policy static has no knob max_num_seqs" in capsys.readouterr().err


def test_sweep_applies_and_records_the_engine_config(tmp_path, capsys):
    meta = _meta(tmp_path, {"max_num_seqs": 8, "max_num_batched_tokens": 512},
                 {"num_gpu_blocks": 64})
    out = tmp_path / "sweep"
    assert main(["sweep", "--policy", "continuous", "--vary", "max_num_seqs=2,4",
                 "--request-rate", "5", "--num-requests", "20", "--input-len", "64",
                 "--output-len", "8", "--engine-config", str(meta), "--workers", "1",
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["engine_config"]["knobs"]["num_gpu_blocks_override"]["value"] == 64
    assert doc["engine_config"]["knobs"]["max_num_seqs"]["value"] == 8


def test_validate_merges_the_engine_config_under_set(tmp_path):
    from batchsim.cli import build_parser
    from batchsim.validate_cmd import spec_from_args

    meta = _meta(tmp_path, {"max_num_seqs": 8, "max_num_batched_tokens": 512})
    args = build_parser().parse_args([
        "validate", "--profile", "profiles/tiny-qwen2-cpu.json", "--policy", "continuous",
        "--engine-config", str(meta), "--set", "max_num_seqs=2"])
    spec = spec_from_args(args)
    knobs = dict(spec.knobs)
    assert knobs["max_num_seqs"] == "2" and knobs["max_num_batched_tokens"] == 512


def test_the_serving_vllm_version_is_passed_to_a_policy_that_matches_versions(tmp_path):
    """A policy with a vllm_version knob gets the release that served the run."""
    meta = _meta(tmp_path, {"max_num_seqs": 8})
    assert "vllm_version" not in read_engine_config(meta, NAMES).knobs
    engine = read_engine_config(meta, NAMES | {"vllm_version"})
    assert engine.knobs["vllm_version"] == "0.19.0"
    assert engine.sources["vllm_version"] == "vllm_version"
