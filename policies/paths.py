"""Execution paths: where a step can run, and how long it is expected to take there (seed 003).

Seed 003's interface is ``ExecutionPath { estimate_latency(batch); execute(batch) }`` with a
scheduler over several paths. Here the two halves live on the two sides of the policy contract:
the policy reads `estimate_latency` (a cost model, no clock) to decide where a request goes, and
the driver owns `execute` (the simulator advances a SimPy clock, the real executor runs an
engine). The serving core (`batchsim.sim.server.Server`) keeps `busy_until_s` current: the
(estimated) end of the step or run of steps in flight on that path, so a policy asked mid-step
can tell when the path frees up without reading a clock. Every policy gets its paths.

A CPU path's latency includes handing the KV it computed to the GPU pool (`KVTransfer`): until
the copy is done the request cannot decode on the GPU, so that is when the path's work ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from batchsim.policies.base import Device, Phase, StepShape, chunk_attn_pairs

StepCost = Callable[[StepShape], float]  # seconds for one step of this shape


@dataclass(frozen=True, slots=True)
class KVTransfer:
    """Copy of a request's KV from CPU memory into the GPU pool: latency + bytes / bandwidth."""

    bytes_per_token: int  # KV bytes per token as stored in the GPU pool
    bytes_per_s: float
    latency_s: float = 0.0  # fixed cost per hand-off (launches, synchronisation)

    def __post_init__(self) -> None:
        if self.bytes_per_s <= 0 or self.latency_s < 0 or self.bytes_per_token <= 0:
            raise ValueError(f"KV transfer needs positive bandwidth and bytes per token and a "
                             f"non-negative latency, got {self}")

    def seconds(self, num_tokens: int) -> float:
        return self.latency_s + num_tokens * self.bytes_per_token / self.bytes_per_s


def prefill_shape(num_tokens: int) -> StepShape:
    """Shape of a step that prefills one prompt of num_tokens from scratch."""
    return StepShape(1, num_tokens, 0, chunk_attn_pairs(0, num_tokens), 0)


class ExecutionPath:
    """One device's step-latency estimator, plus when the core says it is busy until."""

    __slots__ = ("_models", "busy_until_s", "device", "transfer")

    def __init__(self, device: Device, models: Mapping[Phase, StepCost],
                 transfer: KVTransfer | None = None) -> None:
        self.device = device
        self._models = dict(models)
        self.transfer = transfer  # set on a path whose KV must be moved to the GPU afterwards
        self.busy_until_s = 0.0  # end of the step (or run) in flight; <= now when idle

    def estimate_latency(self, shape: StepShape) -> float:
        """Seconds from starting a step of this shape until its output (and KV) is usable."""
        model = self._models.get(shape.phase)
        if model is None:
            raise KeyError(f"the {self.device} path has no {shape.phase} cost model; it has "
                           f"{sorted(self._models)}")
        t = model(shape)
        if self.transfer is not None:
            t += self.transfer.seconds(shape.num_prefill_tokens)
        return t

    def prefill_latency(self, num_tokens: int) -> float:
        """estimate_latency of prefilling one prompt of num_tokens alone."""
        return self.estimate_latency(prefill_shape(num_tokens))

    def free_at(self, now_s: float) -> float:
        """Earliest time this path could start a new step, as the core last reported."""
        return self.busy_until_s if self.busy_until_s > now_s else now_s
