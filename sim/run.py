"""One simulation run, from inputs to a run folder.

Everything that can be wrong with the inputs is checked in `prepare` before anything is
written; the run folder is assembled in a temporary sibling directory and renamed into place,
so a failed or interrupted run leaves no half-written folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from policies.base import Policy
from policies.registry import get_policy, make_config
from sim.metrics import summarize
from sim.profile import Profile, load_profile
from sim.recorder import Recorder
from sim.simulator import Simulator
from sim.workload import SyntheticSpec, Workload, WorkloadError, load_trace, synthesize


@dataclass(frozen=True)
class RunSpec:
    policy: str
    knobs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    profile: str | None = None  # None: the shipped default profile
    trace: str | None = None  # None: synthetic
    time_scale: float = 1.0
    synthetic: SyntheticSpec | None = None
    seed: int = 0
    reject_too_long: bool = False
    goodput: Mapping[str, float] | None = None


@dataclass
class Prepared:
    spec: RunSpec
    profile: Profile
    policy: Policy
    workload: Workload
    too_long: set[int]


@dataclass
class RunOutput:
    config: dict[str, Any]
    metrics: dict[str, Any]
    requests: pd.DataFrame
    steps: pd.DataFrame
    recorder: Recorder


def prepare(spec: RunSpec) -> Prepared:
    """Load and check every input; raise ValueError/KeyError with a one-line message."""
    policy_class = get_policy(spec.policy)
    config = make_config(spec.policy, dict(spec.knobs))
    profile = load_profile(spec.profile)
    if spec.trace is not None:
        workload = load_trace(spec.trace, spec.time_scale)
    else:
        rng = np.random.default_rng(spec.seed)
        workload = synthesize(spec.synthetic or SyntheticSpec(), rng)
    policy = policy_class(config, profile.memory, profile.max_model_len)
    total = workload.input_tokens + workload.output_tokens
    over = np.flatnonzero(total > profile.max_model_len)
    if len(over) and not spec.reject_too_long:
        i = int(over[0])
        raise WorkloadError(
            f"{workload.where(i)}: request of {int(workload.input_tokens[i])} input + "
            f"{int(workload.output_tokens[i])} output tokens exceeds the model's context "
            f"({profile.max_model_len}); pass --reject-too-long to reject such requests"
        )
    keep = total <= profile.max_model_len
    if keep.any():
        policy.check_workload(int(workload.input_tokens[keep].max()), int(total[keep].max()))
    return Prepared(spec, profile, policy, workload, set(over.tolist()))


def simulate(prep: Prepared, progress: Callable[[int], None] | None = None,
             fast_forward: bool = True) -> RunOutput:
    sim = Simulator(prep.profile, prep.policy, prep.workload, prep.too_long,
                    fast_forward=fast_forward, progress=progress)
    result = sim.run()
    requests = result.recorder.requests_table(result.requests)
    steps = result.recorder.steps_table()
    metrics = summarize(result.recorder, requests, steps, prep.policy.kv_capacity_blocks,
                        prep.profile.source, prep.spec.goodput)
    return RunOutput(resolved_config(prep), metrics, requests, steps, result.recorder)


def resolved_config(prep: Prepared) -> dict[str, Any]:
    spec = prep.spec
    workload: dict[str, Any] = {"source": prep.workload.source,
                                "num_requests": len(prep.workload)}
    if spec.trace is not None:
        workload["time_scale"] = spec.time_scale
    else:
        workload["synthetic"] = dataclasses.asdict(spec.synthetic or SyntheticSpec())
    return {
        "policy": spec.policy,
        "knobs": dataclasses.asdict(prep.policy.config),  # type: ignore[call-overload]
        "profile": prep.profile.summary(),
        "workload": workload,
        "seed": spec.seed,
        "reject_too_long": spec.reject_too_long,
        "goodput": dict(spec.goodput) if spec.goodput else None,
        "kv_capacity_blocks": prep.policy.kv_capacity_blocks,
        "kv_block_size": prep.policy.kv_block_size,
    }


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ValueError(f"{out} already exists: choose another --out or pass --force")
    if not out.parent.exists():
        out.parent.mkdir(parents=True)


def write_run(out: Path, run: RunOutput, extra: Mapping[str, Any] | None = None,
              writers: tuple[Callable[[Path, RunOutput], None], ...] = ()) -> None:
    """Write config.json, metrics.json, requests.csv, steps.csv (+ writers' files) atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config = {**run.config, **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(run.metrics, indent=2) + "\n")
        run.requests.to_csv(tmp / "requests.csv", index=False, float_format="%.6f")
        run.steps.to_csv(tmp / "steps.csv", index=False, float_format="%.6f")
        for writer in writers:
            writer(tmp, run)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
