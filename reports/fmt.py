"""Numbers and metric names as people read them, the same in every report.

`number` gives a value a precision that depends on its size (305,970 rather than 3.06e+05;
5.33 rather than 5.333333333333333); `metric_label` turns a metric's key into its name
(`e2el_ms.p99` → `E2EL p99 (ms)`).
"""

from __future__ import annotations

import math
from pathlib import Path

from batchsim.sim.shipped import is_shipped

_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL", "queue": "Queue"}
_PLAIN = {
    "request_throughput": "request throughput (req/s)",
    "output_token_throughput": "output throughput (tok/s)",
    "total_token_throughput": "total throughput (tok/s)",
    "gpu_busy_fraction": "GPU busy",
    "mean_batch_size": "mean batch size",
    "prefill_time_share": "prefill time share",
    "max_kv_utilization": "peak KV use",
    "preemptions": "preemptions",
    "completed": "completed",
    "duration_s": "duration (s)",
    "request_rate": "request rate (req/s)",
    "slo_attainment": "SLO attainment",
    "slo_attainment_at_max": "SLO attainment at max rate",
    "max_rate": "max rate (req/s)",
    "fails_at": "fails at (req/s)",
}


# metrics that are shares of a whole: shown as percentages (42.3%, not 0.423)
FRACTIONS = frozenset({"gpu_busy_fraction", "prefill_time_share", "max_kv_utilization",
                       "slo_attainment", "slo_attainment_at_max"})


def number(value: float | int) -> str:
    """A number for a table cell: integers with thousands separators, floats to a precision
    that suits their size (3 significant digits below 1, 2 decimals to 100, 1 to 10,000,
    none above)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "–" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    size = abs(value)
    if value == 0:
        return "0"
    if size >= 1e4:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:,.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def latency(ms: float) -> str:
    """A latency for a headline: `8.3 ms`, `2,521.2 ms`, and from 10 s on in seconds
    (`98.4 s`, not `98,433.4 ms`)."""
    return f"{ms:,.1f} ms" if abs(ms) < 1e4 else f"{ms / 1e3:,.1f} s"


def percent(fraction: float | None, signed: bool = False) -> str:
    """0.1484 → `14.8%` (None → `n/a`)."""
    if fraction is None:
        return "n/a"
    return f"{fraction:+.1%}" if signed else f"{fraction:.1%}"


def change(value: float, base: float) -> str | None:
    """value against base: `+12.5%` within a factor of two, `×3.41` or `÷20,870` beyond it
    (a 99.995% drop reads `÷20,870`, not `-100.0%`); None when base is zero or the signs differ."""
    if base == 0 or (value < 0) != (base < 0):
        return None
    ratio = value / base
    if 0.5 <= ratio <= 2:
        return f"{ratio - 1:+.1%}"
    if ratio == 0:
        return "−100%"
    return f"×{number(ratio)}" if ratio > 2 else f"÷{number(1 / ratio)}"


def metric_label(key: str) -> str:
    """`e2el_ms.p99` → `E2EL p99 (ms)`, `ttft_p99_ms` → `TTFT p99 (ms)`,
    `request_throughput` → `request throughput (req/s)`; unknown keys are returned as given."""
    if key in _PLAIN:
        return _PLAIN[key]
    if "." in key:  # metrics.json's nesting: ttft_ms.p99
        base, stat = key.split(".", 1)
        name = base.removesuffix("_ms")
        if name in _NAMES:
            return f"{_NAMES[name]} {stat} (ms)"
        return key
    parts = key.split("_")  # sweep.csv's flat columns: ttft_p99_ms
    if len(parts) == 3 and parts[0] in _NAMES and parts[2] == "ms":
        return f"{_NAMES[parts[0]]} {parts[1]} (ms)"
    return key


def display_path(text: str) -> str:
    """A shipped file (profile, the example trace) as `chat.jsonl (shipped)`: its install
    path says nothing to the reader; any other text as given."""
    if "/" in text and text.endswith((".json", ".jsonl")) and is_shipped(text):
        return f"{Path(text).name} (shipped)"
    return text
