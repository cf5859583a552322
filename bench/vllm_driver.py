"""Drive vLLM's own V1 Scheduler step by step on the CPU, as its engine core does, with step
times from a linear cost formula; run by bench/vllm_conformance.py under an interpreter that
has vllm (an optional dependency: never imported by batchsim itself).

    python bench/vllm_driver.py CASES.json OUT.json

CASES.json: a list of cases, each {"name", "knobs": {batchsim knob: value}, "num_blocks"
(usable KV blocks; vLLM's pool gets one more, its null block), "max_model_len", "costs": {phase:
{feature: seconds per unit}}, "requests": [[id, arrival_s, input_tokens, output_tokens,
priority(, prompt token ids)], ...]}: without token ids a prompt is all 1s (enough without
prefix caching; with `enable_prefix_caching` a case gives the tokens, so that prompts share
exactly the prefixes meant). OUT.json: per case the steps ([start_s, {id: tokens}]), per request
the first-token and finish times and preemptions, and with caching the prefix cache's
queries and hits (vLLM's PrefixCacheStats, summed over the steps).

The engine loop follows vllm/v1/engine/core.py: synchronously, schedule -> execute -> update;
with async scheduling (`step_with_batch_queue`, a queue of 2), step k+1 is scheduled as soon
as step k is queued, and the engine then waits for the oldest step, so a decision is taken
when the step before it starts. Arrivals are added before each scheduling call. The "model"
samples token 1 for every scheduled request that is not mid-prefill.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

FEATURES = ("const", "num_seqs", "num_tokens", "num_prefill_tokens", "num_decode_seqs",
            "prefill_attn_pairs", "decode_ctx_tokens")


def make_scheduler(case: dict[str, Any], model_dir: Path):
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    k = case["knobs"]
    asynchronous = bool(k.get("async_scheduling", True))
    scheduler_config = SchedulerConfig(
        max_num_seqs=int(k["max_num_seqs"]),
        max_num_batched_tokens=int(k["max_num_batched_tokens"]),
        max_model_len=int(case["max_model_len"]),
        is_encoder_decoder=False,
        enable_chunked_prefill=bool(k.get("enable_chunked_prefill", True)),
        long_prefill_token_threshold=int(k.get("long_prefill_token_threshold", 0)),
        policy=k.get("policy", "fcfs"),
        scheduler_reserve_full_isl=bool(k.get("scheduler_reserve_full_isl", True)),
        async_scheduling=asynchronous,
    )
    model_config = ModelConfig(model=str(model_dir), skip_tokenizer_init=True, dtype="float16",
                               max_model_len=int(case["max_model_len"]), seed=0)
    caching = bool(k.get("enable_prefix_caching", False))
    cache_config = CacheConfig(block_size=int(k["block_size"]), enable_prefix_caching=caching)
    # device="cpu": the scheduler runs on the host anyway, and no GPU platform is detected
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config,
                             cache_config=cache_config, device_config=DeviceConfig(device="cpu"))
    assert vllm_config.scheduler_config.async_scheduling == asynchronous, "async_scheduling"

    num_blocks = int(case["num_blocks"]) + 1  # block 0 is the pool's null block
    spec = FullAttentionSpec(block_size=int(k["block_size"]), num_kv_heads=1, head_size=8,
                             dtype=torch.float16)
    kv_cache_config = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                                    kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    cache_config.num_gpu_blocks = num_blocks
    cls = AsyncScheduler if asynchronous else Scheduler
    return cls(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
               structured_output_manager=StructuredOutputManager(vllm_config),
               block_size=int(k["block_size"]), log_stats=caching), asynchronous


def block_hasher(case: dict[str, Any]):
    """The engine core's request block hasher (None without prefix caching)."""
    if not case["knobs"].get("enable_prefix_caching", False):
        return None
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    hash_fn = get_hash_fn_by_name("sha256")
    init_none_hash(hash_fn)
    return get_request_block_hasher(int(case["knobs"]["block_size"]), hash_fn)


def step_cost_s(costs: dict[str, dict[str, float]], f: dict[str, float]) -> float:
    phase = ("prefill" if f["num_decode_seqs"] == 0 else
             "decode" if f["num_prefill_tokens"] == 0 else "mixed")
    return sum(coef * f[name] for name, coef in costs[phase].items())


def run_case(case: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request, RequestStatus

    sched, asynchronous = make_scheduler(case, model_dir)
    hasher = block_hasher(case)
    cache_stats = dict.fromkeys(("queries", "hits", "preempted_queries", "preempted_hits"), 0)
    depth = 2 if asynchronous else 1
    pending = deque(sorted(case["requests"], key=lambda r: (r[1], r[0])))
    reqs: dict[str, Any] = {}
    target: dict[str, int] = {}  # tokens to prefill since it was last admitted
    first_s: dict[str, float] = {}
    finish_s: dict[str, float] = {}
    steps: list[list[Any]] = []
    inflight: deque[tuple[Any, float, list[str]]] = deque()
    now = gpu_free = 0.0
    empty_in_a_row = 0
    while True:
        while pending and pending[0][1] <= now:
            rid, arrival, n_in, n_out, priority, *tokens = pending.popleft()
            r = Request(request_id=rid, prompt_token_ids=tokens[0] if tokens else [1] * int(n_in),
                        sampling_params=SamplingParams(max_tokens=int(n_out), ignore_eos=True),
                        pooling_params=None, arrival_time=float(arrival),
                        priority=int(priority), block_hasher=hasher)
            reqs[rid] = r
            sched.add_request(r)
        if sched.has_requests():
            queued = {rid for rid, r in reqs.items()
                      if r.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)}
            out = sched.schedule()
            if hasher is not None:
                stats = sched.kv_cache_manager.make_prefix_cache_stats()
                for name in cache_stats:
                    cache_stats[name] += getattr(stats, name)
            assigned = dict(out.num_scheduled_tokens)
            f = dict.fromkeys(FEATURES, 0.0)
            f["const"] = 1.0
            sampled = []
            for rid, n in assigned.items():
                r = reqs[rid]
                if rid in queued:
                    target[rid] = r.num_tokens  # prompt + tokens generated before preemption
                c = r.num_computed_tokens - n  # position of the step's first token
                f["num_seqs"] += 1
                f["num_tokens"] += n
                if c >= target[rid]:
                    f["num_decode_seqs"] += 1
                    f["decode_ctx_tokens"] += c + 1
                else:
                    f["num_prefill_tokens"] += n
                    f["prefill_attn_pairs"] += n * c + n * (n + 1) // 2
                partial = getattr(r, "is_prefill_chunk", r.num_computed_tokens < r.num_tokens)
                if not partial:
                    sampled.append(rid)
            if assigned:
                start = max(now, gpu_free)
                gpu_free = end = start + step_cost_s(case["costs"], f)
                steps.append([start, assigned])
                empty_in_a_row = 0
            else:
                end = max(now, gpu_free)
                empty_in_a_row += 1
            inflight.append((out, end, sampled))
            if len(inflight) < depth and (assigned or sched.has_requests()):
                continue
        elif not inflight:
            if not pending:
                break
            now = pending[0][1]
            continue
        out, end, sampled = inflight.popleft()
        now = max(now, end)
        ids = list(out.num_scheduled_tokens)
        result = ModelRunnerOutput(req_ids=ids, req_id_to_index={rid: i for i, rid in
                                                                 enumerate(ids)},
                                   sampled_token_ids=[[1] if rid in sampled else []
                                                      for rid in ids])
        sched.update_from_output(out, result)
        for rid in sampled:
            first_s.setdefault(rid, end)
            if rid not in finish_s and reqs[rid].is_finished():
                finish_s[rid] = end
        if empty_in_a_row > 4 and not inflight:
            # Nothing schedulable (vLLM spins): only an arrival can change that.
            if not pending:
                raise RuntimeError(f"{case['name']}: vLLM scheduled nothing with work queued")
            now = max(now, pending[0][1])
            empty_in_a_row = 0
    return {"name": case["name"], "steps": steps,
            "requests": {rid: {"first_token_s": first_s.get(rid), "finish_s": finish_s.get(rid),
                               "preemptions": int(r.num_preemptions)}
                         for rid, r in reqs.items()},
            "prefix_cache": cache_stats if hasher is not None else None}


def tiny_model_dir(folder: Path) -> Path:
    """A local model config (no weights: the scheduler never runs the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 1, "vocab_size": 1000, "max_position_embeddings": 1 << 20,
        "torch_dtype": "float16", "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2}))
    return folder


def main(argv: list[str]) -> int:
    import logging

    import vllm

    logging.disable(logging.WARNING)
    cases = json.loads(Path(argv[1]).read_text())
    model_dir = tiny_model_dir(Path(argv[2]).parent / "tiny-model")
    results = [run_case(c, model_dir) for c in cases]
    Path(argv[2]).write_text(json.dumps({"vllm_version": vllm.__version__, "cases": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
