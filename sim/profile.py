"""Profile files: the versioned JSON contract between the profiler and the simulator.

Schema (schema_version 1), written by `batchsim profile` (profiler/profile.py), by
profiler/analytic.py and by `batchsim profile --import` (profiler/imported/). The simulator
reads the keys marked *; the rest document how the numbers were obtained and are shown in reports.

    schema *          "batchsim.profile"
    schema_version *  1
    source *          "measured" | "analytic" | "imported"
    complete *        false while `batchsim profile` is still running or was interrupted: refused
    fingerprint       device, device_type, driver, torch, threads, transformers, dtype, model,
                      config_hash, created (ISO 8601), host
    run               grid, seed, repeats, warmup, min_point_s, max_repeats, timing (wall|thread),
                      elapsed_s, points_total, load_model_s, completed, refitted (true if refitted)
    model *           name, family, num_layers, hidden_size, num_attention_heads, num_kv_heads,
                      head_dim, vocab_size, max_model_len, num_params, sliding_window,
                      weights (random | checkpoint)
    memory *          total_bytes, weight_bytes, kv_bytes_per_token, activation_reserve_bytes
    cost_models *     {key: {terms: [{feature: coef}], curve (optional): {feature, knots, slopes},
                             cv: {mape, max_ape, folds, n_points, candidate, train_mape},
                             domain: {feature: [min, max]}}}  keys: sim.cost_model.REQUIRED_MODELS
                      (+ optional "cpu.packed.prefill"); forms in sim/cost_model.py; or
                      {kind: "grid", grid_terms: [{coordinates, knots, values_s}], cv, domain}
                      (sim/grid_cost_model.py)
    kv_copy           optional {bytes_per_s, latency_s, mape}: CPU->GPU KV transfer (hybrid policy)
    points            raw measurements [{id, model: key, <StepShape fields>, time_s, spread_s,
                      repeats, wall_s, thread_s, gpu_s, prep_s, samples_s}]; samples_s is read
                      (optional) for step jitter: sim.jitter.repeat_ratios
    kv_copy_points    raw KV copy measurements; skipped: points that did not fit; measured: ids
    host_overhead     the smallest step measured and its preparation / host / GPU split
    limits            optional {max_batch_size, reference_context, bound, oom: [...]}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsim.policies.base import Device, Phase, StepShape
from batchsim.policies.kv import MemoryFacts
from batchsim.policies.paths import ExecutionPath, KVTransfer
from batchsim.sim.checks import integer, number
from batchsim.sim.cost_model import REQUIRED_MODELS, CostModel, phase_key
from batchsim.sim.errors import UsageError
from batchsim.sim.grid_cost_model import GridCostModel
from batchsim.sim.jitter import repeat_ratios
from batchsim.sim.shipped import default_profile, resolve

# Either form: both answer predict, predict_decode_run and decode_run_array.
StepCostModel = CostModel | GridCostModel
SOURCES = ("measured", "analytic", "imported")

SCHEMA = "batchsim.profile"
SCHEMA_VERSION = 1

# The default profile (sim.shipped.default_profile): the calibrated analytic qwen2.5-0.5b on
# an H100 under vLLM (docs/ANALYTIC.md).


class ProfileError(UsageError):
    """A profile file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Profile:
    path: str
    source: str  # one of SOURCES
    fingerprint: dict[str, Any]
    model: dict[str, Any]
    memory: MemoryFacts
    cost_models: dict[str, StepCostModel]
    cv: dict[str, dict[str, Any]]
    kv_copy: dict[str, float] | None
    digest: str  # sha256 of the file bytes, first 12 hex digits
    # per cost model: sorted repeat ratios sample / median of the raw points (sim.jitter)
    jitter_ratios: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _by_shape: dict[tuple[str, str, str], StepCostModel] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def max_model_len(self) -> int:
        return int(self.model["max_model_len"])

    @property
    def vllm_version(self) -> str | None:
        """The vLLM release the profile's step times were measured with, when it says (an
        imported profile's `fingerprint.imported.vllm_version`, or `fingerprint.vllm_version`):
        the continuous policy then takes that release's scheduling defaults."""
        imported = self.fingerprint.get("imported")
        found = self.fingerprint.get("vllm_version") or (
            imported.get("vllm_version") if isinstance(imported, dict) else None)
        return str(found) if found else None

    def policy_defaults(self) -> dict[str, str]:
        """Knob values this profile implies for policies that have the knob (under --set)."""
        version = self.vllm_version
        return {"vllm_version": version} if version else {}

    def cost_model(self, layout: str, phase: str, device: str = "gpu") -> StepCostModel:
        # Called once per simulated step: cache by the (layout, phase, device) tuple.
        found = self._by_shape.get((layout, phase, device))
        if found is None:
            key = phase_key(layout, phase, device)
            if key not in self.cost_models:
                raise ProfileError(f"{self.path}: profile has no cost model {key!r}")
            found = self._by_shape[(layout, phase, device)] = self.cost_models[key]
        return found

    def summary(self) -> dict[str, Any]:
        """Identity of the profile for run outputs."""
        return {
            "path": self.path,
            "source": self.source,
            "digest": self.digest,
            "device": self.fingerprint.get("device"),
            "model": self.model.get("name"),
            "dtype": self.fingerprint.get("dtype"),
        }


def load_profile(path: str | Path | None = None) -> Profile:
    """Read and validate a profile file; raise ProfileError naming the file and the problem."""
    # a bare name that is not a file here names a shipped profile (sim.shipped)
    file = resolve(path, "profiles") if path is not None else default_profile()
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise ProfileError(f"{file}: cannot read profile: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ProfileError(f"{file}: not a valid profile (corrupted JSON: {e})") from None
    try:
        return _parse(str(file), data, hashlib.sha256(raw).hexdigest()[:12])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        if isinstance(e, ProfileError):
            raise
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise ProfileError(f"{file}: not a valid profile ({detail})") from None


def _parse(path: str, data: Any, digest: str) -> Profile:
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
        raise ProfileError(f"{path}: not a batchsim profile (no \"schema\": \"{SCHEMA}\")")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProfileError(
            f"{path}: profile schema_version {version!r} is not supported (this batchsim reads "
            f"{SCHEMA_VERSION}); re-run `batchsim profile` to regenerate it"
        )
    # An interrupted `batchsim profile` run leaves "complete": false.
    if data.get("complete") is False:
        raise ProfileError(
            f"{path}: profile is incomplete (an interrupted `batchsim profile` run); finish it "
            f"with `batchsim profile --model MODEL --out {path} --resume`"
        )
    source = data["source"]
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    mem = _section(data, "memory")
    memory = MemoryFacts(
        total_bytes=_whole(mem, "memory", "total_bytes", 1, _MAX_BYTES),
        weight_bytes=_whole(mem, "memory", "weight_bytes", 0, _MAX_BYTES),
        kv_bytes_per_token=_whole(mem, "memory", "kv_bytes_per_token", 1, 2**40),
        activation_reserve_bytes=_whole(mem, "memory", "activation_reserve_bytes", 0,
                                        _MAX_BYTES, default=0),
    )
    models: dict[str, StepCostModel] = {}
    cv: dict[str, dict[str, Any]] = {}
    for key, entry in _section(data, "cost_models").items():
        try:
            if not isinstance(entry, Mapping):
                raise ValueError(f"must be an object, got {type(entry).__name__}")
            kind = entry.get("kind", "linear")
            if kind not in ("linear", "grid"):
                raise ValueError(f"unknown kind {kind!r}; known: linear, grid")
            models[key] = (GridCostModel.from_json(entry) if kind == "grid"
                           else CostModel.from_json(entry))
            _check_costs(key, models[key])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"cost model {key!r}: {e}") from None
        cv_entry = entry.get("cv")
        cv[key] = dict(cv_entry) if isinstance(cv_entry, Mapping) else {}
    missing = [k for k in REQUIRED_MODELS if k not in models]
    if missing:
        raise ValueError(f"cost_models lacks {missing}")
    model = dict(_section(data, "model"))
    model["max_model_len"] = _whole(model, "model", "max_model_len", 1, _MAX_CONTEXT)
    kv_copy = data.get("kv_copy")
    if kv_copy:
        copy = _section(data, "kv_copy")
        number("kv_copy.bytes_per_s", copy.get("bytes_per_s"), 0, 1e15, low_open=True)
        number("kv_copy.latency_s", copy.get("latency_s", 0.0), 0, 1e3)
    for name in ("fingerprint", "points"):
        if data.get(name) is not None and not isinstance(data[name], dict if name ==
                                                         "fingerprint" else list):
            raise ValueError(f"{name} must be an {'object' if name == 'fingerprint' else 'list'}")
    return Profile(
        path=path,
        source=source,
        fingerprint=dict(data.get("fingerprint") or {}),
        model=model,
        memory=memory,
        cost_models=models,
        cv=cv,
        kv_copy=dict(kv_copy) if kv_copy else None,
        digest=digest,
        jitter_ratios=repeat_ratios(data.get("points") or ()),
    )


_MAX_BYTES = 2**50  # 1 PiB: more device memory than any accelerator has
_MAX_CONTEXT = 2**30  # tokens of context: beyond any model


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data[name]
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object, got {type(value).__name__}")
    return value


def _whole(section: Mapping[str, Any], where: str, key: str, low: int, high: int,
           default: int | None = None) -> int:
    """A whole number from [low, high] (an integral float such as 1e9 is accepted)."""
    if key not in section and default is not None:
        return default
    value = section[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return integer(f"{where}.{key}", value, low, high)
    except ValueError as e:
        raise ValueError(str(e)) from None


def _check_costs(key: str, model: StepCostModel) -> None:
    """A step must cost time: a model that prices the smallest step of its kind at zero (or
    less) would let the simulated clock stand still."""
    phase = key.rsplit(".", 1)[-1]
    smallest = {"prefill": StepShape(1, 1, 0, 1, 0), "decode": StepShape(1, 0, 1, 0, 1),
                "mixed": StepShape(2, 1, 1, 1, 1)}.get(phase)
    if smallest is not None and not model.predict(smallest) > 0:
        raise ValueError("prices the smallest step at 0 s: every step must cost time (a "
                         "positive constant or per-token coefficient)")


# -- the hybrid policy's two paths -----------------------------------------------------------------


@dataclass(frozen=True)
class CpuCostModel:
    """What the CPU path of a hybrid run costs: its prefill cost model, the CPU->GPU KV copy,
    and where each came from."""

    prefill: StepCostModel
    kv_copy_bytes_per_s: float
    kv_copy_latency_s: float
    source: dict[str, Any]  # where each part came from, for the run's config.json


def cpu_cost_model(profile: Profile, cpu_profile: Profile | None = None,
                   kv_copy_gbps: float | None = None, kv_copy_latency_us: float = 0.0
                   ) -> CpuCostModel:
    """Compose the CPU path: the prefill model from `cpu_profile`'s packed.prefill (a CPU
    profile of the same model, standing in when the main profile was not measured on CUDA) or
    from the profile's own cpu.packed.prefill; the KV copy measured in the profile (`kv_copy`)
    unless an assumed bandwidth is given. Raises ValueError saying what is missing."""
    if cpu_profile is not None:
        if cpu_profile.model.get("name") != profile.model.get("name"):
            raise ValueError(
                f"{cpu_profile.path} profiles {cpu_profile.model.get('name')!r} but "
                f"{profile.path} profiles {profile.model.get('name')!r}: the CPU path must run "
                "the same model")
        prefill = cpu_profile.cost_model("packed", "prefill")
        prefill_from = f"{cpu_profile.path} packed.prefill ({cpu_profile.source}, "
        prefill_from += f"{cpu_profile.fingerprint.get('device')})"
    elif "cpu.packed.prefill" in profile.cost_models:
        prefill = profile.cost_models["cpu.packed.prefill"]
        prefill_from = f"{profile.path} cpu.packed.prefill ({profile.source})"
    else:
        raise ValueError(
            f"{profile.path} has no CPU prefill model (cpu.packed.prefill is measured by "
            "`batchsim profile` on CUDA): give --cpu-profile FILE, a CPU profile of the same "
            "model")
    if kv_copy_gbps is not None:
        if kv_copy_gbps <= 0 or kv_copy_latency_us < 0:
            raise ValueError("--kv-copy-gbps must be positive and the latency non-negative")
        bps, latency = kv_copy_gbps * 1e9, kv_copy_latency_us * 1e-6
        copy_from = f"assumed: {kv_copy_gbps} GB/s, {kv_copy_latency_us} us per hand-off"
    elif profile.kv_copy is not None:
        bps = float(profile.kv_copy["bytes_per_s"])
        latency = float(profile.kv_copy.get("latency_s", 0.0))
        copy_from = f"measured: {profile.path} kv_copy"
    else:
        raise ValueError(
            f"{profile.path} has no measured CPU->GPU KV copy (kv_copy): give --kv-copy-gbps "
            "GB/s, which the run records as an assumption")
    return CpuCostModel(prefill, bps, latency, {"prefill": prefill_from, "kv_copy": copy_from,
                                                "kv_copy_bytes_per_s": bps,
                                                "kv_copy_latency_s": latency})


def execution_paths(profile: Profile, cpu: CpuCostModel | None = None
                    ) -> dict[Device, ExecutionPath]:
    """The GPU path (the profile's packed cost models) and, if given, the CPU path (prefill + KV
    copy into the GPU pool, at the GPU profile's KV bytes per token). Every policy gets its
    paths; one with a CPU path needs all three packed models, others get those there are."""
    phases: list[Phase] = [p for p in ("prefill", "decode", "mixed")
              if cpu is not None or phase_key("packed", p, "gpu") in profile.cost_models]
    gpu = ExecutionPath("gpu", {phase: profile.cost_model("packed", phase).predict
                                for phase in phases})
    paths: dict[Device, ExecutionPath] = {"gpu": gpu}
    if cpu is not None:
        transfer = KVTransfer(profile.memory.kv_bytes_per_token, cpu.kv_copy_bytes_per_s,
                              cpu.kv_copy_latency_s)
        paths["cpu"] = ExecutionPath("cpu", {"prefill": cpu.prefill.predict}, transfer)
    return paths
