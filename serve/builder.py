"""Build what `batchsim serve` runs: the policy, the real engines sized to it, the model facts.

With `--profile` the engine is rebuilt exactly as profiled (model, dtype, threads, device: the
checks of `batchsim validate`) and the policy sees the profile's memory facts, as in `simulate`;
with `--model` the policy sees the built engine's own facts. Either way the paged pool holds
what the policy may allocate, capped at `kv_cache_gb` when given (on CPU by default at 1 GiB,
the engine's own default): the policy is then told that smaller memory, so it never plans more
blocks than the pool has.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from batchsim.policies.base import Policy
from batchsim.policies.kv import MemoryFacts
from batchsim.policies.registry import get_policy, make_config
from batchsim.policies.static import PaddedBatchPolicy
from batchsim.profiler.real.plan_runner import PlanRunner
from batchsim.serve.frontend import FrontFacts

if TYPE_CHECKING:
    from batchsim.sim.profile import Profile

logger = logging.getLogger(__name__)

CPU_KV_CAP_BYTES = 1 << 30  # default pool cap on CPU (the paged engine's own default)


@dataclass(frozen=True)
class ServeSpec:
    policy: str
    knobs: dict[str, str]
    profile: str | None = None  # measured profile; or model
    model: str | None = None
    device: str | None = None  # default: the profile's device, else cpu
    dtype: str | None = None  # default: the profile's, else float32 on CPU / published on CUDA
    kv_cache_gb: float | None = None  # pool cap
    seed: int = 0  # random weights

    def __post_init__(self) -> None:
        if (self.profile is None) == (self.model is None) and self.profile is None:
            raise ValueError("give --profile P.json or --model NAME")
        if self.kv_cache_gb is not None and not self.kv_cache_gb > 0:
            raise ValueError(f"--kv-cache-gb must be positive, got {self.kv_cache_gb}")
        # checked here, before any engine process is started or torch imported
        if "cpu" in get_policy(self.policy).paths:
            raise ValueError(f"serve cannot run --policy {self.policy} yet: its CPU prefill path "
                             "needs a CPU engine and the KV hand-off inside the serving loop, "
                             "which are not built; serve continuous (simulate and validate run "
                             f"{self.policy})")
        make_config(self.policy, dict(self.knobs))  # a bad knob is one line, before the build


@dataclass
class Served:
    policy: Policy
    runner: PlanRunner
    facts: FrontFacts  # what the HTTP side needs (limits, tokenizer, what was built)
    eos_token_id: int | None
    paths: dict[Any, Any] | None = None  # the policy's execution paths (the profile's models)
    predict: Any = None  # Callable[[Plan], float]: a step's expected seconds, or None

    def loop_options(self) -> dict[str, Any]:
        """EngineLoop keyword arguments taken from what was built."""
        return {"paths": self.paths, "predict": self.predict}


def _memory_for_pool(memory: MemoryFacts, pool_tokens: int, util: float) -> MemoryFacts:
    """Memory facts under which the policy's KV capacity is pool_tokens (weights kept)."""
    total = math.ceil((memory.weight_bytes + memory.activation_reserve_bytes
                       + pool_tokens * memory.kv_bytes_per_token) / util)
    return replace(memory, total_bytes=total)


def _policy_util(config: Any) -> float:
    from batchsim.policies.padded_batch import STATIC_MEMORY_UTILIZATION

    return float(getattr(config, "gpu_memory_utilization", STATIC_MEMORY_UTILIZATION))


def build_served(spec: ServeSpec) -> Served:
    """Everything `serve` needs; ValueError with one line for any bad input."""
    import torch

    from batchsim.profiler.engine.models import resolve_model
    from batchsim.profiler.engine.paged_engine import free_memory_bytes
    from batchsim.profiler.real.validate import engine_spec

    policy_class = get_policy(spec.policy)
    config = make_config(spec.policy, dict(spec.knobs))
    profile: Profile | None = None
    if spec.profile is not None:
        from batchsim.sim.profile import load_profile

        profile = load_profile(spec.profile)
        es = engine_spec(profile, spec.model, spec.device)
        model, device, threads = es.model, es.device, es.threads
        dtype: str | None = spec.dtype or es.dtype
    else:
        assert spec.model is not None
        model, device, threads = spec.model, spec.device or "cpu", None
        dtype = spec.dtype or ("float32" if device == "cpu" else None)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here")
    resolved = resolve_model(model)
    if threads:
        torch.set_num_threads(threads)
    padded = issubclass(policy_class, PaddedBatchPolicy)
    info = _model_facts(model, dtype)
    util = _policy_util(config)
    if profile is not None:
        memory = profile.memory
        max_model_len = profile.max_model_len
    else:  # the engine's own facts, with the KV budget its device allows
        free, total = free_memory_bytes(torch.device(device))
        budget = (int(total * util) - (total - free) if device.startswith("cuda")
                  else min(CPU_KV_CAP_BYTES, free // 4))
        memory = _memory_for_pool(MemoryFacts(total, info.weight_bytes, info.kv_bytes_per_token),
                                  budget // info.kv_bytes_per_token, util)
        max_model_len = info.max_model_len
    cap_bytes = (spec.kv_cache_gb * 2**30 if spec.kv_cache_gb is not None
                 else CPU_KV_CAP_BYTES if device == "cpu" else None)
    policy = policy_class(config, memory, max_model_len)
    if cap_bytes is not None:
        cap_tokens = int(cap_bytes // memory.kv_bytes_per_token)
        if policy.kv_capacity_blocks * policy.kv_block_size > cap_tokens:
            memory = _memory_for_pool(memory, cap_tokens, util)
            policy = policy_class(config, memory, max_model_len)
            logger.warning("KV capped at %.2f GiB: the policy sees %d blocks", cap_bytes / 2**30,
                           policy.kv_capacity_blocks)
    paged = static = None
    if padded:
        from batchsim.profiler.engine.static_engine import StaticEngine
        from batchsim.profiler.profiling.engines import warm_static

        static = StaticEngine(model, device=device, dtype=dtype, seed=spec.seed)
        warm_static(static)
    else:
        from batchsim.profiler.engine.paged_engine import Engine
        from batchsim.profiler.profiling.engines import warm_packed, warm_packed_blocks

        # the pool also holds the warm-up's steps (each frees its sequences)
        blocks = max(policy.kv_capacity_blocks + 1, warm_packed_blocks(policy.kv_block_size))
        paged = Engine(model, device=device, dtype=dtype, seed=spec.seed, num_blocks=blocks,
                       block_size=policy.kv_block_size)
        warm_packed(paged)
    eos = getattr(resolved.config, "eos_token_id", None)
    eos_id = eos[0] if isinstance(eos, list) and eos else eos if isinstance(eos, int) else None
    ckpt = None if resolved.checkpoint_dir is None else str(resolved.checkpoint_dir)
    built = {"model": resolved.name, "device": device, "dtype": info.dtype,
             "threads": torch.get_num_threads(), "policy": spec.policy,
             "kv_capacity_blocks": policy.kv_capacity_blocks,
             "kv_block_size": policy.kv_block_size, "profile": spec.profile}
    facts = FrontFacts(resolved.name, max_model_len, info.vocab_size, ckpt, built)
    paths = predict = None
    if profile is not None:
        from batchsim.sim.profile import execution_paths

        prof = profile
        paths = execution_paths(prof)

        def predict(plan: Any) -> float:
            return prof.cost_model(plan.layout, plan.phase, plan.device).predict(plan.shape)

    return Served(policy, PlanRunner(paged, static), facts, eos_id, paths, predict)


@dataclass(frozen=True)
class _ModelSizes:
    weight_bytes: int
    kv_bytes_per_token: int
    vocab_size: int
    max_model_len: int
    dtype: str


def _model_facts(model: str, dtype: str | None) -> _ModelSizes:
    """Sizes of the model, from its config on the meta device (no weights are built)."""
    import torch
    from transformers import AutoModelForCausalLM

    from batchsim.profiler.engine.models import kv_bytes_per_token, parse_dtype, resolve_model

    resolved = resolve_model(model)
    cfg = resolved.config
    torch_dtype = parse_dtype(dtype, cfg)
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(cfg)
    size = torch.empty((), dtype=torch_dtype).element_size()
    params = sum(p.numel() for p in shell.parameters())
    return _ModelSizes(params * size, kv_bytes_per_token(cfg, size), int(cfg.vocab_size),
                  resolved.max_model_len, str(torch_dtype).removeprefix("torch."))
