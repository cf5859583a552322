"""Which vLLM versions schedule how: the per-version defaults of the continuous policy's
vLLM-behaviour knobs.

Read from each release's own source (vllm/config/scheduler.py, vllm/config/vllm.py and
vllm/v1/core/sched/scheduler.py of the PyPI wheels 0.11.0 to 0.33.0; docs/VLLM.md has the
table):

- `async_scheduling`: off up to 0.13 (opt-in; experimental in 0.11); from 0.14.0
  `SchedulerConfig`'s default is None, which `VllmConfig` turns on unless pipeline
  parallelism, a speculative method it cannot overlap or an executor without support rules
  it out.
- `scheduler_reserve_full_isl`: absent up to 0.18 (admission checks the first chunk's
  blocks); a `SchedulerConfig` field from 0.19.0, default true.
- `long_prefill_uncapped_when_alone` (no vLLM knob): from 0.31.0 the scheduler sets
  `long_prefill_token_threshold` to 0 for a step while running + waiting <= 1.

Versions before 0.8 (the V0 engine) are not modelled; versions after the newest one read
behave as it does.
"""

from __future__ import annotations

import re

# vLLM V1's BlockPool takes the first block of its pool as the null block (a placeholder
# that never holds KV; vllm/v1/core/block_pool.py, read in 0.33.0), so of num_gpu_blocks N
# only N - 1 hold requests' KV (its KV-usage metric divides by N - 1 too)
NULL_BLOCKS = 1

OLDEST_MODELLED = (0, 8, 0)  # the V1 engine became vLLM's default in 0.8.0
NEWEST_READ = (0, 33, 0)  # the newest release whose scheduler source was read

# knob -> (first version with the new default, the default before it, from it on)
CHANGES: dict[str, tuple[tuple[int, int, int], bool, bool]] = {
    "async_scheduling": ((0, 14, 0), False, True),
    "scheduler_reserve_full_isl": ((0, 19, 0), False, True),
    "long_prefill_uncapped_when_alone": ((0, 31, 0), False, True),
}

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?([.+\-a-z].*)?", re.IGNORECASE)


def parse_vllm_version(text: str) -> tuple[int, int, int]:
    """'0.19.0', 'v0.19', '0.10.1.1' or '0.11.0rc1+cu128' -> (major, minor, patch)."""
    m = _VERSION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"vllm_version {text!r} is not a version like 0.19.0")
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    if version < OLDEST_MODELLED:
        raise ValueError(f"vllm_version {text}: batchsim models vLLM's V1 scheduler, the "
                         "default engine from 0.8.0 on; use 0.8.0 or later")
    return version


def vllm_defaults(version: str) -> dict[str, bool]:
    """The vLLM-behaviour knobs' defaults for a vLLM version ("" = the newest one read)."""
    v = parse_vllm_version(version) if version else NEWEST_READ
    return {knob: after if v >= first else before
            for knob, (first, before, after) in CHANGES.items()}
