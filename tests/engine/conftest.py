"""Shared fixtures for the engine tests: HF greedy references and random prompts."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

try:
    import torch
except ImportError:  # simulator-only install: the engine test modules skip themselves
    torch = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")


def random_prompts(lengths: list[int], seed: int = 0, vocab: int = 512) -> list[list[int]]:
    """Prompts of the given lengths with seeded random token ids."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


@functools.cache
def _reference_model(name: str):
    from batchsim.profiler.engine.models import build_model

    return build_model(name, "cpu", "float32", seed=0)[0]  # default (sdpa) attention


def hf_greedy(name: str, prompt: list[int], num_new_tokens: int) -> list[int]:
    """``model.generate`` greedy output of exactly ``num_new_tokens`` tokens (batch 1, no pad)."""
    model = _reference_model(name)
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=num_new_tokens,
        min_new_tokens=num_new_tokens,
        eos_token_id=None,
        pad_token_id=0,
    )
    tokens = out[0, len(prompt) :].tolist()
    assert len(tokens) == num_new_tokens
    return tokens


@pytest.fixture(name="hf_greedy")
def hf_greedy_fixture() -> Callable[[str, list[int], int], list[int]]:
    """``hf_greedy(model_name, prompt, n)``: the reference tokens."""
    return hf_greedy


@pytest.fixture(name="random_prompts")
def random_prompts_fixture() -> Callable[..., list[list[int]]]:
    """``random_prompts(lengths, seed)``: seeded random prompts."""
    return random_prompts
