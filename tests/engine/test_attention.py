"""Paged attention: step metadata, the SDPA reference, and the varlen path's CPU-tested twin."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from batchsim.profiler.engine.attention import (  # noqa: E402
    PagedAttentionMetadata,
    build_metadata,
    causal_mask,
    paged_attention_forward,
    reference_attention,
    select_backend,
)
from batchsim.profiler.engine.kv_cache import PagedKVCache  # noqa: E402
from batchsim.profiler.engine.varlen import (  # noqa: E402
    VarlenInputs,
    prepare_varlen_inputs,
    run_varlen,
    varlen_features,
    varlen_native_gqa,
)

HQ, HKV, D, BS = 4, 2, 8, 4
# (q_len, k_len): a fresh prefill, a chunk on top of a cached prefix, decodes, a 1-token chunk
SEQS = [(7, 7), (5, 13), (1, 9), (1, 1), (3, 3)]


def make_step(
    device: str = "cpu", dtype: torch.dtype = torch.float32, seqs: list[tuple[int, int]] = SEQS
) -> tuple[PagedAttentionMetadata, torch.Tensor]:
    """A pool with random K/V, sequences interleaved across blocks, and random packed queries."""
    cache = PagedKVCache(1, 64, BS, HKV, D, dtype, device)
    for grow in range(1, max(k for _, k in seqs) + 1):  # interleave: blocks are not contiguous
        for i, (_, k_len) in enumerate(seqs):
            cache.reserve(i, min(grow, k_len))
    gen = torch.Generator().manual_seed(0)
    cache.k_pool.copy_(torch.randn(cache.k_pool.shape, generator=gen))
    cache.v_pool.copy_(torch.randn(cache.v_pool.shape, generator=gen))
    meta = build_metadata(
        cache,
        [q for q, _ in seqs],
        [k for _, k in seqs],
        [cache.block_table(i) for i in range(len(seqs))],
    )
    q = torch.randn(sum(q for q, _ in seqs), HQ, D, generator=gen).to(device, dtype)
    return meta, q


def naive_attention(
    meta: PagedAttentionMetadata, q: torch.Tensor, window: int | None
) -> torch.Tensor:
    """Dense softmax attention per sequence, K/V looked up slot by slot from Python block tables."""
    k_slots, v_slots = meta.kv_cache.layer_slots(0)
    outs, qs = [], 0
    for i, (ql, kl) in enumerate(zip(meta.q_lens, meta.k_lens, strict=True)):
        slots = meta.kv_cache.slots(i, 0, kl)
        k = k_slots[slots].repeat_interleave(HQ // HKV, dim=1).float()  # [kl, HQ, D]
        v = v_slots[slots].repeat_interleave(HQ // HKV, dim=1).float()
        qi = q[qs : qs + ql].float()
        scores = torch.einsum("qhd,khd->hqk", qi, k) / math.sqrt(D)
        for a in range(ql):
            p = kl - ql + a
            for j in range(kl):
                if j > p or (window is not None and j <= p - window):
                    scores[:, a, j] = float("-inf")
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), v))
        qs += ql
    return torch.cat(outs)


def emulate_varlen(inputs: VarlenInputs, scale: float) -> torch.Tensor:
    """What varlen_attn computes, on CPU: bottom-right causal attention per cu_seqlens segment."""
    cu_q, cu_k = inputs.cu_seq_q.tolist(), inputs.cu_seq_k.tolist()
    left = inputs.window_size[0]
    assert inputs.window_size[1] == 0
    outs = []
    for i in range(len(cu_q) - 1):
        q = inputs.q[cu_q[i] : cu_q[i + 1]].float()
        k = inputs.k[cu_k[i] : cu_k[i + 1]].float()
        v = inputs.v[cu_k[i] : cu_k[i + 1]].float()
        if inputs.enable_gqa:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        assert k.shape[1] == q.shape[1], "without enable_gqa the kernel needs Hq KV heads"
        ql, kl = q.shape[0], k.shape[0]
        qpos = torch.arange(kl - ql, kl)[:, None]
        kpos = torch.arange(kl)[None, :]
        allowed = (kpos <= qpos) & ((kpos >= qpos - left) if left >= 0 else True)
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), v))
    return torch.cat(outs)


def test_metadata_matches_block_tables() -> None:
    """Positions, slot mapping and gather slots agree with the pure-Python block-table lookup."""
    meta, _ = make_step()
    cache = meta.kv_cache
    positions, slots, gathers = [], [], []
    for i, (ql, kl) in enumerate(SEQS):
        positions += list(range(kl - ql, kl))
        slots += cache.slots(i, kl - ql, ql)
        gathers += cache.slots(i, 0, kl)
    assert meta.positions.tolist() == positions
    assert meta.slot_mapping.tolist() == slots
    assert meta.gather_slots.tolist() == gathers
    assert meta.cu_seqlens_q.tolist() == [0, 7, 12, 13, 14, 17]
    assert meta.cu_seqlens_k.tolist() == [0, 7, 20, 29, 30, 33]
    assert meta.cu_seqlens_q.dtype == torch.int32 and (meta.max_q, meta.max_k) == (7, 13)


def test_causal_mask_is_bottom_right_aligned() -> None:
    """A 2-token chunk over 4 keys sees keys 0..2 then 0..3; a window of 2 keeps the last 2."""
    assert causal_mask(1, 5, None, torch.device("cpu")) is None
    assert causal_mask(2, 4, None, torch.device("cpu")).tolist() == [
        [True, True, True, False],
        [True, True, True, True],
    ]
    assert causal_mask(2, 4, 2, torch.device("cpu")).tolist() == [
        [False, True, True, False],
        [False, False, True, True],
    ]
    assert causal_mask(1, 4, 2, torch.device("cpu")).tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("window", [None, 5])
def test_reference_matches_naive_attention(window: int | None) -> None:
    """The SDPA reference equals dense softmax attention over each sequence's context."""
    meta, q = make_step()
    k_slots, v_slots = meta.kv_cache.layer_slots(0)
    out = reference_attention(q, k_slots, v_slots, meta, 1 / math.sqrt(D), window)
    torch.testing.assert_close(out, naive_attention(meta, q, window), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("native_gqa", [False, True])
@pytest.mark.parametrize("window", [None, 5])
def test_varlen_inputs_twin_matches_reference(native_gqa: bool, window: int | None) -> None:
    """CPU twin: the varlen path's prepared inputs, run through a CPU emulation of the kernel,
    reproduce the reference (gather, GQA expansion, cu_seqlens, window all checked)."""
    meta, q = make_step()
    k_slots, v_slots = meta.kv_cache.layer_slots(0)
    inputs = prepare_varlen_inputs(q, k_slots, v_slots, meta, window, native_gqa)
    assert inputs.k.shape == (sum(meta.k_lens), HKV if native_gqa else HQ, D)
    assert inputs.enable_gqa is native_gqa
    assert inputs.window_size == ((-1, 0) if window is None else (window - 1, 0))
    expected = reference_attention(q, k_slots, v_slots, meta, 1 / math.sqrt(D), window)
    torch.testing.assert_close(
        emulate_varlen(inputs, 1 / math.sqrt(D)), expected, atol=1e-5, rtol=1e-5
    )


def test_attention_function_writes_new_kv_to_slots() -> None:
    """The transformers hook stores the step's K/V at the slot mapping and returns [1, T, Hq, D]."""
    meta, q = make_step()
    t = q.shape[0]
    key, value = torch.randn(1, HKV, t, D), torch.randn(1, HKV, t, D)
    out, weights = paged_attention_forward(
        SimpleNamespace(layer_idx=0),
        q.transpose(0, 1)[None],
        key,
        value,
        None,
        scaling=1 / math.sqrt(D),
        paged_metadata=meta,
    )
    k_slots, v_slots = meta.kv_cache.layer_slots(0)
    torch.testing.assert_close(k_slots[meta.slot_mapping], key[0].transpose(0, 1))
    torch.testing.assert_close(v_slots[meta.slot_mapping], value[0].transpose(0, 1))
    assert out.shape == (1, t, HQ, D) and weights is None
    with pytest.raises(ValueError, match="paged_metadata"):
        paged_attention_forward(
            SimpleNamespace(layer_idx=0), q.transpose(0, 1)[None], key, value, None
        )


def test_backend_selection() -> None:
    """auto picks the reference off CUDA; unknown names and impossible varlen are ValueErrors."""
    assert select_backend("auto", torch.device("cpu"), torch.float32) == "reference"
    with pytest.raises(ValueError, match="auto, reference, varlen"):
        select_backend("flash", torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="needs CUDA"):
        select_backend("varlen", torch.device("cpu"), torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("native_gqa", [False, True])
@pytest.mark.parametrize("window", [None, 5])
def test_varlen_kernel_matches_reference_on_gpu(native_gqa: bool, window: int | None) -> None:
    """The real varlen_attn kernel agrees with the SDPA reference (bf16 tolerance)."""
    if not varlen_features()["available"]:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    if native_gqa and not varlen_native_gqa(torch.device("cuda")):
        pytest.skip("this torch's varlen_attn does not take fewer KV heads than query heads")
    meta, q = make_step("cuda", torch.bfloat16)
    k_slots, v_slots = meta.kv_cache.layer_slots(0)
    inputs = prepare_varlen_inputs(q, k_slots, v_slots, meta, window, native_gqa)
    out = run_varlen(inputs, 1 / math.sqrt(D))
    expected = reference_attention(q, k_slots, v_slots, meta, 1 / math.sqrt(D), window)
    torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_native_gqa_probe_on_gpu() -> None:
    """The probe's verdict is checked independently on GQA inputs of a preset's head layout
    (14 query heads, 2 KV heads): True means the kernel's output matches SDPA with enable_gqa,
    False means the kernel rejects such inputs or computes something else."""
    if not varlen_features()["available"]:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    from torch.nn.attention.varlen import varlen_attn

    native = varlen_native_gqa(torch.device("cuda"))
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(24, h, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
               for h in (14, 2, 2))
    bounds = ((0, 7), (7, 24))
    cu = torch.tensor([0, 7, 24], dtype=torch.int32, device="cuda")
    ref = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=True,
        enable_gqa=True).transpose(0, 1) for a, b in bounds])
    try:
        out = varlen_attn(q, k, v, cu, cu, 17, 17, window_size=(-1, 0))
    except (RuntimeError, ValueError, TypeError):
        assert not native
        return
    agrees = torch.allclose(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    assert agrees == native
