"""Value checks shared by the command's inputs: finite numbers in the range where they mean
something, with the range in the message.

NaN compares false with everything, so `x <= 0` lets it through and a NaN time scale or SLO
silently gives wrong numbers; ±inf and absurd magnitudes overflow the clock (at 1e17 s a
millisecond step no longer advances a float64 clock). Every user-given number passes
`number()` once, where it enters (specs' __post_init__, option parsers), so the rest of the
code may assume finite, bounded values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from batchsim.sim.errors import UsageError

# Arrival times beyond this make no sense and defeat float64 step arithmetic (about 31.7 years)
MAX_ARRIVAL_S = 1e9
MAX_TIME_SCALE = 1e6
MAX_NUM_REQUESTS = 10_000_000
MAX_RATE = 1e9  # req/s, when finite
MAX_SLO_MS = 1e9


def number(name: str, value: Any, low: float | None = None, high: float | None = None,
           low_open: bool = False, allow_inf: bool = False) -> float:
    """`value` as a float, finite (or +inf if allow_inf) and within [low, high] (low excluded
    with low_open); ValueError naming `name` and the valid range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if isinstance(value, int) and abs(value) > 1e300:
        raise UsageError(f"{name} is too large")
    x = float(value)
    if math.isnan(x) or (math.isinf(x) and not (allow_inf and x > 0)):
        raise UsageError(f"{name} must be a finite number{' or inf' if allow_inf else ''}, "
                         f"got {x}")
    if math.isinf(x):
        return x
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and x > high
    if too_low or too_high:
        raise UsageError(f"{name} must be {_range(low, high, low_open, allow_inf)}, got {x:g}")
    return x


def integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within [low, high]; ValueError with the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"{value}" if abs(value) < 10**30 else "a huge number"
        raise UsageError(f"{name} must be {_range(low, high, False, False)}, got {shown}")
    return value


def _bound(x: float) -> str:
    """A range's end: an integer in full up to 10^12 (2147483648, not 2.14748e+09)."""
    return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e12 else f"{x:g}"


def _range(low: float | None, high: float | None, low_open: bool, allow_inf: bool) -> str:
    top = "inf" if allow_inf else (_bound(high) if high is not None else None)
    if low is not None and top is not None:
        return f"in {'(' if low_open else '['}{_bound(low)}, {top}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {_bound(low)}"
    return f"<= {top}"


# -- policy knobs: the range a real server accepts (or that can run at all), per knob name --

KNOB_LIMITS: dict[str, tuple[float, float]] = {
    # vLLM: max_num_seqs and max_num_batched_tokens are per-step limits; no engine runs more
    # than 2**16 sequences or 2**24 tokens in one step
    "max_num_seqs": (1, 2**16),
    "max_num_batched_tokens": (1, 2**24),
    "long_prefill_token_threshold": (0, 2**24),
    # vLLM's --block-size choices go up to 256; the paged engine allows any size up to this
    "block_size": (1, 1024),
    "gpu_memory_utilization": (0, 1),  # (0, 1]: checked by the config itself
    # Triton: batch sizes are int32; a batch beyond 2**16 rows fits no GPU
    "max_batch_size": (1, 2**16),
    # delays and timeouts: at most one hour
    "max_queue_delay_microseconds": (0, 3_600_000_000),
    "default_timeout_microseconds": (0, 3_600_000_000),
    "max_queue_delay_ms": (0, 3_600_000),
    "max_batch_wait_ms": (0, 3_600_000),  # or inf (KNOBS_ALLOW_INF)
    # Triton's priority levels index a queue each: more than 1024 is no real configuration
    "priority_levels": (0, 1024),
    "default_priority_level": (0, 1024),
    "max_queue_size": (0, 2**31 - 1),
    "cpu_max_prompt_tokens": (-1, 2**24),
    "hold_max_batch": (-1, 2**16),
    "arrival_gap_weight": (0, 1),
}


# knobs whose +inf is a meaning, not a mistake: static's "wait for a full batch"
KNOBS_ALLOW_INF = frozenset({"max_batch_wait_ms"})


def check_knobs(policy: str, values: Mapping[str, Any]) -> None:
    """Every numeric knob finite and within KNOB_LIMITS (the bound is in the message)."""
    for knob, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            low, high = KNOB_LIMITS.get(knob, (-math.inf, math.inf))
            name = f"knob {knob} of policy {policy!r}"
            if isinstance(item, float):
                number(name, item, None if math.isinf(low) else low,
                       None if math.isinf(high) else high, allow_inf=knob in KNOBS_ALLOW_INF)
            elif not low <= item <= high:
                integer(name, item, int(low), int(high))
