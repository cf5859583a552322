"""The Python API: `simulate` and `sweep` from a notebook or a script, with the CLI's checks.

    import batchsim
    run = batchsim.simulate("continuous", workload={"num_requests": 200, "request_rate": 10},
                            knobs={"max_num_seqs": 64})
    run.metrics["ttft_ms"]["p99"], run.requests.head(), run.report("run.html")
    table = batchsim.sweep(["static", "continuous"], request_rates=[2, 5, 10],
                           workload={"num_requests": 300})

Every input is checked as the command line checks it (same `ValueError` messages, raised before
anything runs), knob values included: a knob declared `int` refuses `64.5` and `True`. Nothing is
written unless asked (`SimulationResult.save`, `SimulationResult.report`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from batchsim.sim.run import RunOutput, RunSpec
    from batchsim.sim.workload.synthetic import SyntheticSpec


@dataclass
class SimulationResult:
    """One simulated run: its resolved configuration, summary metrics and tables."""

    config: dict[str, Any]
    metrics: dict[str, Any]  # as metrics.json: ttft_ms/tpot_ms/itl_ms/e2el_ms/queue_ms, throughputs
    requests: pd.DataFrame  # one row per request, as requests.csv
    steps: pd.DataFrame  # one row per executed step, as steps.csv
    output: RunOutput  # what the run folder writer needs

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write a run folder (config.json, metrics.json, requests.csv, steps.csv, itl_cdf.csv,
        report.html), as `batchsim simulate --out` does."""
        from batchsim.reports.run_report import write_into_run
        from batchsim.sim.run import check_out_dir, write_run

        path = Path(out)
        check_out_dir(path, force)
        write_run(path, self.output, extra={"command": "batchsim.simulate (Python API)"},
                  writers=(write_into_run,))
        return path

    def report(self, path: str | Path, force: bool = False) -> Path:
        """Write the run's HTML report (one self-contained file) to path."""
        import tempfile

        from batchsim.reports.run_report import REPORT_FILE

        target = Path(path)
        if target.exists() and not force:
            raise ValueError(f"{target} already exists: choose another path or pass force=True")
        with tempfile.TemporaryDirectory(prefix=".batchsim-report-", dir=target.parent
                                         if target.parent.exists() else None) as tmp:
            folder = self.save(Path(tmp) / "run")
            (folder / REPORT_FILE).replace(target)
        return target


def _synthetic(workload: Mapping[str, Any] | SyntheticSpec | None) -> SyntheticSpec:
    from batchsim.sim.workload.synthetic import SyntheticSpec

    if workload is None:
        return SyntheticSpec()
    if isinstance(workload, SyntheticSpec):
        return workload
    if not isinstance(workload, Mapping):
        raise ValueError(f"workload must be a dict of synthetic parameters or a SyntheticSpec, "
                         f"got {type(workload).__name__}")
    fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
    unknown = sorted(set(workload) - fields)
    if unknown:
        raise ValueError(f"unknown workload parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(fields))}")
    return SyntheticSpec(**dict(workload))


def _spec(policy: str, *, trace: str | Path | None, workload: Any, knobs: Mapping[str, Any] | None,
          profile: str | Path | None, seed: int, goodput: Mapping[str, float] | None,
          jitter: bool, cpu_profile: str | Path | None, kv_copy_gbps: float | None,
          reject_too_long: bool, time_scale: float,
          max_concurrency: int | None = None) -> RunSpec:
    from batchsim.sim.metrics import parse_goodput
    from batchsim.sim.run import RunSpec

    if trace is not None and workload is not None:
        raise ValueError("give either trace= or workload=, not both")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    slo = None
    if goodput:
        # the command line's parser, so the same checks and messages: {"ttft": 500} = ttft:500
        bad = {k: v for k, v in goodput.items()
               if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)}
        if bad:
            raise ValueError(f"goodput takes {{'ttft'|'tpot'|'e2el': positive ms}}, got {bad}")
        slo = parse_goodput([f"{k}:{v}" for k, v in goodput.items()])
    return RunSpec(
        policy=policy,
        knobs=dict(knobs or {}),
        profile=None if profile is None else str(profile),
        trace=None if trace is None else str(trace),
        time_scale=time_scale,
        synthetic=None if trace is not None else _synthetic(workload),
        seed=seed,
        reject_too_long=reject_too_long,
        goodput=slo,
        cpu_profile=None if cpu_profile is None else str(cpu_profile),
        kv_copy_gbps=kv_copy_gbps,
        step_jitter=jitter,
        max_concurrency=max_concurrency,
    )


def simulate(policy: str = "continuous", *, trace: str | Path | None = None,
             workload: Mapping[str, Any] | SyntheticSpec | None = None,
             knobs: Mapping[str, Any] | None = None, profile: str | Path | None = None,
             seed: int = 0, goodput: Mapping[str, float] | None = None, jitter: bool = False,
             cpu_profile: str | Path | None = None, kv_copy_gbps: float | None = None,
             reject_too_long: bool = False, time_scale: float = 1.0,
             max_concurrency: int | None = None) -> SimulationResult:
    """Simulate one policy on one workload, as `batchsim simulate` does, and return the result.

    trace: a trace file in any format `--trace` reads; workload: synthetic parameters
    (`num_requests`, `request_rate`, `burstiness`, `input_len`, `output_len`, `range_ratio`,
    `lengths_from`) when there is no trace; knobs: the policy's knobs by name (values typed as the
    policy's config declares them, or strings as on the command line); profile: a profile file
    (default: the shipped default profile); goodput: SLOs in ms, e.g. {"ttft": 500};
    max_concurrency: at most this many requests outstanding (closed-loop clients, as
    `--max-concurrency`).
    """
    from batchsim.sim.run import prepare
    from batchsim.sim.run import simulate as run_simulation

    spec = _spec(policy, trace=trace, workload=workload, knobs=knobs, profile=profile, seed=seed,
                 goodput=goodput, jitter=jitter, cpu_profile=cpu_profile,
                 kv_copy_gbps=kv_copy_gbps, reject_too_long=reject_too_long,
                 time_scale=time_scale, max_concurrency=max_concurrency)
    from batchsim.args import with_cpu_path_defaults

    # hybrid on a GPU profile without CPU-path inputs: the same defaults as the command line,
    # recorded in config["assumptions"]
    spec, assumed = with_cpu_path_defaults(spec, [policy])
    output = run_simulation(prepare(spec))
    if assumed:
        output.config["assumptions"] = assumed
    return SimulationResult(output.config, output.metrics, output.requests, output.steps, output)


def sweep(policies: str | Sequence[str], *, vary: Mapping[str, Sequence[Any]] | None = None,
          request_rates: Sequence[float] | None = None, trace: str | Path | None = None,
          workload: Mapping[str, Any] | SyntheticSpec | None = None,
          knobs: Mapping[str, Any] | None = None, profile: str | Path | None = None,
          seed: int = 0, goodput: Mapping[str, float] | None = None, jitter: bool = False,
          workers: int = 1, max_concurrency: int | None = None, backend: str = "local",
          address: str | None = None) -> pd.DataFrame:
    """Every policy × every combination of the varied knob values × every request rate, as
    `batchsim sweep` runs them; returns the sweep table (one row per point, the columns of
    sweep.csv). workers: processes (1 = this one, the default in a notebook);
    max_concurrency: closed-loop clients at every point, as in `simulate`. backend "ray":
    the points as Ray tasks (the sweep extra), on the cluster at `address` (`auto`,
    `HOST:PORT`, `ray://HOST:PORT`; None: the connected one, else RAY_ADDRESS, else a new local
    instance), as `batchsim sweep --backend ray --address` does; the same table."""
    from batchsim.sim.sweep.sweep import BACKENDS, SweepSpec, check, expand, run_sweep

    names = [policies] if isinstance(policies, str) else list(policies)
    if not names:
        raise ValueError("sweep needs at least one policy")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "ray":
        from batchsim.extras import require_sweep_extra

        require_sweep_extra()
    elif address is not None:
        raise ValueError("address is the Ray cluster's: give it with backend='ray'")
    rates = tuple(float(r) for r in request_rates or ())
    if any(not r > 0 for r in rates):
        raise ValueError(f"request rates must be positive (or inf), got {list(rates)}")
    # Varied values travel as strings, as on the command line, so the table's columns and the
    # configurations' labels read the same as `batchsim sweep --vary`.
    varied = {k: [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
              for k, values in (vary or {}).items()}
    empty = [k for k, values in varied.items() if not values]
    if empty:
        raise ValueError(f"vary: no values for {', '.join(empty)}")
    base = _spec(names[0], trace=trace, workload=workload, knobs=knobs, profile=profile,
                 seed=seed, goodput=goodput, jitter=jitter, cpu_profile=None, kv_copy_gbps=None,
                 reject_too_long=False, time_scale=1.0, max_concurrency=max_concurrency)
    spec = SweepSpec(tuple(expand(names, varied)), rates, base)
    return run_sweep(spec, workers, points=check(spec), backend=backend,  # type: ignore[arg-type]
                     address=address)
