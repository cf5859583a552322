"""The summary table printed after a run, laid out like `vllm bench serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # tables are passed in; importing pandas here costs the CLI ~0.3 s

WIDTH = 50

# The summary's latency sections, in print order: (metrics.json key, title, short name); the
# --percentile-metrics names are the keys without `_ms`, as vllm bench serve spells them.
SECTIONS = (
    ("ttft_ms", "Time to First Token", "TTFT"),
    ("tpot_ms", "Time per Output Token (excl. 1st token)", "TPOT"),
    ("itl_ms", "Inter-token Latency", "ITL"),
    ("e2el_ms", "End-to-end Latency", "E2EL"),
    ("queue_ms", "Queueing Delay", "Queue"),
)
PERCENTILE_METRICS = tuple(key.removesuffix("_ms") for key, _, _ in SECTIONS)
# percentiles metrics.json holds (the median is p50)
PERCENTILES = {50: "median", 90: "p90", 95: "p95", 99: "p99"}


def parse_percentile_metrics(text: str) -> tuple[str, ...]:
    """`ttft,tpot,itl` (vllm bench serve's --percentile-metrics); ValueError naming the valid
    names."""
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in PERCENTILE_METRICS]
    if bad or not names:
        raise ValueError(f"--percentile-metrics: unknown metric {', '.join(bad) or '(none)'}; "
                         f"choose from {','.join(PERCENTILE_METRICS)}")
    return names


def parse_metric_percentiles(text: str) -> tuple[int, ...]:
    """`90,99` (vllm bench serve's --metric-percentiles); only the percentiles a run stores."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            value = float(part)
        except ValueError:
            value = float("nan")
        if value not in PERCENTILES:
            raise ValueError(f"--metric-percentiles: {part} is not one the run stores; choose "
                             f"from {','.join(map(str, PERCENTILES))}")
        out.append(int(value))
    if not out:
        raise ValueError("--metric-percentiles: give at least one, e.g. 99")
    return tuple(out)


def _title(text: str, fill: str = "-") -> str:
    return f"{text:{fill}^{WIDTH}}"


def _row(label: str, value: Any) -> str:
    if value is None:
        text = "n/a"
    elif isinstance(value, float):
        text = f"{value:.2f}"
    else:
        text = str(value)
    return f"{label:<40}{text:>10}"


def _share(value: Any) -> str | None:
    """A fraction as a percentage with two decimals: a 0.5B model's KV peak of 0.0029 reads
    0.29%, not 0.00."""
    return None if value is None else f"{100 * float(value):.2f}%"


def peak_concurrency(requests: pd.DataFrame) -> int:
    """Most requests in the server at once (arrived, not yet finished; a rejected request
    leaves when it arrives). At equal times a finish counts before an arrival."""
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    finish = requests["finish_s"].to_numpy(dtype=float)
    times = np.concatenate([np.where(np.isnan(finish), arrival, finish), arrival])
    # +-1 as int8, not float64: 2 bytes a request instead of 16 (a million-request run's peak
    # memory is here); the running sum is the same integer
    steps = np.repeat(np.array([-1, 1], dtype=np.int8), len(arrival))
    order = np.lexsort((steps, times))  # by time, then -1 before +1
    del times
    return int(max(np.cumsum(steps[order], dtype=np.int64).max(initial=0), 0))


def format_summary(metrics: dict[str, Any], policy: str,
                   requests: pd.DataFrame | None = None,
                   title: str = "Simulation Result",
                   percentile_metrics: tuple[str, ...] = PERCENTILE_METRICS,
                   metric_percentiles: tuple[int, ...] = (99,)) -> str:
    """requests: the run's requests table, for the token totals and the peak concurrency that
    `vllm bench serve` also prints. percentile_metrics / metric_percentiles: which latency
    sections and which percentiles (besides mean and median) to print, as vllm bench serve's
    --percentile-metrics / --metric-percentiles."""
    m = metrics
    lines = [
        _title(f" {title} ", "="),
        _row("Policy:", policy),
        _row("Profile source:", m["profile_source"]),
        _row("Successful requests:", m["completed"]),
        _row("Rejected requests:", m["rejected"]),
        _row("Benchmark duration (s):", m["duration_s"]),
    ]
    if requests is not None:
        # a mask per column: filtering the table would copy all of it (~100 MB at 1M requests)
        done = requests["status"] == "completed"
        lines += [
            _row("Total input tokens:", int(requests["input_tokens"][done].sum())),
            _row("Total generated tokens:", int(requests["output_tokens"][done].sum())),
            _row("Peak concurrent requests:", peak_concurrency(requests)),
        ]
    lines += [
        _row("Request throughput (req/s):", m["request_throughput"]),
        _row("Output token throughput (tok/s):", m["output_token_throughput"]),
        _row("Total Token throughput (tok/s):", m["total_token_throughput"]),
    ]
    if "goodput" in m:
        lines.append(_row("Request goodput (req/s):", m["goodput"]["request_goodput"]))
    for key, title, short in SECTIONS:
        if key.removesuffix("_ms") not in percentile_metrics:
            continue
        lines.append(_title(title))
        stats = m[key]
        lines.append(_row(f"Mean {short} (ms):", stats["mean"]))
        lines.append(_row(f"Median {short} (ms):", stats["median"]))
        for pct in metric_percentiles:
            if pct != 50:  # the median row already is p50
                lines.append(_row(f"P{pct} {short} (ms):", stats[PERCENTILES[pct]]))
    lines += [
        _title("Server"),
        # busy is not saturated: a continuous batch runs a step whenever anyone is waiting or
        # running, however small; the mean batch size says how full those steps were
        _row("GPU busy fraction (not saturation):", _share(m["gpu_busy_fraction"])),
        _row("Prefill time share:", _share(m["prefill_time_share"])),
        _row("Mean batch size:", m["mean_batch_size"]),
        _row("Max KV utilization:", _share(m["max_kv_utilization"])),
        _row("Preemptions:", m["preemptions"]),
    ]
    if "cpu_busy_fraction" in m:  # the hybrid policy's CPU path
        paths = m.get("prefill_path_requests") or {}
        lines += [
            _title("CPU path (hybrid)"),
            _row("CPU busy fraction:", _share(m["cpu_busy_fraction"])),
            _row("Prefills on GPU / CPU:", f"{paths.get('gpu', 0)} / {paths.get('cpu', 0)}"),
            _row("Mean TTFT, CPU-path requests (ms):",
                 (m.get("ttft_ms_cpu_path") or {}).get("mean")),
        ]
    lines.append("=" * WIDTH)
    if m["profile_source"] == "analytic":
        lines.append("note: analytic profile (calibrated, not measured); run `batchsim profile`")
    return "\n".join(lines)


def format_replicas(metrics: dict[str, Any], router: str) -> str:
    """One line per replica of a cluster run (metrics.json's `replicas` rows)."""
    head = f"{'replica':>7} {'requests':>8} {'req/s':>8} {'TTFT p99':>9} {'TPOT mean':>9} " \
           f"{'E2EL p99':>9} {'GPU busy':>8} {'KV peak':>7}"
    lines = [_title(f" Replicas (router {router}) "), head]

    def ms(value: Any) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    for row in metrics["replicas"]:
        lines.append(f"{row['replica']:>7} {row['num_requests']:>8} "
                     f"{row['request_throughput']:>8.2f} {ms(row['ttft_p99_ms']):>9} "
                     f"{ms(row['tpot_mean_ms']):>9} {ms(row['e2el_p99_ms']):>9} "
                     f"{row['gpu_busy_fraction']:>8.2f} {row['max_kv_utilization']:>7.2%}")
    lines.append("=" * WIDTH)
    return "\n".join(lines)
