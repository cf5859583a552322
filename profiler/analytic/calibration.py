"""Kernel-class time models, their calibration on public measurements, and a step's time.

One small physical model per kernel class, with a handful of parameters per GPU family:

    gemm, moe:   t = c + (tc^p + tm^p)^(1/p),  tc = FLOPs / (peak * e_c),  tm = bytes / (bw * e_m)
    attention (varlen kernel: prefill chunks, with any decodes of the step):
                 t = c + s * sequences + (tc^p + tw^p + tm^p)^(1/p),  tc = padded tile FLOPs /
                 (peak * e_c), tw = the longest tile's FLOPs / (peak / SMs * e_c) (it runs on one
                 SM), tm = bytes / (bw * e_m)
    decode_attention (decode-only steps, split-KV kernel): t = c + s * sequences + KV bytes /
                 (bw * e_m)
    norm, activation, rope, embedding, sampler (memory-bound): t = c + bytes / (bw * e_m)
    allreduce:   bytes / link + hops * link latency (not calibrated: no public data here)

c is a kernel's fixed time, e_c and e_m the achieved fractions of the published peak FLOP/s and
bandwidth, p how sharply the kernel turns from memory-bound to compute-bound (a GEMM of a few
tokens is bound by reading its weights, one of thousands by FLOPs). The parameters are fitted
per GPU family where the family has measurements, and pooled over all of them otherwise (so a
GPU of an unseen family still gets the efficiencies measured elsewhere, applied to its own
published peaks). `fit_calibration` fits them by least squares on log time (relative error).

A step under vLLM (`engine="vllm"`) costs the sum of its kernels: decode and prefill run as CUDA
graphs and the scheduler works one step ahead, so the GPU does not wait for the host between
kernels; any host time left between steps is not modelled (assumed 0). Under batchsim's own
eager engine (`engine="eager"`) every kernel is launched from Python, so a layer costs at least
its launches (ASSUMED figures below, not fitted: no public measurement of that engine on a GPU).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchsim.profiler.analytic.gpus import GpuSpec
from batchsim.profiler.analytic.ops import MEMORY_BOUND, KernelClass, Op

CALIBRATION_FILE = Path(__file__).resolve().parent / "calibration.json"
POOLED = "pooled"
CALIBRATED: tuple[KernelClass, ...] = ("gemm", "moe", "attention", "decode_attention",
                                       *MEMORY_BOUND)
# Classes fitted per family where the family has data; the others are pooled only.
PER_FAMILY: tuple[KernelClass, ...] = ("gemm", "norm", "activation", "rope", "embedding")

# ASSUMED, eager engine only (batchsim's transformers engine, not vLLM): host cost of one kernel
# launch from Python and kernels per decoder layer; per-step cost outside the layers.
EAGER = {"launch_s": 8e-6, "kernels_per_layer": 35, "step_overhead_s": 1e-3, "per_seq_s": 20e-6}
VLLM = {"step_overhead_s": 0.0}


@dataclass(frozen=True)
class KernelParams:
    c_s: float  # fixed time of one kernel
    e_c: float = 1.0  # achieved fraction of peak FLOP/s
    e_m: float = 1.0  # achieved fraction of peak bandwidth
    p: float = 4.0  # sharpness of the smooth max of compute and memory time
    per_seq_s: float = 0.0  # attention: time per sequence in the kernel

    def time(self, op: Op, gpu: GpuSpec) -> float:
        tm = op.bytes / (gpu.mem_bandwidth * self.e_m)
        if op.kind in MEMORY_BOUND:
            return self.c_s + tm
        if op.kind == "decode_attention":
            return self.c_s + self.per_seq_s * op.seqs + tm
        if op.kind == "attention":
            tc = op.padded_flops / (gpu.peak_flops * self.e_c)
            tw = op.walk_flops * gpu.sm_count / (gpu.peak_flops * self.e_c)
            return self.c_s + self.per_seq_s * op.seqs + smooth_max((tc, tw, tm), self.p)
        tc = op.flops / (gpu.peak_flops * self.e_c)
        return self.c_s + smooth_max((tc, tm), self.p) + self.per_seq_s * op.seqs


def smooth_max(xs: Sequence[float], p: float) -> float:
    """(sum x^p)^(1/p): the largest bound, softened where they are close (p -> inf: the max)."""
    hi = max(xs)
    return hi * sum((x / hi) ** p for x in xs) ** (1 / p) if hi > 0 else 0.0


Calibration = dict[str, dict[str, KernelParams]]  # family (or "pooled") -> kernel class -> params


# When no measurement of a class exists at all (a leave-out run, a calibration file of your own):
# MoE experts are grouped GEMMs, the sampler is memory-bound like a norm; attention runs on the
# same tensor cores and memory as the GEMMs, so it takes the GEMMs' efficiencies (no
# per-sequence cost), said in the profile.
FALLBACK = {"moe": "gemm", "sampler": "norm", "activation": "norm", "rope": "norm",
            "embedding": "norm"}


def attention_from_gemm(g: KernelParams) -> KernelParams:
    return KernelParams(c_s=g.c_s, e_c=g.e_c, e_m=g.e_m, p=g.p)


def params_for(calib: Calibration, family: str, kind: str) -> KernelParams:
    fam = calib.get(family, {})
    if kind in fam:
        return fam[kind]
    pooled = calib[POOLED]
    if kind in MEMORY_BOUND and "norm" in fam:
        return fam["norm"]  # a family's memory-bound kernels resemble each other more than
        # the same kernel on another family (caches, memory type)
    if kind in pooled:
        return pooled[kind]
    if kind in FALLBACK:
        return params_for(calib, family, FALLBACK[kind])
    if kind in ("attention", "decode_attention"):
        return attention_from_gemm(params_for(calib, family, "gemm"))
    raise KeyError(f"the calibration has no parameters for {kind} kernels")


def op_time(op: Op, gpu: GpuSpec, calib: Calibration) -> float:
    if op.kind == "allreduce":
        hops = 2 * (op.tokens - 1)  # op.tokens holds tp for an all-reduce
        return op.bytes / gpu.link_bandwidth + hops * gpu.link_latency_s
    return params_for(calib, gpu.family, op.kind).time(op, gpu)


def step_time(ops: Sequence[Op], gpu: GpuSpec, calib: Calibration, engine: str,
              num_layers: int, num_seqs: int) -> float:
    """Seconds of one step made of these ops, under vLLM or batchsim's eager engine."""
    total = sum(op.count * op_time(op, gpu, calib) for op in ops)
    if engine == "vllm":
        return total + VLLM["step_overhead_s"]
    if engine != "eager":
        raise ValueError(f"engine must be 'vllm' or 'eager', got {engine!r}")
    launches = num_layers * EAGER["kernels_per_layer"] * EAGER["launch_s"]
    return max(total, launches) + EAGER["step_overhead_s"] + EAGER["per_seq_s"] * num_seqs


# -- fitting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One measured kernel time on a GPU (from a public table)."""

    source: str  # "<gpu>/<model>/tp<N>"
    gpu: GpuSpec
    op: Op
    time_s: float


# starting points (c_s, e_c, e_m, p, per_seq_s); parameters are fitted as logs (positive)
_START = {"gemm": (5e-6, 0.7, 0.8, 3.0, 0.0), "moe": (2e-5, 0.5, 0.8, 3.0, 0.0),
          "attention": (5e-6, 0.5, 0.8, 2.0, 2e-7), "decode_attention": (5e-6, 1.0, 0.8, 1.0, 2e-7)}
_MEMORY_START = (3e-6, 1.0, 0.6, 1.0, 0.0)


def _unpack(kind: str, z: np.ndarray) -> KernelParams:
    if kind in MEMORY_BOUND:
        return KernelParams(c_s=math.exp(z[0]), e_m=math.exp(z[1]))
    if kind == "decode_attention":
        c, em, ps = (math.exp(v) for v in z)
        return KernelParams(c_s=c, e_m=em, per_seq_s=ps)
    if kind == "attention":
        c, ec, em, p, ps = (math.exp(v) for v in z)
        return KernelParams(c_s=c, e_c=ec, e_m=em, p=1.0 + p, per_seq_s=ps)
    c, ec, em, p = (math.exp(v) for v in z)
    return KernelParams(c_s=c, e_c=ec, e_m=em, p=1.0 + p)


def _start(kind: str) -> np.ndarray:
    c, ec, em, p, ps = _START.get(kind, _MEMORY_START)
    if kind in MEMORY_BOUND:
        return np.log([c, em])
    if kind == "decode_attention":
        return np.log([c, em, ps])
    if kind == "attention":
        return np.log([c, ec, em, p - 1.0, ps])
    return np.log([c, ec, em, p - 1.0])


def fit_kind(kind: str, records: Sequence[Record]) -> KernelParams:
    """Least squares on log(predicted / measured) over one kernel class's records."""
    from scipy.optimize import least_squares

    y = np.log([r.time_s for r in records])
    tm0 = np.array([r.op.bytes / r.gpu.mem_bandwidth for r in records])
    tc0 = np.array([(r.op.padded_flops if kind == "attention" else r.op.flops)
                    / r.gpu.peak_flops for r in records])
    tw0 = np.array([r.op.walk_flops * r.gpu.sm_count / r.gpu.peak_flops for r in records])
    seqs = np.array([r.op.seqs for r in records], dtype=float)

    def resid(z: np.ndarray) -> np.ndarray:  # KernelParams.time, vectorised over the records
        kp = _unpack(kind, z)
        tm = tm0 / kp.e_m
        if kind in MEMORY_BOUND:
            return np.log(kp.c_s + tm) - y
        if kind == "decode_attention":
            return np.log(kp.c_s + kp.per_seq_s * seqs + tm) - y
        tc = tc0 / kp.e_c
        bounds = [tc, tm] + ([tw0 / kp.e_c] if kind == "attention" else [])
        hi = np.maximum.reduce(bounds)
        body = hi * sum((b / hi) ** kp.p for b in bounds) ** (1 / kp.p)
        return np.log(kp.c_s + kp.per_seq_s * seqs + body) - y

    fit = least_squares(resid, _start(kind), method="trf", max_nfev=400)
    return _unpack(kind, fit.x)


def fit_calibration(records: Sequence[Record]) -> Calibration:
    """Pooled parameters for every calibrated class with records, plus per-family ones for
    PER_FAMILY classes of families that have records."""
    calib: Calibration = {POOLED: {}}
    for kind in CALIBRATED:
        rows = [r for r in records if r.op.kind == kind]
        if rows:
            calib[POOLED][kind] = fit_kind(kind, rows)
    for kind in PER_FAMILY:
        for family in sorted({r.gpu.family for r in records}):
            rows = [r for r in records if r.op.kind == kind and r.gpu.family == family]
            if len(rows) >= 8:
                calib.setdefault(family, {})[kind] = fit_kind(kind, rows)
    return calib


def ape(records: Sequence[Record], calib: Calibration) -> np.ndarray:
    """Absolute percentage error of each record's predicted kernel time."""
    pred = np.array([op_time(r.op, r.gpu, calib) for r in records])
    meas = np.array([r.time_s for r in records])
    return np.abs(pred - meas) / meas


# -- the committed calibration --------------------------------------------------------------------


def calibration_to_json(calib: Calibration, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"meta": dict(meta),
            "params": {fam: {k: asdict(v) for k, v in kinds.items()}
                       for fam, kinds in calib.items()}}


def load_calibration(path: Path = CALIBRATION_FILE) -> tuple[Calibration, dict[str, Any]]:
    doc = json.loads(path.read_text())
    calib = {fam: {k: KernelParams(**v) for k, v in kinds.items()}
             for fam, kinds in doc["params"].items()}
    if "gemm" not in calib.get(POOLED, {}) or "norm" not in calib.get(POOLED, {}):
        raise ValueError(f"{path}: a calibration needs pooled gemm and norm parameters")
    return calib, doc.get("meta", {})
