"""KV hand-off between engines: a prompt prefilled on one engine decodes on another exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.engine.kv_cache import OutOfBlocksError  # noqa: E402
from batchsim.profiler.engine.paged_engine import Engine  # noqa: E402
from batchsim.profiler.engine.records import EngineChunk, EnginePlan  # noqa: E402

Prompts = Callable[..., list[list[int]]]
MODEL = "tiny-qwen2"


def _prefill(engine: Engine, seq_id: int, prompt: list[int]) -> int:
    engine.add(seq_id, prompt)
    return engine.step(EnginePlan(prefills=[EngineChunk(seq_id, 0, len(prompt))])).tokens[seq_id]


def _decode(engine: Engine, seq_ids: list[int], steps: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in seq_ids}
    for _ in range(steps):
        for i, token in engine.step(EnginePlan(decodes=seq_ids)).tokens.items():
            out[int(i)].append(token)  # type: ignore[call-overload]
    return out


def test_prefill_on_one_engine_decode_on_another_matches(random_prompts: Prompts) -> None:
    """Prefill on A, hand the KV and first token to B (different block size, blocks scattered
    by other sequences), decode there beside a native sequence: the same greedy tokens as
    doing everything on B."""
    prompt, other = random_prompts([37, 21], seed=3)
    ref = Engine(MODEL, dtype="float32", num_blocks=64, block_size=16, seed=0)
    first_ref = _prefill(ref, 0, prompt)
    want = [first_ref, *_decode(ref, [0], 8)[0]]

    a = Engine(MODEL, dtype="float32", num_blocks=32, block_size=4, seed=0)
    b = Engine(MODEL, dtype="float32", num_blocks=64, block_size=16, seed=0)
    b.add("pad", [1] * 20)  # take blocks 0-1 so the handed-off sequence lands elsewhere
    b.assume_cached("pad", 20)
    first = _prefill(a, 0, prompt)
    kv = a.export_kv(0)
    a.free(0)
    assert kv.token_ids == [*prompt, first] and kv.num_computed == len(prompt)
    assert kv.nbytes == len(prompt) * a.info.kv_bytes_per_token
    b.free("pad")
    _prefill(b, 1, other)  # a native sequence decodes beside the imported one
    b.import_kv(0, kv.to(b.device, b.dtype))
    assert b.num_computed(0) == len(prompt) and b.kv_cache.block_table(0)[0] != 0
    got = _decode(b, [0, 1], 8)
    assert [first, *got[0]] == want


def test_import_without_room_changes_nothing(random_prompts: Prompts) -> None:
    (prompt,) = random_prompts([40], seed=4)
    a = Engine(MODEL, dtype="float32", num_blocks=8, block_size=16, seed=0)
    b = Engine(MODEL, dtype="float32", num_blocks=2, block_size=16, seed=0)  # 32 token slots
    _prefill(a, 0, prompt)
    kv = a.export_kv(0)
    with pytest.raises(OutOfBlocksError):
        b.import_kv(0, kv)
    assert b.seq_ids == [] and b.kv_cache.num_free_blocks == 2


def test_import_checks_the_kv_shape(random_prompts: Prompts) -> None:
    (prompt,) = random_prompts([8], seed=5)
    a = Engine(MODEL, dtype="float32", num_blocks=8, block_size=16, seed=0)
    b = Engine(MODEL, dtype="float32", num_blocks=8, block_size=16, seed=0)
    _prefill(a, 0, prompt)
    kv = a.export_kv(0)
    kv.k = kv.k[:1]  # one layer missing
    with pytest.raises(ValueError, match="does not fit this pool"):
        b.import_kv(0, kv)
    assert b.seq_ids == [] and b.kv_cache.num_free_blocks == 8
