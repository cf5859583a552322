"""`batchsim profile`: measure the grid on the real engines, fit cost models, write the profile.

The run builds the paged engine (and, when their points come up, the static engine and on CUDA a
CPU copy of the model), warms them up, measures the grid points in a seeded shuffled order and
saves the profile after every point (``"complete": false`` until the end). Interrupting it
(Ctrl-C) leaves a valid partial file; ``resume=True`` measures only what is missing. At the end it
searches the largest decode batch that fits, fits the cost models
(``batchsim.profiler.profiling.fit``) and writes
the finished profile in the schema of ``sim/profile.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchsim.profiler.profiling.capacity import measure_kv_copy, search_max_decode_batch
from batchsim.profiler.profiling.engines import CPU_DTYPE, ProfilingEngines, is_oom
from batchsim.profiler.profiling.grid import GRID_NAMES, KV_COPY, Grid, build_grid, grid_spec
from batchsim.profiler.profiling.host import fingerprint
from batchsim.profiler.profiling.measure import CLOCKS, Repeats
from batchsim.profiler.profiling.profile_file import (
    COMPLETE_KEY,
    check_fresh_target,
    check_writable,
    fit_document,
    load_partial,
    save_atomic,
)
from batchsim.sim.profile import SCHEMA, SCHEMA_VERSION

logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")

# progress(done, total, label): work done so far of this invocation's total, in the grid points'
# token-equivalents (GridPoint.cost_tokens); the caller draws it (the CLI: a bar on stderr)
ProgressFn = Callable[[float, float, str], None]


@dataclass(frozen=True)
class ProfileConfig:
    """One `batchsim profile` run. grid/seed/repeats None: the grid's defaults (or, on resume,
    the interrupted run's)."""

    model: str  # preset name, config.json path or checkpoint directory
    out: Path
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    dtype: str = "float32"
    grid: str | None = None  # quick | standard | full; default quick
    seed: int | None = None  # shuffles the grid order; default 0
    repeats: int | None = None  # timed steps per point
    resume: bool = False
    memory_cap_bytes: int | None = None  # CPU: KV pool (and OOM-search bound); None: auto
    threads: int | None = None  # torch intra-op CPU threads; None: torch's default (all cores)
    clock: str | None = None  # step time: "wall" (default), or "thread" (CPU time; cpu, 1 thread)

    def __post_init__(self) -> None:
        if self.grid is not None and self.grid not in GRID_NAMES:
            raise ValueError(f"unknown grid {self.grid!r}: choose one of {', '.join(GRID_NAMES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"unknown device {self.device!r}: use cpu or cuda")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.repeats is not None and self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")
        if self.memory_cap_bytes is not None and self.memory_cap_bytes <= 0:
            raise ValueError("the memory cap must be positive")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.clock is not None and self.clock not in CLOCKS:
            raise ValueError(f"unknown clock {self.clock!r}: choose one of {', '.join(CLOCKS)}")
        if self.clock == "thread" and (self.device != "cpu" or self.threads != 1):
            raise ValueError("--clock thread times steps by CPU time: it needs --device cpu and "
                             "--threads 1")

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"


class ProfileInterrupted(Exception):
    """The run was interrupted; the partial profile at `path` can be resumed."""

    def __init__(self, path: Path, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} grid points; partial profile saved "
                         f"to {path}")
        self.path, self.done, self.total = path, done, total


@dataclass(frozen=True)
class ProfileResult:
    path: Path
    document: dict[str, Any]
    elapsed_s: float  # this invocation's wall time


def run_profile(
    config: ProfileConfig, on_point: Callable[[int], None] | None = None,
    progress: ProgressFn | None = None,
) -> ProfileResult:
    """Measure, fit and write a profile; raise ProfileInterrupted on Ctrl-C (file stays valid).

    on_point(n) is called after the n-th point of this invocation has been saved (tests use it to
    interrupt a run); progress(done, total, label) after every point. config.threads sets
    torch's CPU thread count for the run (restored after).
    """
    import torch

    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, on_point, progress)
    finally:
        torch.set_num_threads(threads)


def _run(config: ProfileConfig, on_point: Callable[[int], None] | None,
         progress: ProgressFn | None) -> ProfileResult:
    from batchsim.profiler.engine.models import config_hash, resolve_model

    t0 = time.perf_counter()
    resolved = resolve_model(config.model)  # ValueError listing presets for an unknown model
    fp = fingerprint(resolved.name, config.device, config.dtype, config_hash(resolved.config))
    check_writable(config.out)
    run_opts = {"grid": config.grid, "seed": config.seed, "repeats": config.repeats,
                "timing": config.clock}
    if config.resume:
        doc = load_partial(config.out, fp, run_opts)
        logger.info("resuming %s: %d points measured", config.out, len(doc["measured"]))
    else:
        check_fresh_target(config.out)
        doc = _new_document(fp, config)
    logger.info("profiling %s on %s (%s), grid %s", resolved.name, fp["device"], config.dtype,
                doc["run"]["grid"])
    run = doc["run"]
    prior_s = float(run.get("elapsed_s", 0.0))

    def save() -> None:
        run["elapsed_s"] = prior_s + time.perf_counter() - t0
        save_atomic(config.out, doc)

    # The first save comes after the first measured point (check_writable has vetted the path):
    # a run that fails while loading the model leaves any existing file as it was.
    seed = int(run["seed"])
    max_len = resolved.max_model_len
    grid = build_grid(run["grid"], config.device_type, max_len, seed, run["repeats"])
    run["points_total"] = len(grid.points)
    engines = ProfilingEngines(config.model, config.device, config.dtype, seed,
                               config.memory_cap_bytes)
    spec = grid.spec
    oom_context = min(spec.oom_context, max_len - 2)
    max_search = 8192 if engines.cuda else 1024
    # on CPU the grid's engine also runs the max-batch search: room for it, within the cap
    search_blocks = max_search * -(-(oom_context + 1) // 16)
    engines.size_paged_pool(grid.points, 0 if engines.cuda else search_blocks)
    try:
        doc["model"] = _model_facts(engines.info)
        doc["model"]["weights"] = "checkpoint" if resolved.checkpoint_dir else "random"
        run["load_model_s"] = run.get("load_model_s") or engines.load_model_s
        _measure_grid(doc, grid, engines, save, on_point, progress)
        logger.info("grid measured (%.1f s so far)", time.perf_counter() - t0)
        if "limits" not in doc:
            doc["limits"] = engines.oom_search(lambda eng: search_max_decode_batch(
                eng, oom_context, start=max(spec.decode_batches), max_batch=max_search,
                is_oom=is_oom))
            save()
            logger.info("max decode batch searched (%.1f s so far)", time.perf_counter() - t0)
        _finish(doc, engines)
    except KeyboardInterrupt:
        if not doc["measured"] and not config.resume:
            raise  # nothing measured yet: nothing worth keeping, and nothing was written
        save()
        raise ProfileInterrupted(config.out, len(doc["measured"]), len(grid.points)) from None
    finally:
        engines.close()
    save()
    return ProfileResult(config.out, doc, time.perf_counter() - t0)


def _new_document(fp: dict[str, Any], config: ProfileConfig) -> dict[str, Any]:
    grid = config.grid or "quick"
    spec = grid_spec(grid, config.device_type)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "source": "measured",
        COMPLETE_KEY: False,
        "fingerprint": fp,
        "run": {
            "grid": grid,
            "seed": config.seed if config.seed is not None else 0,
            "repeats": config.repeats or spec.repeats,
            "warmup": spec.warmup,
            "min_point_s": spec.min_point_s,
            "max_repeats": max(spec.max_repeats, config.repeats or 0),
            "timing": config.clock or "wall",  # time_s: wall, or thread CPU time (measure.py)
            "cpu_dtype": CPU_DTYPE if config.device_type == "cuda" else None,  # cpu.* points
            "elapsed_s": 0.0,
        },
        "points": [],
        "kv_copy_points": [],
        "skipped": [],
        "measured": [],
    }


def _model_facts(info: Any) -> dict[str, Any]:
    keys = ("name", "family", "num_layers", "hidden_size", "num_attention_heads", "num_kv_heads",
            "head_dim", "vocab_size", "max_model_len", "num_params", "sliding_window")
    facts = asdict(info)
    return {k: facts[k] for k in keys}


def _measure_grid(doc: dict[str, Any], grid: Grid, engines: ProfilingEngines,
                  save: Callable[[], None], on_point: Callable[[int], None] | None,
                  progress: ProgressFn | None) -> None:
    run = doc["run"]
    done = set(doc["measured"])
    todo = [p for p in grid.points if p.id not in done]
    total = sum(p.cost_tokens for p in todo)
    label = f"profile {doc['fingerprint']['model']} ({run['grid']}, {len(todo)} points)"
    from batchsim.profiler.engine.kv_cache import OutOfBlocksError

    rng = np.random.default_rng(int(run["seed"]))
    reps = Repeats(run["warmup"], run["repeats"], run["min_point_s"], run["max_repeats"],
                   run["timing"])
    cost = 0.0
    for n, p in enumerate(todo, 1):
        try:
            if p.key == KV_COPY:
                rec = measure_kv_copy(engines.paged, p, reps, 1 << 31)
                doc["kv_copy_points"] += [rec] if rec else []
            else:
                runner = engines.runner(p.key, rng)
                doc["points"] += runner.measure(p, reps)
        except OutOfBlocksError:  # CUDA: the grid's pool is smaller than this point needs
            logger.warning("point %s does not fit the KV pool; skipped", p.id)
            doc["skipped"].append({"id": p.id, "reason": "kv_pool"})
        except (RuntimeError, MemoryError) as e:
            if not is_oom(e):
                raise
            engines.after_oom()
            logger.warning("point %s ran out of memory; skipped", p.id)
            doc["skipped"].append({"id": p.id, "reason": "oom"})
        doc["measured"].append(p.id)
        save()
        cost += p.cost_tokens
        if progress is not None:
            progress(cost, total, label)
        if on_point:
            on_point(n)


def _finish(doc: dict[str, Any], engines: ProfilingEngines) -> None:
    """Fit the cost models, add memory facts and overheads, mark the document complete."""
    run = doc["run"]
    fit_document(doc)
    doc["memory"] = engines.memory_facts(doc["points"])
    doc["host_overhead"] = _host_overhead(doc["points"])
    run["completed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc[COMPLETE_KEY] = True


def _host_overhead(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The smallest measured step: what a step costs with (almost) no work in it."""
    gpu_side = [p for p in points if not p["model"].startswith("cpu.")]
    smallest = min(gpu_side, key=lambda p: p["time_s"])
    gpu = smallest.get("gpu_s")
    return {
        "point": smallest["id"],
        "min_step_s": smallest["time_s"],
        "prep_s": smallest["prep_s"],
        "gpu_s": gpu,
        "host_s": smallest["time_s"] - gpu if gpu is not None else None,
        "median_prep_s": float(np.median([p["prep_s"] for p in gpu_side])),
    }


def default_out(model: str, device: str, dtype: str) -> Path:
    """profile-<model>-<device>-<dtype>.json in the current directory."""
    name = Path(model).name if ("/" in model or model.endswith(".json")) else model
    name = name.removesuffix(".json") or "model"
    return Path(f"profile-{name}-{device.split(':')[0]}-{dtype}.json")

