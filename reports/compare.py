"""The comparison report: several run folders side by side (e.g. the policies on one workload).

`batchsim report RUN_DIR RUN_DIR ... --out FILE`. Everything is drawn from each folder's files, so
runs made on different days (or with different profiles) can be put together; the configuration
table shows what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from batchsim.reports import figures
from batchsim.reports.fmt import FRACTIONS, change, percent
from batchsim.reports.html import Section, table, write_report
from batchsim.reports.run_report import (
    ANALYTIC_WARNING,
    LATENCIES,
    RunData,
    latency_cdfs,
    load_run,
    time_share,
)

# (metrics.json key, label) rows of the side-by-side table
SCALARS = (
    ("completed", "completed"), ("rejected", "rejected"), ("duration_s", "duration (s)"),
    ("request_throughput", "request throughput (req/s)"),
    ("output_token_throughput", "output throughput (tok/s)"),
    ("total_token_throughput", "total throughput (tok/s)"),
    ("gpu_busy_fraction", "GPU busy (not saturation)"),
    ("prefill_time_share", "prefill time share"),
    ("mean_batch_size", "mean batch size"), ("max_kv_utilization", "peak KV utilization"),
    ("preemptions", "preemptions"),
)


def unique_names(dirs: Sequence[Path]) -> list[str]:
    """Folder names, prefixed with their parent where two runs share a name."""
    names = [Path(d).name for d in dirs]
    return [f"{Path(d).parent.name}/{n}" if names.count(n) > 1 else n
            for d, n in zip(dirs, names, strict=True)]


def side_by_side(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per metric, one column per run (raw values; a fraction's row is marked
    `_fraction`, shown as a percentage by with_deltas)."""
    rows: list[dict[str, Any]] = [{"metric": "policy", **{r.name: r.config.get("policy")
                                                          for r in runs}}]
    rows += [{"metric": label, **{r.name: r.metrics.get(key) for r in runs},
              **({"_fraction": True} if key in FRACTIONS else {})}
             for key, label in SCALARS]
    for key, label in LATENCIES:
        for stat in ("mean", "median", "p99"):
            rows.append({"metric": f"{stat} {label} (ms)",
                         **{r.name: r.metrics[f"{key}_ms"][stat] for r in runs}})
    if any("goodput" in r.metrics for r in runs):
        rows.append({"metric": "goodput (req/s)", **{
            r.name: r.metrics["goodput"]["request_goodput"] if "goodput" in r.metrics else None
            for r in runs}})
    return rows


def columns_with_deltas(names: Sequence[str]) -> list[str]:
    """Each run's column, and after every run but the baseline (the first) its Δ column."""
    cols = [names[0]]
    for name in names[1:]:
        cols += [name, f"Δ {name}"]
    return cols


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def with_deltas(rows: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows with a `Δ <run>` cell: the change from the first run (reports.fmt.change); empty
    where a value is missing or not a number, or the baseline is zero. A fraction's row
    (`_fraction`) reads as percentages, its change in percentage points (`+18.3 pp`)."""
    out = []
    for row in rows:
        row = dict(row)
        fraction = row.pop("_fraction", False)
        base = row.get(names[0])
        for name in names[1:]:
            value = row.get(name)
            if not (_is_number(value) and _is_number(base)):
                row[f"Δ {name}"] = None
            elif fraction:
                row[f"Δ {name}"] = f"{(float(value) - float(base)) * 100:+.1f} pp"
            else:
                row[f"Δ {name}"] = change(float(value), float(base))
        if fraction:
            row.update({n: percent(row[n]) for n in names if _is_number(row.get(n))})
        out.append(row)
    return out


def differing_config(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """The settings whose values differ between runs (the rest is noise for a comparison)."""
    from batchsim.reports.run_report import config_rows

    per_run = [{row["setting"]: row["value"] for row in config_rows(r.config)
                if row["setting"] != "command"} for r in runs]
    keys = list(dict.fromkeys(k for d in per_run for k in d))
    return [{"setting": k, **{r.name: d.get(k) for r, d in zip(runs, per_run, strict=True)}}
            for k in keys if len({d.get(k) for d in per_run}) > 1]


def compare_sections(runs: Sequence[RunData]) -> list[Section]:
    names = [r.name for r in runs]
    cdfs: dict[str, dict[str, figures.Curve]] = {}
    for run in runs:
        for metric, curve in latency_cdfs(run).items():
            cdfs.setdefault(metric, {})[run.name] = curve
    bars = [
        figures.grouped_bar_figure(f"{label} (ms)", names, {
            stat: [r.metrics[f"{key}_ms"][stat] for r in runs] for stat in ("mean", "p99")},
            "ms", colors=figures.STAT_COLORS)
        for key, label in LATENCIES[:4]
    ]
    throughput = figures.grouped_bar_figure("Throughput", names, {
        "output tok/s": [r.metrics["output_token_throughput"] for r in runs],
        "total tok/s": [r.metrics["total_token_throughput"] for r in runs]}, "tokens/s",
        colors=figures.STAT_COLORS)
    shares = [time_share(r) for r in runs]
    share_fig = figures.grouped_bar_figure("Wall-clock time by step phase", names, {
        part: [s[part] / max(sum(s.values()), 1e-300) for s in shares]
        for part in ("prefill", "decode", "mixed", "idle")}, "share of the run",
        colors=figures.PHASE_COLORS, log=False)
    share_fig.update_layout(barmode="stack")
    diff = differing_config(runs)
    return [
        Section("Metrics", html=table(with_deltas(side_by_side(runs), names),
                                      ["metric", *columns_with_deltas(names)]),
                notes=[f"Δ: the change from the baseline, {names[0]} (the first run named)."]),
        Section("Latency distributions", [figures.cdf_figure(cdfs)]),
        Section("Latency and throughput", [*bars, throughput]),
        Section("Where the time goes", [share_fig]),
        Section("What differs between the runs",
                html=table(diff, ["setting", *names]) if diff else
                '<p class="note">The runs have the same configuration.</p>'),
    ]


def write_comparison(run_dirs: Sequence[Path], out: Path) -> Path:
    """Load each run folder and write one comparison page to out."""
    runs = [load_run(Path(d)) for d in run_dirs]
    for run, name in zip(runs, unique_names(run_dirs), strict=True):
        run.name = name
    warnings = ([ANALYTIC_WARNING] if any(r.metrics.get("profile_source") == "analytic"
                                          for r in runs) else [])
    subtitle = " · ".join(f"{r.name}: {r.config.get('policy')}" for r in runs)
    return write_report(out, f"batchsim comparison of {len(runs)} runs", compare_sections(runs),
                        subtitle, warnings)
