"""--engine-config on the meta.json of LLMServingSim's bench runner (bench/core/runner.py and
recorder.py): the kv_cache section as it reads vLLM's CacheConfig, resolved_config, hardware
and the newer engine_kwargs, read without spurious warnings; the pool from kv_cache or else
resolved_config.cache_config.num_gpu_blocks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from batchsim.sim.engine_config import read_engine_config
from batchsim.sim.errors import UsageError
from tests.sim.test_engine_config import NAMES

ENGINE = {"model": "meta-llama/Llama-3.1-8B", "tensor_parallel_size": 1,
          "data_parallel_size": 1, "enable_expert_parallel": False, "max_num_seqs": 128,
          "max_num_batched_tokens": 2048, "disable_custom_all_reduce": False,
          "max_model_len": None, "dtype": "bfloat16", "kv_cache_dtype": "auto",
          "kv_cache_memory_bytes": None, "seed": 42, "load_format": "auto",
          "skip_tokenizer_init": False}
KV = {"num_gpu_blocks": 30000, "num_cpu_blocks": None, "block_size": 16,
      "gpu_memory_utilization": 0.9, "enable_prefix_caching": False,
      "kv_cache_memory_bytes": None, "num_kv_tokens": 480000}


def _write(tmp_path: Path, **data: object) -> Path:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"schema_version": 1, "vllm_version": "0.19.0",
                                "num_requests": 300, "tick_seconds": 1.0, **data}))
    return path


def test_the_runner_s_sections_map_and_stay_quiet(tmp_path, caplog):
    meta = _write(tmp_path, engine_kwargs=ENGINE, kv_cache=KV,
                  hardware={"device_name": "X", "device_total_memory_bytes": 1},
                  resolved_config={"cache_config": {"num_gpu_blocks": 30000}})
    with caplog.at_level(logging.WARNING):
        engine = read_engine_config(meta, NAMES)
    assert caplog.records == []
    assert engine.knobs["num_gpu_blocks_override"] == 30000
    assert engine.sources["num_gpu_blocks_override"] == "kv_cache.num_gpu_blocks"
    assert engine.knobs["block_size"] == 16 and engine.knobs["gpu_memory_utilization"] == 0.9


def test_resolved_config_gives_the_pool_when_kv_cache_is_empty(tmp_path, caplog):
    meta = _write(tmp_path, engine_kwargs=ENGINE, kv_cache={},
                  resolved_config={"cache_config": {"num_gpu_blocks": 4242, "block_size": 16}})
    with caplog.at_level(logging.WARNING):
        engine = read_engine_config(meta, NAMES)
    assert engine.knobs["num_gpu_blocks_override"] == 4242
    assert engine.sources["num_gpu_blocks_override"] == \
        "resolved_config.cache_config.num_gpu_blocks"
    assert caplog.records == []


def test_settings_that_change_the_run_warn(tmp_path, caplog):
    meta = _write(tmp_path, engine_kwargs={**ENGINE, "kv_cache_memory_bytes": 10**10,
                                           "disable_custom_all_reduce": True,
                                           "load_format": "dummy"},
                  kv_cache={**KV, "enable_prefix_caching": True})
    with caplog.at_level(logging.WARNING):
        read_engine_config(meta, NAMES)
    warned = " | ".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 4, warned
    for key in ("kv_cache_memory_bytes", "disable_custom_all_reduce", "load_format",
                "kv_cache.enable_prefix_caching"):
        assert key in warned


@pytest.mark.parametrize(("kv", "resolved", "message"), [
    ({**KV, "num_kv_tokens": 480001}, None, "num_kv_tokens = 480001 is not num_gpu_blocks"),
    ({**KV, "num_kv_tokens": -1}, None, "num_kv_tokens must be a positive integer"),
    (KV, {"cache_config": {"num_gpu_blocks": 29999}}, "resolved_config.cache_config"
                                                      ".num_gpu_blocks = 29999 contradicts"),
    ({}, {"cache_config": {"num_gpu_blocks": 0}}, "num_gpu_blocks must be a positive integer"),
])
def test_inconsistent_pools_are_one_error_line(tmp_path, kv, resolved, message):
    extra = {} if resolved is None else {"resolved_config": resolved}
    meta = _write(tmp_path, engine_kwargs=ENGINE, kv_cache=kv, **extra)
    with pytest.raises(UsageError, match=message):
        read_engine_config(meta, NAMES)
