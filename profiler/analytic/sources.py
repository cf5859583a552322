"""Public kernel measurements read as calibration records, and the whole steps they compose.

Two formats (read each data set's README; the files are never copied into the project):
- LLMServingSim's per-layer vLLM tables (`profiler/perf/<hw>/<org>/<model>/<variant>/tp<N>/`:
  dense.csv, attention.csv, per_sequence.csv, moe.csv; meta.yaml names the GPU), with the
  model's config in `configs/model/<org>/<model>.json`.
- Vidur's MLP/projection tables (`data/profiling/compute/<gpu>/<org>/<model>/mlp.csv`: one row
  per (num_tokens, tensor-parallel workers), median milliseconds per op, model dims in columns).

Each table row becomes a `Record` (the op with its FLOPs and bytes, as ops.py counts them, and
the measured time). `measured_steps` composes whole steps from one source's own rows, the way
the tables were measured (per-layer ops times the layer count, plus the per-step ops).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from batchsim.policies.base import StepShape, chunk_attn_pairs
from batchsim.profiler.analytic.arch import arch_from_config
from batchsim.profiler.analytic.calibration import Record
from batchsim.profiler.analytic.gpus import GPUS, GpuSpec
from batchsim.profiler.analytic.ops import Op, gemm, step_ops
from batchsim.profiler.model_arch import ModelArch

DTYPE_BYTES = 2


@dataclass(frozen=True)
class Source:
    """One GPU x model x tp table set."""

    name: str  # "<gpu>/<model>/tp<N>"
    gpu: GpuSpec
    arch: ModelArch
    tp: int
    kind: str  # "llmservingsim" | "vidur"
    path: Path


def gpu_from_text(text: str) -> GpuSpec:
    """The GPU a table's metadata names ("NVIDIA RTX PRO 6000 Blackwell ...", "h100", ...)."""
    t = text.lower().replace("-", " ")
    rules = [("pro 6000", "rtx-pro-6000"), ("rtxpro6000", "rtx-pro-6000"), ("b200", "b200"),
             ("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"),
             ("a100 40", "a100-40gb"), ("a100", "a100-80gb"), ("l40s", "l40s"),
             ("4090", "rtx-4090"), ("l4", "l4")]
    for needle, name in rules:
        if needle in t:
            return GPUS[name]
    raise ValueError(f"no known GPU matches {text!r}; known: {', '.join(sorted(GPUS))}")


# -- LLMServingSim ------------------------------------------------------------------------------


def llmservingsim_sources(root: Path) -> list[Source]:
    out = []
    for meta in sorted((root / "profiler" / "perf").glob("*/*/*/*/meta.yaml")):
        text = meta.read_text()
        gpu_line = re.search(r"^gpu:\s*(.+)$", text, re.M)
        gpu = gpu_from_text(gpu_line.group(1) if gpu_line else meta.parts[-5])
        org, model = meta.parts[-4], meta.parts[-3]
        cfg = json.loads((root / "configs" / "model" / org / f"{model}.json").read_text())
        arch = arch_from_config(cfg, model)
        for tp_dir in sorted(meta.parent.glob("tp*")):
            tp = int(tp_dir.name[2:])
            out.append(Source(f"{gpu.name}/{model}/tp{tp}", gpu, arch, tp, "llmservingsim",
                              tp_dir))
    return out


def _dense_op(arch: ModelArch, tp: int, name: str, t: int) -> Op | None:
    """The op of one dense.csv row at t tokens (sizes per GPU)."""
    shape = StepShape(0, t, 0, 0, 0)  # token ops only: no sequences, no attention
    ops = {o.name: o for o in step_ops(arch, shape, tp, DTYPE_BYTES)}
    if name == "layernorm":
        return replace(ops["layernorm"], count=1)
    op = ops.get(name)
    return None if op is None else replace(op, count=1)


def llmservingsim_records(src: Source) -> list[Record]:
    a, tp, b = src.arch, src.tp, DTYPE_BYTES
    recs: list[Record] = []
    dense = pd.read_csv(src.path / "dense.csv")
    for name, t, us in dense[["layer", "tokens", "time_us"]].itertuples(index=False):
        op = _dense_op(a, tp, str(name), int(t))
        if op is not None:
            recs.append(Record(src.name, src.gpu, op, float(us) * 1e-6))
    per_seq = pd.read_csv(src.path / "per_sequence.csv")
    for name, s, us in per_seq[["layer", "sequences", "time_us"]].itertuples(index=False):
        s = int(s)
        op = (gemm("lm_head", s, a.hidden_size, a.vocab_size // tp, b) if name == "lm_head"
              else Op("sampler", "sampler", 0.0, 4.0 * s * a.vocab_size, tokens=s))
        recs.append(Record(src.name, src.gpu, op, float(us) * 1e-6))
    attn = pd.read_csv(src.path / "attention.csv")
    # 19k rows: a seeded sample keeps the fit quick and still covers the grid
    attn = attn.sample(n=min(len(attn), 3000), random_state=0)
    for c, kp, n, kvd, us in attn[["prefill_chunk", "kv_prefill", "n_decode", "kv_decode",
                                   "time_us"]].itertuples(index=False):
        shape = attention_shape(int(c), int(kp), int(n), int(kvd))
        op = next(o for o in step_ops(a, shape, tp, b) if o.name == "attention")
        recs.append(Record(src.name, src.gpu, replace(op, count=1), float(us) * 1e-6))
    moe_file = src.path / "moe.csv"
    if moe_file.exists() and a.is_moe:
        moe = pd.read_csv(moe_file)
        for t, act, us in moe[["tokens", "activated_experts", "time_us"]].itertuples(index=False):
            recs.append(Record(src.name, src.gpu, moe_op(a, tp, int(t), float(act)),
                               float(us) * 1e-6))
    return recs


def attention_shape(chunk: int, kv_prefill: int, n_decode: int, kv_decode: int) -> StepShape:
    """The step shape of one attention.csv row: a chunk after kv_prefill cached tokens, plus
    n_decode decodes of kv_decode context each."""
    seqs = (1 if chunk else 0) + n_decode
    return StepShape(seqs, chunk, n_decode, chunk_attn_pairs(kv_prefill, chunk) if chunk else 0,
                     n_decode * kv_decode)


def moe_op(a: ModelArch, tp: int, tokens: int, active: float) -> Op:
    mats = 3 if a.gated_mlp else 2
    k = a.experts_per_token
    return Op("moe", "moe", 2.0 * tokens * k * mats * a.hidden_size * a.moe_intermediate_size / tp,
              (active * mats * a.hidden_size * a.moe_intermediate_size / tp
               + 2.0 * tokens * k * a.hidden_size) * DTYPE_BYTES, tokens=tokens)


# -- Vidur ------------------------------------------------------------------------------------

_VIDUR_GPU = {"h100": "h100-sxm", "a100": "a100-80gb"}  # Vidur's profiling GPUs (80 GB parts)


def vidur_sources(root: Path) -> list[Source]:
    out = []
    for mlp in sorted((root / "data" / "profiling" / "compute").glob("*/*/*/mlp.csv")):
        gpu = GPUS[_VIDUR_GPU.get(mlp.parts[-4], mlp.parts[-4])] if mlp.parts[-4] in _VIDUR_GPU \
            else gpu_from_text(mlp.parts[-4])
        head = pd.read_csv(mlp, nrows=1).iloc[0]
        h, heads = int(head["n_embd"]), int(head["n_head"])
        arch = ModelArch(name=mlp.parts[-2], model_type="llama", num_layers=1, hidden_size=h,
                         num_heads=heads, num_kv_heads=int(head["n_kv_head"]),
                         head_dim=h // heads, intermediate_size=int(head["n_expanded_embd"]),
                         vocab_size=int(head["vocab_size"]), max_model_len=4096,
                         tie_word_embeddings=False, gated_mlp=bool(head["use_gated_mlp"]))
        for tp in sorted(pd.read_csv(mlp, usecols=["num_tensor_parallel_workers"])
                         ["num_tensor_parallel_workers"].unique()):
            out.append(Source(f"{gpu.name}/{arch.name}/tp{tp}", gpu, arch, int(tp), "vidur", mlp))
    return out


# Vidur op -> (ops.py op name, bytes rule for the unfused elementwise ops sarathi runs)
_VIDUR_OPS = {"attn_pre_proj": "qkv_proj", "attn_post_proj": "o_proj",
              "mlp_up_proj": "gate_up_proj", "mlp_down_proj": "down_proj", "mlp_act": "act_fn",
              "attn_rope": "rotary_emb", "emb": "embedding", "input_layernorm": "norm",
              "post_attention_layernorm": "norm", "add": "add"}


def vidur_records(src: Source) -> list[Record]:
    df = pd.read_csv(src.path)
    df = df[df.num_tensor_parallel_workers == src.tp]
    a, b = src.arch, DTYPE_BYTES
    recs = []
    for _, row in df.iterrows():
        t = int(row["num_tokens"])
        token_ops = step_ops(a, StepShape(0, t, 0, 0, 0), src.tp, b)
        ops = {o.name: replace(o, count=1) for o in token_ops}
        ops["norm"] = Op("norm", "norm", 0.0, 2.0 * t * a.hidden_size * b, tokens=t)
        ops["add"] = Op("add", "norm", 0.0, 3.0 * t * a.hidden_size * b, tokens=t)
        for col, name in _VIDUR_OPS.items():
            ms = row.get(f"time_stats.{col}.median")
            if ms is not None and np.isfinite(ms) and ms > 0:
                recs.append(Record(src.name, src.gpu, replace(ops[name], name=col),
                                   float(ms) * 1e-3))
    return recs


def records(src: Source) -> list[Record]:
    return llmservingsim_records(src) if src.kind == "llmservingsim" else vidur_records(src)


def all_sources(shared: Path) -> list[Source]:
    """Every table set under the shared data folder (missing data sets are skipped)."""
    out: list[Source] = []
    lss, vidur = shared / "llmservingsim", shared / "vidur"
    if lss.is_dir():
        out += llmservingsim_sources(lss)
    if vidur.is_dir():
        out += vidur_sources(vidur)
    return out


# -- whole steps composed from one source's own rows --------------------------------------------


def _interp(table: pd.DataFrame, name: str, x: float, key: str = "tokens") -> float:
    rows = table[table.layer == name].sort_values(key)
    return float(np.interp(x, rows[key].to_numpy(float), rows["time_us"].to_numpy(float))) * 1e-6


def measured_steps(src: Source, max_steps: int = 600) -> list[tuple[str, StepShape, float]]:
    """(phase, shape, seconds) of whole steps composed from the source's own tables.

    LLMServingSim: an attention.csv row fixes the step's shape (a chunk after a prefix, n
    decodes of one context); the step is its layers' dense ops at T = chunk + n tokens (linear
    interpolation between measured token counts), its attention row, MoE at the expected number
    of activated experts (interpolated in the table), all times the layer count, plus embedding,
    final norm, LM head and sampler. Vidur (no attention tables): the token ops of every layer at
    each measured token count, a "token-ops" step without attention.
    """
    a, L = src.arch, src.arch.num_layers
    out: list[tuple[str, StepShape, float]] = []
    if src.kind == "vidur":
        recs = vidur_records(src)
        by_t: dict[int, float] = {}
        for r in recs:
            if r.op.name == "emb":
                continue
            mult = 2 if r.op.name == "add" else 1
            by_t[r.op.tokens] = by_t.get(r.op.tokens, 0.0) + mult * r.time_s
        return [("token-ops", StepShape(0, t, 0, 0, 0), VIDUR_LAYERS * v)
                for t, v in sorted(by_t.items())]
    moe = pd.read_csv(src.path / "moe.csv") if (src.path / "moe.csv").exists() else None
    if a.is_moe and moe is None:
        return []  # the experts were not measured at this tp: no whole step to compose
    dense = pd.read_csv(src.path / "dense.csv")
    per_seq = pd.read_csv(src.path / "per_sequence.csv")
    attn = pd.read_csv(src.path / "attention.csv")
    attn = attn[attn.prefill_chunk + attn.n_decode <= dense.tokens.max()]
    attn = attn.sample(n=min(len(attn), max_steps), random_state=1)
    layer_ops = [n for n in dense.layer.unique() if n not in ("embedding", "final_layernorm")]
    for c, kp, n, kvd, us in attn[["prefill_chunk", "kv_prefill", "n_decode", "kv_decode",
                                   "time_us"]].itertuples(index=False):
        t, s = int(c + n), int((c > 0) + n)
        layer = float(us) * 1e-6 + sum(_interp(dense, op, t) * (2 if op == "layernorm" else 1)
                                       for op in layer_ops)
        if moe is not None and a.is_moe:
            layer += _moe_time(moe, a, t)
        step = L * layer + _interp(dense, "embedding", t) + _interp(dense, "final_layernorm", t)
        step += _interp(per_seq, "lm_head", s, "sequences") + _interp(per_seq, "sampler", s,
                                                                     "sequences")
        shape = attention_shape(int(c), int(kp), int(n), int(kvd))
        out.append((shape.phase, shape, step))
    return out


# Vidur's tables are per layer and mlp.csv does not give the layer count; its three models
# (Llama-2-7B, Llama-3-8B, phi-2) all have 32 layers (their published configs).
VIDUR_LAYERS = 32


def _moe_time(moe: pd.DataFrame, a: ModelArch, tokens: int) -> float:
    from batchsim.profiler.analytic.ops import expected_experts

    act = expected_experts(a.num_experts, a.experts_per_token, tokens)
    # interpolate in tokens (log) at each activated-experts column, then in experts
    cols = []
    for e in np.sort(moe.activated_experts.unique()):
        rows = moe[moe.activated_experts == e].sort_values("tokens")
        cols.append((e, float(np.interp(np.log(tokens), np.log(rows.tokens.to_numpy(float)),
                                        rows.time_us.to_numpy(float)))))
    es = np.array([e for e, _ in cols], float)
    vs = np.array([v for _, v in cols], float)
    return float(np.interp(act, es, vs)) * 1e-6
