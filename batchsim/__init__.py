"""batchsim: simulate LLM batching policies from measured step costs.

The command line is `batchsim` (batchsim/cli.py); from Python, `batchsim.simulate(...)` and
`batchsim.sweep(...)` (batchsim/api.py, documented in docs/API.md). Importing this package is
cheap: numpy, pandas and the simulator load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SimulationResult", "simulate", "sweep"]

if TYPE_CHECKING:
    from batchsim.api import SimulationResult, simulate, sweep


def __getattr__(name: str) -> Any:
    if name in __all__:
        from batchsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'batchsim' has no attribute {name!r}")
