"""The paged engine reproduces transformers' greedy generate token for token under any schedule."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.engine.kv_cache import OutOfBlocksError  # noqa: E402
from batchsim.profiler.engine.models import PRESETS, resolve_model  # noqa: E402
from batchsim.profiler.engine.paged_engine import Engine  # noqa: E402
from batchsim.profiler.engine.records import EngineChunk, EnginePlan  # noqa: E402

TINY_MODELS = [p for p in PRESETS if p.startswith("tiny-")]
Greedy = Callable[[str, list[int], int], list[int]]
Prompts = Callable[..., list[list[int]]]


@dataclass
class Req:
    seq_id: int
    prompt: list[int]
    num_new: int
    arrival_step: int = 0
    out: list[int] = field(default_factory=list)


def run_chunked(engine: Engine, reqs: list[Req], token_budget: int) -> list[EnginePlan]:
    """A tiny continuous-batching loop: decodes first, then FCFS prefill chunks in the leftover
    budget; requests join at their arrival step and are freed once they have num_new tokens."""
    waiting = sorted(reqs, key=lambda r: r.arrival_step)
    running: list[Req] = []
    plans: list[EnginePlan] = []
    step = 0
    while waiting or running:
        while waiting and waiting[0].arrival_step <= step:
            req = waiting.pop(0)
            engine.add(req.seq_id, req.prompt)
            running.append(req)
        decodes = [r.seq_id for r in running if r.out]
        budget = token_budget - len(decodes)
        chunks = []
        for r in running:
            todo = len(r.prompt) - engine.num_computed(r.seq_id)
            if not r.out and todo > 0 and budget > 0:
                n = min(todo, budget)
                chunks.append(EngineChunk(r.seq_id, engine.num_computed(r.seq_id), n))
                budget -= n
        step += 1
        if not decodes and not chunks:
            continue
        plan = EnginePlan(prefills=chunks, decodes=decodes)
        plans.append(plan)
        for seq_id, token in engine.step(plan).tokens.items():
            req = next(r for r in running if r.seq_id == seq_id)
            req.out.append(token)
            if len(req.out) == req.num_new:
                engine.free(seq_id)
                running.remove(req)
    return plans


@pytest.mark.parametrize("name", TINY_MODELS)
def test_batched_prefill_then_decodes(
    name: str, hf_greedy: Greedy, random_prompts: Prompts
) -> None:
    """Prefilling three prompts in one step, then decoding them together, matches generate."""
    prompts = random_prompts([3, 17, 70], seed=1)  # 70 > tiny-mistral's window of 64
    engine = Engine(name, dtype="float32", num_blocks=64, block_size=4)
    for i, p in enumerate(prompts):
        engine.add(i, p)
    first = engine.step(
        EnginePlan(prefills=[EngineChunk(i, 0, len(p)) for i, p in enumerate(prompts)])
    )
    assert sorted(first.tokens) == [0, 1, 2]
    for _ in range(7):
        engine.step(EnginePlan(decodes=[0, 1, 2]))
    for i, p in enumerate(prompts):
        assert engine.tokens(i) == p + hf_greedy(name, p, 8)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_chunked_prefill_mixed_with_decodes_and_joins(
    name: str, hf_greedy: Greedy, random_prompts: Prompts
) -> None:
    """Chunked prefills mixed with decodes, requests joining and leaving mid-run: same tokens."""
    prompts = random_prompts([5, 40, 23, 1, 66, 12], seed=2)
    reqs = [Req(i, p, num_new=6 + 2 * i, arrival_step=3 * i) for i, p in enumerate(prompts)]
    engine = Engine(name, dtype="float32", num_blocks=96, block_size=4)
    plans = run_chunked(engine, reqs, token_budget=16)
    assert any(p.prefills and p.decodes for p in plans), "schedule never mixed chunks and decodes"
    assert any(c.start > 0 for p in plans for c in p.prefills), "no prompt was chunked"
    for r in reqs:
        assert r.out == hf_greedy(name, r.prompt, r.num_new), f"request {r.seq_id}"
    assert engine.seq_ids == [] and engine.kv_cache.num_free_blocks == 96


@pytest.mark.parametrize("name", TINY_MODELS)
def test_recompute_preemption(name: str, hf_greedy: Greedy, random_prompts: Prompts) -> None:
    """Sequences freed mid-decode and mid-prefill, re-prefilled later, give the same tokens."""
    a, b = random_prompts([20, 30], seed=3)
    engine = Engine(name, dtype="float32", num_blocks=64, block_size=4)
    engine.add("a", a)
    engine.add("b", b)
    engine.step(EnginePlan(prefills=[EngineChunk("a", 0, 20), EngineChunk("b", 0, 10)]))
    for _ in range(4):
        engine.step(EnginePlan(decodes=["a"]))
    tokens_a = engine.free("a")  # preempt a after 5 generated tokens
    tokens_b = engine.free("b")  # preempt b with 10 of 30 prompt tokens cached
    assert len(tokens_a) == 25 and tokens_b == b
    engine.add("b", tokens_b)
    engine.step(EnginePlan(prefills=[EngineChunk("b", 0, 30)]))
    engine.add("a", tokens_a)  # recompute: prompt + generated, in two chunks
    engine.step(EnginePlan(prefills=[EngineChunk("a", 0, 16)], decodes=["b"]))
    engine.step(EnginePlan(prefills=[EngineChunk("a", 16, 9)], decodes=["b"]))
    for _ in range(4):
        engine.step(EnginePlan(decodes=["a", "b"]))
    assert engine.tokens("a") == a + hf_greedy(name, a, 10)
    assert engine.tokens("b") == b + hf_greedy(name, b, 7)


def test_sliding_window_changes_long_contexts(
    tmp_path: Path, hf_greedy: Greedy, random_prompts: Prompts
) -> None:
    """tiny-mistral's 64-token window is honoured: without it a 100-token context differs."""
    engine = Engine("tiny-mistral", dtype="float32", num_blocks=64, block_size=8)
    no_window = resolve_model("tiny-mistral").config.to_dict() | {"sliding_window": None}
    (tmp_path / "config.json").write_text(json.dumps(no_window))
    full = Engine(str(tmp_path / "config.json"), dtype="float32", num_blocks=64, block_size=8)
    (prompt,) = random_prompts([100], seed=4)
    outs = []
    for eng in (engine, full):
        eng.add(0, prompt)
        eng.step(EnginePlan(prefills=[EngineChunk(0, 0, 100)]))
        for _ in range(5):
            eng.step(EnginePlan(decodes=[0]))
        outs.append(eng.tokens(0)[100:])
    assert outs[0] == hf_greedy("tiny-mistral", prompt, 6)
    assert outs[0] != outs[1]


def test_step_timing_counts() -> None:
    """StepTiming counts sequences, tokens and KV read; a partial chunk samples nothing."""
    engine = Engine("tiny-qwen2", dtype="float32", num_blocks=32, block_size=4)
    engine.add(0, [5] * 10)
    engine.add(1, [7] * 6)
    engine.step(EnginePlan(prefills=[EngineChunk(0, 0, 10)]))
    result = engine.step(EnginePlan(prefills=[EngineChunk(1, 0, 4)], decodes=[0]))
    t = result.timing
    assert list(result.tokens) == [0]  # seq 1's chunk does not reach the end of its prompt
    assert (t.num_seqs, t.num_prefill_tokens, t.num_decode_tokens) == (2, 4, 1)
    assert t.kv_tokens_read == 11 + 4
    assert t.gpu_ms is None and t.wall_ms >= t.prep_ms > 0 and t.peak_activation_bytes is None
    assert engine.num_computed(1) == 4 and engine.tokens(1) == [7] * 6


def test_bad_plans_are_rejected() -> None:
    """Decoding before prefill, chunks at the wrong start, unknown or duplicate ids are errors."""
    engine = Engine("tiny-llama", dtype="float32", num_blocks=16, block_size=4)
    engine.add(0, [1, 2, 3])
    with pytest.raises(ValueError, match="a decode needs all but the last"):
        engine.step(EnginePlan(decodes=[0]))
    with pytest.raises(ValueError, match="start must equal the cached count"):
        engine.step(EnginePlan(prefills=[EngineChunk(0, 1, 2)]))
    with pytest.raises(ValueError, match="end within the known tokens"):
        engine.step(EnginePlan(prefills=[EngineChunk(0, 0, 4)]))
    with pytest.raises(KeyError, match="unknown sequence"):
        engine.step(EnginePlan(decodes=[9]))
    with pytest.raises(ValueError, match="already in the engine"):
        engine.add(0, [1])
    with pytest.raises(ValueError, match="appears twice"):
        EnginePlan(prefills=[EngineChunk(0, 0, 1)], decodes=[0])
    with pytest.raises(ValueError, match="at least one"):
        EnginePlan()
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add(1, [1] * 513)
    with pytest.raises(ValueError, match="outside"):
        engine.add(1, [512])


def test_out_of_blocks_changes_nothing() -> None:
    """A step that does not fit the pool raises OutOfBlocksError and leaves every sequence alone."""
    engine = Engine("tiny-qwen2", dtype="float32", num_blocks=4, block_size=4)
    engine.add(0, list(range(12)))
    engine.add(1, list(range(8)))
    engine.step(EnginePlan(prefills=[EngineChunk(0, 0, 12)]))
    plan = EnginePlan(prefills=[EngineChunk(1, 0, 8)], decodes=[0])
    assert engine.blocks_needed(plan) == 3
    with pytest.raises(OutOfBlocksError, match="needs 3 KV blocks, 1 of 4 are free"):
        engine.step(plan)
    assert engine.kv_cache.num_free_blocks == 1 and engine.num_computed(1) == 0
    engine.free(1)
    assert len(engine.step(EnginePlan(decodes=[0])).tokens) == 1


def test_assume_cached_sets_up_decode_contexts() -> None:
    """assume_cached marks tokens cached without computing them; a decode then reads them."""
    engine = Engine("tiny-qwen2", dtype="float32", num_blocks=16, block_size=4)
    engine.add(0, list(range(41)))
    engine.assume_cached(0, 40)
    assert engine.num_computed(0) == 40 and engine.kv_cache.num_free_blocks == 6
    result = engine.step(EnginePlan(decodes=[0]))
    assert result.timing.kv_tokens_read == 41 and len(result.tokens) == 1
    with pytest.raises(ValueError, match="between the cached count 41"):
        engine.assume_cached(0, 10)
    engine.add(1, list(range(30)))
    with pytest.raises(OutOfBlocksError):
        engine.assume_cached(1, 30)
    assert engine.num_computed(1) == 0


def test_memory_facts_and_pool_sizing() -> None:
    """The pool is sized from num_blocks or a byte budget; memory facts report it."""
    engine = Engine(
        "tiny-qwen2", dtype="float32", kv_memory_bytes=512 * 16 * 10 + 100, block_size=16
    )
    facts = engine.memory_facts()
    assert facts.num_blocks == 10 and facts.kv_bytes_per_token == 512
    assert facts.kv_pool_bytes == 10 * 16 * 512 and facts.weight_bytes == engine.info.weight_bytes
    assert facts.free_bytes_after_load > 0 and facts.total_bytes >= facts.free_bytes_now > 0
    with pytest.raises(ValueError, match="not both"):
        Engine("tiny-qwen2", num_blocks=4, kv_memory_bytes=1 << 20)
    with pytest.raises(ValueError, match="holds no block"):
        Engine("tiny-qwen2", kv_memory_bytes=10)


def test_bfloat16_runs() -> None:
    """The engine runs in bfloat16 on CPU (no exactness claim: rounding differs from fp32)."""
    engine = Engine("tiny-llama", dtype="bfloat16", num_blocks=16, block_size=4)
    assert engine.kv_cache.k_pool.dtype == torch.bfloat16
    engine.add(0, [3, 4, 5])
    first = engine.step(EnginePlan(prefills=[EngineChunk(0, 0, 3)])).tokens[0]
    second = engine.step(EnginePlan(decodes=[0])).tokens[0]
    assert 0 <= first < 512 and 0 <= second < 512


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_engine_on_gpu_times_steps_and_agrees_with_reference(random_prompts: Prompts) -> None:
    """On CUDA (bf16, varlen) steps carry GPU ms and peak memory; first tokens match reference."""
    engines = [
        Engine(
            "tiny-qwen2",
            device="cuda",
            dtype="bfloat16",
            num_blocks=64,
            block_size=16,
            attention_backend=b,
        )
        for b in ("varlen", "reference")
    ]
    prompts = random_prompts([9, 33, 70], seed=5)
    outs = []
    for engine in engines:
        for i, p in enumerate(prompts):
            engine.add(i, p)
        result = engine.step_with_peak_memory(
            EnginePlan(prefills=[EngineChunk(i, 0, len(p)) for i, p in enumerate(prompts)])
        )
        assert result.timing.gpu_ms is not None and result.timing.gpu_ms > 0
        assert (
            result.timing.peak_activation_bytes is not None
            and result.timing.peak_activation_bytes > 0
        )
        for _ in range(7):
            engine.step(EnginePlan(decodes=[0, 1, 2]))
        outs.append([engine.tokens(i) for i in range(3)])
    # first generated token of each sequence agrees; later ones may drift through bf16 rounding
    assert [o[len(p)] for o, p in zip(outs[0], prompts, strict=True)] == [
        o[len(p)] for o, p in zip(outs[1], prompts, strict=True)
    ]


def test_holds_says_whether_a_sequence_is_added_and_not_freed() -> None:
    engine = Engine(TINY_MODELS[0], dtype="float32", num_blocks=8, block_size=4)
    assert not engine.holds(0)
    engine.add(0, [1, 2, 3])
    assert engine.holds(0) and not engine.holds(1)
    engine.free(0)
    assert not engine.holds(0) and engine.seq_ids == []
