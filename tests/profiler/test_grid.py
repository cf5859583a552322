"""The profiling grid: deterministic shuffled points whose shapes are the simulator's."""

from __future__ import annotations

from collections import Counter

import pytest

from batchsim.policies.base import chunk_attn_pairs
from batchsim.profiler.profiling.grid import GRID_NAMES, GridPoint, build_grid, grid_spec
from batchsim.profiler.profiling.measure import Repeats
from batchsim.sim.cost_model import REQUIRED_MODELS


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", GRID_NAMES)
def test_every_grid_covers_every_required_model(name: str, device: str) -> None:
    """Each grid measures every cost model with enough points for 5-fold CV."""
    grid = build_grid(name, device, 32768, seed=0)
    counts = Counter(p.key for p in grid.points)
    for key in REQUIRED_MODELS:
        if key == "padded.decode":  # measured by the padded.prefill tasks
            key = "padded.prefill"
        assert counts[key] >= 5, (key, counts)
    assert ("cpu.packed.prefill" in counts) == (device == "cuda")
    assert ("kv_copy" in counts) == (device == "cuda")
    ids = [p.id for p in grid.points]
    assert len(ids) == len(set(ids))


def test_grids_grow_from_quick_to_full() -> None:
    """quick < standard < full, in points and in estimated work."""
    for device in ("cpu", "cuda"):
        grids = [build_grid(n, device, 32768, seed=0) for n in GRID_NAMES]
        assert [len(g.points) for g in grids] == sorted(len(g.points) for g in grids)
        assert grids[0].total_cost < grids[1].total_cost < grids[2].total_cost


def test_shuffle_is_seeded() -> None:
    """Same seed, same order; another seed, another order of the same points."""
    a = build_grid("quick", "cpu", 512, seed=1).points
    b = build_grid("quick", "cpu", 512, seed=1).points
    c = build_grid("quick", "cpu", 512, seed=2).points
    assert a == b
    assert a != c and sorted(p.id for p in a) == sorted(p.id for p in c)


def test_points_fit_the_model_context() -> None:
    """No sequence of any point needs more than max_model_len (with room for the repeats)."""
    grid = build_grid("standard", "cpu", 300, seed=0)
    spec = grid.spec
    for p in grid.points:
        longest = max(p.tokens + p.prefix, p.context + 1)
        assert longest + spec.repeats + spec.warmup < 300, p


def test_point_shapes_match_the_simulator_features() -> None:
    """A mixed point: one chunk after its prefix plus decodes at the context."""
    s = GridPoint("packed.mixed", batch=4, tokens=64, context=256, prefix=256).shape()
    assert (s.num_seqs, s.num_prefill_tokens, s.num_decode_seqs) == (5, 64, 4)
    assert s.prefill_attn_pairs == chunk_attn_pairs(256, 64)
    assert s.decode_ctx_tokens == 4 * 257  # cached tokens + the new one
    d = GridPoint("packed.decode", batch=8, context=128).shape()
    assert (d.num_seqs, d.num_decode_seqs, d.decode_ctx_tokens, d.phase) == (8, 8, 1032, "decode")
    p = GridPoint("padded.prefill", batch=2, tokens=16).shape()
    assert (p.num_prefill_tokens, p.prefill_attn_pairs, p.phase) == (32, 2 * 136, "prefill")


def test_unknown_grid_and_bad_repeats_are_refused() -> None:
    """Bad user input names what is valid."""
    with pytest.raises(ValueError, match="quick, standard, full"):
        grid_spec("huge", "cpu")
    with pytest.raises(ValueError, match="at least 1"):
        build_grid("quick", "cpu", 512, seed=0, repeats=0)


def test_repeats_give_cheap_points_more_steps() -> None:
    """At least min_repeats; cheap steps continue until min_point_s or max_repeats."""
    reps = Repeats(warmup=1, min_repeats=3, min_point_s=0.1, max_repeats=10)
    assert reps.more([1.0, 1.0])
    assert not reps.more([1.0, 1.0, 1.0])  # expensive: 3 are enough
    assert reps.more([0.01] * 3)  # cheap: keep going
    assert not reps.more([0.01] * 10)  # but not beyond max_repeats
    assert not Repeats(0, 2).more([0.001, 0.001])  # no max: exactly min_repeats
