"""`batchsim profile --analytic`: a profile for any supported model on any known GPU, no hardware.

The analytic step time (ops.py: FLOPs and bytes of every kernel; calibration.py: each kernel
class's achieved efficiency, fitted on public measurements) is evaluated at every point of the
standard CUDA profiling grid, and the cost models are fitted to those points exactly as a
measured profile's are, so simulate, sweep and reports take it unchanged. The file says
`"source": "analytic"` and records every assumption: the GPU's published figures, the engine
mode, the calibration (its parameters and its leave-one-out error), TP and link figures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict
from typing import Any

from batchsim.policies.base import StepShape
from batchsim.profiler.analytic.calibration import (
    CALIBRATION_FILE,
    EAGER,
    VLLM,
    Calibration,
    load_calibration,
    step_time,
)
from batchsim.profiler.analytic.gpus import GpuSpec
from batchsim.profiler.analytic.ops import step_ops
from batchsim.profiler.model_arch import ModelArch
from batchsim.profiler.profiling.grid import (
    PADDED_DECODE,
    PADDED_PREFILL,
    GridPoint,
    build_points,
    grid_spec,
)
from batchsim.profiler.profiling.profile_file import fit_document
from batchsim.sim.profile import SCHEMA, SCHEMA_VERSION

DTYPES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Fraction of device memory kept for activations of the largest step (vLLM profiles it; here an
# assumption: fp32 logits of 256 sequences and MLP intermediates of 8k tokens, at least 1 GiB).
MIN_ACTIVATION_BYTES = 2**30


def activation_reserve(arch: ModelArch, tp: int) -> int:
    logits = 256 * arch.vocab_size * 4
    width = arch.moe_intermediate_size if arch.is_moe else arch.intermediate_size
    mlp = 8192 * (2 * width // tp) * 2 * (arch.experts_per_token or 1)
    return max(MIN_ACTIVATION_BYTES, logits + mlp)


def analytic_profile(arch: ModelArch, raw_config: dict[str, Any], gpu: GpuSpec, tp: int = 1,
                     dtype: str = "bfloat16", engine: str = "vllm",
                     calibration: tuple[Calibration, dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """The profile document (sim/profile.py schema). ValueError when the model does not fit.
    `calibration` (parameters, meta) replaces the committed calibration.json (the accuracy
    bench builds profiles from calibrations that leave sources out)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if engine not in ("vllm", "eager"):
        raise ValueError(f"engine must be 'vllm' or 'eager', got {engine!r}")
    if tp < 1 or tp > 64 or tp & (tp - 1):
        raise ValueError(f"--tp must be a power of two from 1 to 64, got {tp}")
    if arch.num_heads % tp:
        raise ValueError(f"{arch.name}: {arch.num_heads} attention heads do not split over "
                         f"--tp {tp}")
    b = DTYPES[dtype]
    weights = arch.num_params() * b // tp
    reserve = activation_reserve(arch, tp)
    if weights + reserve >= 0.9 * gpu.mem_bytes:
        raise ValueError(
            f"{arch.name} does not fit one {gpu.name} at --tp {tp}: {weights / 2**30:.1f} GiB of "
            f"{dtype} weights per GPU + {reserve / 2**30:.1f} GiB of activations exceed 90% of "
            f"{gpu.mem_bytes / 2**30:.0f} GiB; raise --tp or choose a larger GPU")
    calib, calib_meta = calibration if calibration is not None else load_calibration()
    spec = grid_spec("standard", "cuda")
    shapes: list[tuple[str, str, StepShape]] = []
    for gp in build_points(spec, arch.max_model_len):
        shapes.append((gp.id, gp.key, gp.shape()))
        if gp.key == PADDED_PREFILL:  # a static batch's decode step at the same batch and length
            decode = GridPoint(PADDED_DECODE, gp.batch, 0, gp.tokens)
            shapes.append((decode.id, PADDED_DECODE, decode.shape()))
    points = []
    for point_id, key, shape in shapes:
        ops = step_ops(arch, shape, tp, b)
        t = step_time(ops, gpu, calib, engine, arch.num_layers, shape.num_seqs)
        points.append({"id": point_id, "model": key, **shape._asdict(), "time_s": t,
                       "spread_s": 0.0, "repeats": 1})
    config_hash = hashlib.sha256(json.dumps(raw_config, sort_keys=True).encode()).hexdigest()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "source": "analytic",
        "complete": True,
        "fingerprint": {
            "device": f"{gpu.name} (analytic, {engine} engine)", "device_type": "cuda",
            "driver": None, "torch": None, "transformers": None, "dtype": dtype,
            "model": arch.name, "config_hash": config_hash,
            "created": dt.date.today().isoformat(), "host": None,
        },
        "run": {"grid": "standard", "seed": 0, "analytic": True},
        "model": {
            "name": arch.name, "family": arch.model_type, "num_layers": arch.num_layers,
            "hidden_size": arch.hidden_size, "num_attention_heads": arch.num_heads,
            "num_kv_heads": arch.num_kv_heads, "head_dim": arch.head_dim,
            "vocab_size": arch.vocab_size, "max_model_len": arch.max_model_len,
            "num_params": arch.num_params(), "num_experts": arch.num_experts,
            "experts_per_token": arch.experts_per_token, "weights": "analytic",
        },
        "memory": {
            "total_bytes": gpu.mem_bytes, "weight_bytes": weights,
            "kv_bytes_per_token": arch.kv_bytes_per_token(b, tp),
            "activation_reserve_bytes": reserve,
        },
        "assumptions": {
            "gpu": asdict(gpu),
            "tensor_parallel": tp,
            "engine": engine,
            "engine_model": (
                "vLLM: the sum of the step's kernels (CUDA graphs, scheduling one step ahead); "
                f"host time between steps assumed {VLLM['step_overhead_s']} s"
                if engine == "vllm" else
                f"eager transformers engine, ASSUMED: {EAGER['kernels_per_layer']} kernel "
                f"launches per layer at {EAGER['launch_s'] * 1e6:g} us, "
                f"{EAGER['step_overhead_s'] * 1e3:g} ms per step, "
                f"{EAGER['per_seq_s'] * 1e6:g} us per sequence"),
            "calibration_file": CALIBRATION_FILE.name if calibration is None else None,
            "calibration": calib_meta,
            "activation_reserve": "assumed: max(1 GiB, fp32 logits of 256 sequences + MLP "
                                  "intermediates of 8192 tokens)",
        },
        "points": points,
    }
    fit_document(doc)
    return doc
