"""`batchsim profile --import llmservingsim PERF_DIR --model CONFIG.json`: a batchsim profile from
LLMServingSim's measured vLLM tables (docs/IMPORT.md). numpy/scipy/pyyaml only, no torch.

Step times are composed from the tables (compose.py) over step shapes spread across the
tables' range (the raw points) and fitted with the measured profiles' fit code; a phase keeps
that max-of-linear model only when it reproduces composed times on held-out shapes within
MAX_MAPE and about as well as the grid cost model read off the composition
(sim/grid_cost_model.py, grids.py), which it gets otherwise. The profile records both errors.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchsim.policies.base import StepShape, chunk_attn_pairs
from batchsim.profiler.imported.compose import Link, StepComposer
from batchsim.profiler.imported.dtypes import VariantDtypes
from batchsim.profiler.imported.grids import GridBuilder
from batchsim.profiler.imported.hardware import LinkChoice, tp_link
from batchsim.profiler.imported.memory import memory_facts
from batchsim.profiler.imported.tables import read_meta
from batchsim.profiler.model_arch import ModelArch, read_config
from batchsim.profiler.profiling.fit import SIMPLER_MARGIN, fit_key
from batchsim.sim.profile import SCHEMA, SCHEMA_VERSION

logger = logging.getLogger(__name__)

MAX_MAPE = 0.02  # the fitted models must reproduce composed times this well on held-out shapes
PHASES = ("prefill", "decode", "mixed")


@dataclass(frozen=True)
class ImportConfig:
    """What `batchsim profile --import llmservingsim` was asked for."""

    perf_dir: Path
    config: Path
    tp: int = 1
    # None = the perf tree's hardware.yaml (measured), else DEFAULT_LINK_* (profiler/imported/
    # hardware.py)
    link_gbps: float | None = None
    link_latency_us: float | None = None
    gpu_memory_gb: float | None = None
    decode_spread: float = 1.0
    seed: int = 0
    num_points: int = 600  # raw points per phase
    num_heldout: int = 400  # held-out shapes per phase

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError(f"--tp must be a positive integer, got {self.tp}")
        if self.gpu_memory_gb is not None and not self.gpu_memory_gb > 0:
            raise ValueError(f"--gpu-memory-gb must be positive, got {self.gpu_memory_gb}")
        if (self.link_gbps is not None and not self.link_gbps > 0) or \
                (self.link_latency_us is not None and not self.link_latency_us >= 0):
            raise ValueError("--tp-link-gbps must be positive and --tp-link-latency-us >= 0")


# hf_overrides keys that tensor parallelism splits: the profiler emulates one GPU's share at tp t
# by dividing them by t (vocabularies are padded per shard, hence a tolerance)
_SHARDED = {"num_attention_heads": 0.0, "num_key_value_heads": 0.0, "intermediate_size": 0.0,
            "moe_intermediate_size": 0.0, "vocab_size": 0.02}


def _shard_of(key: str, have: int, value: int, t: int) -> bool:
    if key == "num_key_value_heads" and math.ceil(have / t) == value:
        return True  # fewer KV heads than GPUs: replicated
    return abs(have / t - value) <= _SHARDED[key] * value


def check_architecture(meta: Mapping[str, Any], config: ModelArch, meta_path: Path) -> None:
    """The config must be the model the tables measured: same architecture, and the one-layer
    model's overridden TP-sharded dimensions (heads, intermediate size, vocabulary) one GPU's
    share (1/t, t in tp_degrees) of the config's. Other overrides (layers, a reduced expert
    count) are how the profiler made its small model and are not compared."""
    if meta["architecture"] != config.model_type:
        raise ValueError(f"{config.path}: model_type {config.model_type!r} does not match "
                         f"{meta_path}'s architecture {meta['architecture']!r}")
    engine = meta.get("engine_effective") or {}
    overrides = engine.get("hf_overrides") if isinstance(engine, Mapping) else None
    if not isinstance(overrides, Mapping):
        return
    degrees = [int(t) for t in meta.get("tp_degrees") or [1]]
    pairs = {k: (config.raw[k], v) for k, v in overrides.items()
             if k in _SHARDED and isinstance(v, int) and v > 0
             and isinstance(config.raw.get(k), int)}
    if pairs and not any(all(_shard_of(k, have, v, t) for k, (have, v) in pairs.items())
                         for t in degrees):
        detail = ", ".join(f"{k} {have} vs {v}" for k, (have, v) in pairs.items())
        raise ValueError(f"{config.path}: dimensions do not match the profiled model in "
                         f"{meta_path} ({detail}; expected one GPU's share at tp in {degrees})")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_shapes(phase: str, rng: np.random.Generator, n: int, limits: Mapping[str, float],
                  ) -> list[StepShape]:
    """n step shapes of one phase spread (log-uniformly) over the tables' range."""
    t, s, kv = limits["max_tokens"], limits["max_decodes"], limits["max_kv"]
    out = []
    for _ in range(n):
        if phase == "decode":
            b = _log_uniform(rng, 1, s)
            out.append(StepShape(b, 0, b, 0, b * _log_uniform(rng, 16, kv)))
            continue
        seqs = 1 if phase == "mixed" or rng.random() < 0.7 else _log_uniform(rng, 2, 8)
        b = _log_uniform(rng, 1, min(s, t - 1)) if phase == "mixed" else 0
        tokens = max(_log_uniform(rng, 1, t - b), seqs)
        prefix = _log_uniform(rng, 16, kv) if seqs == 1 and rng.random() < 0.7 else 0
        each = [tokens // seqs + (1 if i < tokens % seqs else 0) for i in range(seqs)]
        pairs = sum(chunk_attn_pairs(prefix, m) for m in each)
        ctx = b * _log_uniform(rng, 16, kv) if b else 0
        out.append(StepShape(seqs + b, tokens, b, pairs, ctx))
    return out


def import_profile(cfg: ImportConfig) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The profile document, and per phase the errors of the chosen models against composed
    times on held-out shapes. Raises ValueError naming the file and the problem."""
    started = time.monotonic()
    folder = cfg.perf_dir
    meta = read_meta(folder)
    config = read_config(cfg.config)
    check_architecture(meta, config, folder / "meta.yaml")
    variant = str(meta.get("variant") or folder.name)
    try:
        dtypes = VariantDtypes.parse(variant)
    except ValueError as e:
        raise ValueError(f"{folder / 'meta.yaml'}: variant {variant!r}: {e}") from None
    chosen = tp_link(folder, cfg.link_gbps, cfg.link_latency_us, cfg.tp)
    link = Link(chosen.gbps * 1e9, chosen.latency_us * 1e-6)
    composer = StepComposer(folder, meta, config, cfg.tp, link, dtypes.activation_bytes,
                            cfg.decode_spread)
    if not config.is_moe and (folder / f"tp{cfg.tp}" / "moe.csv").exists():
        raise ValueError(f"{cfg.config}: a dense model (no num_experts) but "
                         f"{folder / f'tp{cfg.tp}' / 'moe.csv'} measures experts")
    builder = GridBuilder(composer)
    limits = {"max_tokens": max(builder.tokens), "max_decodes": max(builder.nd),
              "max_kv": max(builder.kv)}
    rng = np.random.default_rng(cfg.seed)
    grids = builder.models()
    points: list[dict[str, Any]] = []
    cost_models: dict[str, Any] = {}
    errors: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        key = f"packed.{phase}"
        shapes = sample_shapes(phase, rng, cfg.num_points, limits)
        times = [composer.compose(s) for s in shapes]
        held = sample_shapes(phase, rng, cfg.num_heldout, limits)
        truth = np.array([composer.compose(s) for s in held])
        fit = fit_key(key, shapes, times, seed=cfg.seed)
        ape_fit = np.abs(fit.model.predict_features(_features(held)) - truth) / truth
        grid = grids[key]
        ape_grid = np.abs(grid.predict_shapes(held) - truth) / truth
        # the max-of-linear form when it is within 2% and as good as the grid (to fit.py's
        # margin for a simpler candidate): it extrapolates by its physics and runs faster
        use_fit = (float(np.mean(ape_fit)) <= min(MAX_MAPE, float(np.mean(ape_grid))
                                                  + SIMPLER_MARGIN)
                   and (fit.cv["mape"] or 1.0) <= MAX_MAPE)
        cv = {"mape": float(np.mean(ape_fit if use_fit else ape_grid)),
              "max_ape": float(np.max(ape_fit if use_fit else ape_grid)),
              "n_points": len(held), "folds": None,
              "candidate": fit.candidate if use_fit else "grid",
              "against": "composed table times on held-out shapes",
              "parametric": {"candidate": fit.candidate, "cv_mape": fit.cv["mape"],
                             "heldout_mape": float(np.mean(ape_fit))}}
        entry = fit.to_json() if use_fit else {**grid.to_json(), "domain": fit.domain}
        entry["cv"] = cv
        cost_models[key] = entry
        errors[phase] = {"mape": cv["mape"], "max_ape": cv["max_ape"],
                         "parametric_mape": float(np.mean(ape_fit)), "grid": not use_fit}
        points += [{"id": f"{phase}-{i}", "model": key, **s._asdict(), "time_s": t,
                    "spread_s": 0.0, "repeats": 1} for i, (s, t) in enumerate(
                        zip(shapes, times, strict=True))]
    # vLLM has no padded layout: a padded (static) step of B rows costs what a packed step of
    # the same shape does
    cost_models["padded.prefill"] = cost_models["packed.prefill"]
    cost_models["padded.decode"] = cost_models["packed.decode"]
    memory, memory_source = memory_facts(folder, meta, config, cfg.tp, dtypes, cfg.gpu_memory_gb)
    doc = _document(cfg, meta, config, composer, chosen, memory, memory_source, cost_models,
                    points, errors, time.monotonic() - started)
    return doc, errors


def _features(shapes: list[StepShape]) -> np.ndarray:
    from batchsim.profiler.profiling.fit import feature_matrix

    return feature_matrix(shapes)


def _document(cfg: ImportConfig, meta: Mapping[str, Any], config: ModelArch,
              composer: StepComposer, link: LinkChoice, memory: dict[str, int],
              memory_source: str,
              cost_models: dict[str, Any], points: list[dict[str, Any]],
              errors: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    folder = cfg.perf_dir
    tables = {str(t.path.relative_to(folder)): t.sha256 for t in composer.tables}
    meta_sha = hashlib.sha256((folder / "meta.yaml").read_bytes()).hexdigest()
    config_sha = hashlib.sha256(cfg.config.read_bytes()).hexdigest()
    skew = composer.skew
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "source": "imported",
        "complete": True,
        "fingerprint": {
            "device": str(meta.get("gpu") or meta.get("hardware")), "device_type": "cuda",
            "driver": None, "torch": None, "transformers": None, "threads": None,
            "dtype": "bfloat16" if str(meta.get("variant", "")).startswith("bf16") else
            str(meta.get("variant")), "model": meta["model"],
            "config_hash": config_sha[:16], "created": str(meta.get("profiled_at")),
            "host": None, "engine": f"vLLM {meta.get('vllm_version')}",
            "tensor_parallel_size": cfg.tp,
            "imported": {"format": "llmservingsim", "perf_dir": str(folder),
                         "meta_sha256": meta_sha, "tables_sha256": tables,
                         "hardware": meta.get("hardware"), "variant": meta.get("variant"),
                         "vllm_version": meta.get("vllm_version"),
                         "cuda_version": meta.get("cuda_version"),
                         "profiler_version": meta.get("profiler_version"),
                         "architecture": meta.get("architecture"),
                         "architecture_sha256": meta.get("architecture_sha256"),
                         "engine_effective": meta.get("engine_effective"),
                         "measurement_iterations": meta.get("measurement_iterations"),
                         "skew_fit": skew.summary},
        },
        "run": {"grid": "imported", "seed": cfg.seed, "repeats": 1, "warmup": 0,
                "points_total": len(points), "elapsed_s": elapsed_s, "completed": True,
                "timing": "imported"},
        "model": {"name": meta["model"], "family": config.model_type,
                  "num_layers": config.num_layers, "hidden_size": config.hidden_size,
                  "num_attention_heads": config.num_heads, "num_kv_heads": config.num_kv_heads,
                  "head_dim": config.head_dim, "vocab_size": config.vocab_size,
                  "max_model_len": config.max_model_len, "num_params": config.num_params(),
                  "sliding_window": None, "weights": "random",
                  "num_experts": config.num_experts,
                  "experts_per_token": config.experts_per_token,
                  "tensor_parallel_size": cfg.tp},
        "memory": {**memory, "per_gpu": True, "source": memory_source},
        "cost_models": cost_models,
        "import_errors": errors,
        "assumptions": {
            "tp_allreduce": (f"ring all-reduce, 2 per layer, {link.gbps} GB/s link, "
                             f"{link.latency_us} us per hop, from {link.source}" if cfg.tp > 1
                             else "none (tp 1)"),
            "decode_spread": (f"decode contexts spread evenly over mean * (1 +- "
                              f"{cfg.decode_spread}) for the skew correction"),
            "skew_alpha": f"pooled alpha_default {skew.alpha_default} of meta.yaml",
            "moe": (f"{composer.moe_source}" + (f" divided by {cfg.tp} (experts sharded over "
                                                "the TP group)" if composer.moe_scaled else ""))
            if composer.moe_source else "dense model",
            "padded": "padded.* = packed.* (vLLM has no padded layout)",
            "memory": memory_source,
        },
        "points": points,
    }
