"""The static (padded) engine reproduces generate for every row of a left-padded batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.engine.models import PRESETS  # noqa: E402
from batchsim.profiler.engine.static_engine import StaticEngine  # noqa: E402

TINY_MODELS = [p for p in PRESETS if p.startswith("tiny-")]
Greedy = Callable[[str, list[int], int], list[int]]
Prompts = Callable[..., list[list[int]]]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_padded_batch_matches_generate(
    name: str, hf_greedy: Greedy, random_prompts: Prompts
) -> None:
    """Every row of a left-padded batch of different prompt lengths decodes like generate."""
    prompts = random_prompts([4, 19, 33, 11], seed=7)
    engine = StaticEngine(name, dtype="float32")
    first, _ = engine.prefill(prompts)
    for _ in range(7):
        engine.decode()
    assert [o[0] for o in engine.outputs] == first
    for p, out in zip(prompts, engine.outputs, strict=True):
        assert out == hf_greedy(name, p, 8)


def test_second_batch_starts_fresh(hf_greedy: Greedy, random_prompts: Prompts) -> None:
    """prefill() drops the previous batch and its cache."""
    engine = StaticEngine("tiny-qwen2", dtype="float32")
    engine.prefill(random_prompts([5, 9], seed=8))
    engine.decode()
    prompts = random_prompts([12, 3, 7], seed=9)
    engine.prefill(prompts)
    for _ in range(4):
        engine.decode()
    assert engine.batch_size == 3
    assert engine.outputs == [hf_greedy("tiny-qwen2", p, 5) for p in prompts]


def test_static_timing_counts_padding() -> None:
    """Prefill counts padded tokens; decode runs the whole batch, finished rows count as padding."""
    engine = StaticEngine("tiny-gpt2", dtype="float32")
    _, t = engine.prefill([[1, 2, 3], [4] * 7], max_new_tokens=[1, 3])
    assert (t.num_seqs, t.num_prefill_tokens, t.num_padding_tokens, t.kv_tokens_read) == (
        2,
        14,
        4,
        14,
    )
    assert t.gpu_ms is None and t.wall_ms >= t.prep_ms > 0
    tokens, t = engine.decode()
    assert len(tokens) == 2
    assert (t.num_decode_tokens, t.num_padding_tokens, t.kv_tokens_read) == (2, 1, 16)


def test_static_errors() -> None:
    """decode() before prefill(), empty batches and mismatched budgets are ValueErrors."""
    engine = StaticEngine("tiny-llama", dtype="float32")
    with pytest.raises(ValueError, match="call prefill"):
        engine.decode()
    with pytest.raises(ValueError, match="no empty prompts"):
        engine.prefill([[1], []])
    with pytest.raises(ValueError, match="max_new_tokens has 1 entries"):
        engine.prefill([[1], [2]], max_new_tokens=[3])
