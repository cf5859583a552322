"""A vLLM engine's settings (`--engine-config META.json`) as batchsim knobs.

The file is the `meta.json` LLMServingSim writes beside a recorded vLLM run: `engine_kwargs` (the
arguments the engine was built with, vLLM's names) and optionally `kv_cache` (what the engine
sized at start-up: `num_gpu_blocks`, `num_cpu_blocks`, `block_size`, `num_kv_tokens`,
`gpu_memory_utilization`, `enable_prefix_caching`, `kv_cache_memory_bytes`, as its bench runner
reads them off vLLM's CacheConfig), `resolved_config` (vLLM's whole resolved VllmConfig, one
object per sub-config: `cache_config.num_gpu_blocks` is read when `kv_cache` lacks it) and
`hardware`, plus metadata (`vllm_version`, dataset, times). Its `engine_start.json` (the same
sections, written at boot) reads the same way.

Each setting is either mapped onto a knob of the continuous policy (the knobs carry vLLM's
names), checked against the run's other inputs, neutral to timing (model name, seed), or not
modelled: one warning line each. `--set` wins over the file; the run records which value came
from where (`provenance`). A value of the wrong type or out of range is a ValueError naming the
file and the key, before anything runs. Keys batchsim does not know are not modelled, so they
warn rather than fail: a vLLM version adds arguments faster than we can list them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from batchsim.sim.errors import UsageError

log = logging.getLogger(__name__)

# vLLM argument -> knob of the continuous policy (same name unless listed) and a value check
_POSITIVE_INT = "a positive integer"
_KNOBS: dict[str, tuple[str, str]] = {
    "max_num_seqs": ("max_num_seqs", _POSITIVE_INT),
    "max_num_batched_tokens": ("max_num_batched_tokens", _POSITIVE_INT),
    "block_size": ("block_size", _POSITIVE_INT),
    "num_gpu_blocks": ("num_gpu_blocks_override", _POSITIVE_INT),  # kv_cache: the pool sized
    "num_blocks": ("num_gpu_blocks_override", _POSITIVE_INT),  # vLLM V1's KVCacheConfig name
    "num_gpu_blocks_override": ("num_gpu_blocks_override", _POSITIVE_INT),
    "gpu_memory_utilization": ("gpu_memory_utilization", "a fraction in (0, 1]"),
    "enable_chunked_prefill": ("enable_chunked_prefill", "true or false"),
    "long_prefill_token_threshold": ("long_prefill_token_threshold", "an integer >= 0"),
    "scheduling_policy": ("policy", "'fcfs' or 'priority'"),
}
# settings checked against the run rather than mapped (see EngineConfig)
_CHECKED = ("max_model_len", "tensor_parallel_size", "dtype")
# off (the value in the tuple) = what batchsim models; anything else warns
_OFF_BY_DEFAULT: dict[str, tuple[Any, ...]] = {
    "enable_prefix_caching": (False, None),
    "data_parallel_size": (1, None),
    "pipeline_parallel_size": (1, None),
    "enable_expert_parallel": (False, None),
    "kv_cache_dtype": ("auto", None),
    "cache_dtype": ("auto", None),  # vLLM's CacheConfig name of kv_cache_dtype
    "speculative_config": (None, {}),
    "quantization": (None,),
    "cpu_offload_gb": (0, None),
    "kv_cache_memory_bytes": (None,),  # an explicit KV budget; num_gpu_blocks says its result
    "load_format": ("auto", None),
    "disable_custom_all_reduce": (False, None),
}
_NEUTRAL = {"model", "tokenizer", "served_model_name", "seed", "trust_remote_code", "revision",
            "download_dir", "disable_log_stats", "disable_log_requests", "enable_log_requests",
            "skip_tokenizer_init",
            "num_cpu_blocks",  # kv_cache: CPU swap blocks; V1 preempts by recompute, never swaps
            "num_kv_tokens"}  # kv_cache: num_gpu_blocks * block_size, checked against them
_METADATA = {"schema_version", "model", "vllm_version", "dataset_path", "dataset_hash",
             "num_requests", "started_at", "finished_at", "tick_seconds", "hardware",
             "resolved_config", "resolve_only", "status"}
_DTYPES = {"auto": None, "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
           "half": "float16", "fp16": "float16", "float32": "float32", "float": "float32"}
_WHY_NOT = {
    "enable_prefix_caching": "no policy models prefix caching: every prompt is prefilled in full",
    "data_parallel_size": "one engine replica is simulated",
    "pipeline_parallel_size": "pipeline parallelism is not modelled",
    "enable_expert_parallel": "expert parallelism is not modelled",
    "kv_cache_dtype": "KV bytes per token come from the profile (the model's dtype); pass "
                      "num_gpu_blocks_override for the real pool size",
    "cache_dtype": "KV bytes per token come from the profile (the model's dtype); pass "
                   "num_gpu_blocks_override for the real pool size",
    "enforce_eager": "the profile's step times decide (eager or CUDA graphs is the profile's)",
    "load_format": "step times are the profile's; with dummy weights a MoE gate routes "
                   "differently from the real one",
    "disable_custom_all_reduce": "TP all-reduces are the profile's ring model (the import's "
                                 "--tp-link-gbps/--tp-link-latency-us)",
    "kv_cache_memory_bytes": "the KV pool is derived from memory unless kv_cache.num_gpu_blocks "
                             "(what this budget gave) is in the file",
}


@dataclass(frozen=True)
class EngineConfig:
    """What an engine-config file says, checked; `knobs` in vLLM's meaning, by batchsim name."""

    path: str
    knobs: dict[str, Any]  # continuous knob -> value from the file
    sources: dict[str, str]  # continuous knob -> where in the file, e.g. engine_kwargs.max_num_seqs
    max_model_len: int | None = None  # the engine's context limit; None = the model's
    tensor_parallel_size: int = 1
    dtype: str | None = None  # normalised (bfloat16, float16, float32); None = auto
    vllm_version: str | None = None
    model: str | None = None
    not_modelled: list[str] = field(default_factory=list)  # one line per ignored setting

    def knobs_for(self, policy_config: type, explicit: Mapping[str, Any],
                  policy: str = "this policy") -> dict[str, Any]:
        """The file's knobs under the explicit ones (--set wins), for a policy config class.

        A setting the policy has no knob for is an error: the file describes a vLLM engine.
        """
        names = {f.name for f in fields(policy_config)}
        missing = sorted(k for k in self.knobs if k not in names)
        if missing:
            raise UsageError(f"{self.path}: --engine-config describes a vLLM engine, and "
                             f"{policy} has no knob {', '.join(missing)}: use --policy continuous")
        return {**self.knobs, **explicit}

    def provenance(self, explicit: Mapping[str, Any], knob_names: Collection[str] = ()
                   ) -> dict[str, Any]:
        """For config.json: the file, each knob's source, what --set overrode, what was ignored."""
        def source(knob: str) -> str:
            if knob in explicit:
                return "--set"
            return f"engine config {self.sources[knob]}" if knob in self.knobs else "default"

        return {
            "path": self.path, "vllm_version": self.vllm_version, "model": self.model,
            "knobs": {k: {"value": v, "from": self.sources[k]} for k, v in self.knobs.items()},
            "knob_sources": {k: source(k) for k in knob_names},
            "overridden_by_set": sorted(k for k in self.knobs if k in explicit),
            "max_model_len": self.max_model_len,
            "tensor_parallel_size": self.tensor_parallel_size, "dtype": self.dtype,
            "not_modelled": list(self.not_modelled),
        }

    def check_profile(self, profile_summary: Mapping[str, Any], fingerprint: Mapping[str, Any],
                      profile_max_model_len: int) -> list[str]:
        """The engine's TP, dtype and context against the profile: a mismatch that cannot hold
        is a ValueError; one the profile cannot confirm is returned as a warning line."""
        warnings = []
        tp = fingerprint.get("tensor_parallel_size", fingerprint.get("tp"))
        if tp is not None and int(tp) != self.tensor_parallel_size:
            raise UsageError(f"{self.path}: tensor_parallel_size {self.tensor_parallel_size}, "
                             f"but the profile was made for TP {tp}: import the tp"
                             f"{self.tensor_parallel_size} tables")
        if tp is None and self.tensor_parallel_size > 1:
            warnings.append(f"{self.path}: tensor_parallel_size {self.tensor_parallel_size}: the "
                            "profile does not state its TP size; its step times are taken as "
                            f"TP {self.tensor_parallel_size}'s")
        profiled = str(profile_summary.get("model") or "")
        if self.model and profiled and not _same_model(self.model, profiled):
            warnings.append(f"{self.path}: the engine served {self.model}, the profile is of "
                            f"{profiled}: step times are the profile's")
        have = profile_summary.get("dtype")
        if self.dtype is not None and have is not None and str(have) != self.dtype:
            warnings.append(f"{self.path}: dtype {self.dtype}, but the profile was measured in "
                            f"{have}: step times are the profile's")
        if self.max_model_len is not None and self.max_model_len > profile_max_model_len:
            raise UsageError(f"{self.path}: max_model_len {self.max_model_len} exceeds the "
                             f"model's context ({profile_max_model_len})")
        return warnings


def read_engine_config(path: str | Path, knob_names: Collection[str] = ()) -> EngineConfig:
    """Read and check META.json; log one warning per setting batchsim does not model.

    knob_names: the policy's knobs; an engine argument spelled like one of them (vLLM's names)
    is mapped onto it as written, and the policy's config checks the value.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except OSError as e:
        raise UsageError(f"{file}: cannot read engine config: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{file}: not a JSON engine config ({e})") from None
    if not isinstance(data, dict) or not ({"engine_kwargs", "kv_cache"} & set(data)):
        raise UsageError(f"{file}: an engine config is a JSON object with engine_kwargs "
                         "(vLLM's engine arguments) and/or kv_cache")
    knobs: dict[str, Any] = {}
    sources: dict[str, str] = {}
    checked: dict[str, Any] = {}
    ignored: list[str] = []
    for section in ("engine_kwargs", "kv_cache"):
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise UsageError(f"{file}: {section} must be a JSON object")
        for key, value in values.items():
            where = f"{section}.{key}"
            if key in _KNOBS:
                if value is None:
                    continue  # null = vLLM's default, which is batchsim's default
                knob = _KNOBS[key][0]
                value = _checked(file, where, key, value)
                if knob in knobs and knobs[knob] != value:
                    raise UsageError(f"{file}: {where} = {value!r} contradicts "
                                     f"{sources[knob]} = {knobs[knob]!r}")
                knobs[knob], sources[knob] = value, where
            elif key in _CHECKED:
                checked[key] = _checked_run_setting(file, where, key, value)
            elif key in _NEUTRAL:
                continue
            elif key in knob_names and section == "engine_kwargs":
                if value is not None:
                    knobs[key], sources[key] = value, where
            elif key in _OFF_BY_DEFAULT:
                if value not in _OFF_BY_DEFAULT[key]:
                    ignored.append(f"{where} = {value!r}: {_WHY_NOT.get(key, 'not modelled')}")
            else:
                why = ("not read: the KV pool is derived from memory unless num_gpu_blocks is "
                       "given" if section == "kv_cache" else "not modelled by batchsim")
                ignored.append(f"{where} = {_short(value)}: {_WHY_NOT.get(key, why)}")
    _resolved_blocks(file, data, knobs, sources)
    _check_kv_tokens(file, data, knobs)
    for key in data:
        if key not in _METADATA and key not in ("engine_kwargs", "kv_cache"):
            ignored.append(f"{key}: not an engine setting batchsim knows; ignored")
    version = data.get("vllm_version")
    if version is not None and "vllm_version" in knob_names:
        # the release that served the run picks the policy's vLLM behaviours (under --set)
        knobs["vllm_version"], sources["vllm_version"] = str(version), "vllm_version"
    for line in ignored:
        log.warning("%s: %s", file, line)
    model = data.get("model")
    return EngineConfig(str(file), knobs, sources, checked.get("max_model_len"),
                        checked.get("tensor_parallel_size") or 1, checked.get("dtype"),
                        None if version is None else str(version),
                        None if model is None else str(model), ignored)


def _resolved_blocks(file: Path, data: Mapping[str, Any], knobs: dict[str, Any],
                     sources: dict[str, str]) -> None:
    """resolved_config.cache_config.num_gpu_blocks, when kv_cache did not give the pool (its
    collection can fail and leave kv_cache {} while resolved_config was read)."""
    resolved = data.get("resolved_config")
    cache = resolved.get("cache_config") if isinstance(resolved, Mapping) else None
    blocks = cache.get("num_gpu_blocks") if isinstance(cache, Mapping) else None
    if blocks is None:
        return
    where = "resolved_config.cache_config.num_gpu_blocks"
    value = _checked(file, where, "num_gpu_blocks", blocks)
    knob = "num_gpu_blocks_override"
    if knob not in knobs:
        knobs[knob], sources[knob] = value, where
    elif knobs[knob] != value and sources[knob].startswith("kv_cache"):
        raise UsageError(f"{file}: {where} = {value!r} contradicts {sources[knob]} = "
                         f"{knobs[knob]!r}")


def _check_kv_tokens(file: Path, data: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    """kv_cache.num_kv_tokens is num_gpu_blocks * block_size (null block included)."""
    kv = data.get("kv_cache")
    tokens = kv.get("num_kv_tokens") if isinstance(kv, Mapping) else None
    if tokens is None:
        return
    if not (_is_int(tokens) and tokens > 0):
        raise UsageError(f"{file}: kv_cache.num_kv_tokens must be a positive integer, got "
                         f"{tokens!r}")
    blocks, size = knobs.get("num_gpu_blocks_override"), knobs.get("block_size")
    if blocks is not None and size is not None and blocks * size != tokens:
        raise UsageError(f"{file}: kv_cache.num_kv_tokens = {tokens} is not num_gpu_blocks "
                         f"({blocks}) x block_size ({size})")


def _checked(file: Path, where: str, key: str, value: Any) -> Any:
    """A mapped setting's value, or a ValueError saying what it must be."""
    want = _KNOBS[key][1]
    ok: bool
    if want == _POSITIVE_INT:
        ok = _is_int(value) and value > 0
    elif want == "an integer >= 0":
        ok = _is_int(value) and value >= 0
    elif want == "true or false":
        ok = isinstance(value, bool)
    elif key == "gpu_memory_utilization":
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value) and 0 < value <= 1)
    else:  # scheduling_policy
        ok = value in ("fcfs", "priority")
    if not ok:
        raise UsageError(f"{file}: {where} must be {want}, got {value!r}")
    return value


def _checked_run_setting(file: Path, where: str, key: str, value: Any) -> Any:
    if key == "dtype":
        if value not in _DTYPES:
            raise UsageError(f"{file}: {where}: unknown dtype {value!r}; known: "
                             f"{', '.join(_DTYPES)}")
        return _DTYPES[value]
    if value is None and key == "max_model_len":
        return None  # the model's own context
    if not (_is_int(value) and value > 0):
        raise UsageError(f"{file}: {where} must be a positive integer, got {value!r}")
    return value


def _same_model(a: str, b: str) -> bool:
    """Hub ids, preset names or paths naming one model (meta-llama/Llama-3.1-8B ~ llama-3.1-8b)."""
    x, y = (Path(n.rstrip("/")).name.lower() for n in (a, b))
    return x == y or x in y or y in x


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
