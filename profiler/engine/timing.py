"""Step timing shared by the engines: CUDA events around forward + sampling, sync by ``tolist``."""

from __future__ import annotations

from collections.abc import Callable

import torch


def timed_sample(
    device: torch.device, forward_and_sample: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, list[int], float | None]:
    """Run ``forward_and_sample`` (returns sampled ids) and bring the ids to the host.

    Returns (ids on the device, ids as a list, GPU ms between CUDA events recorded around the call
    or None off CUDA). The
    ``tolist()`` is the step's only host sync, as in vLLM v0 / sglang step timing.
    """
    if device.type != "cuda":
        with torch.inference_mode():
            ids = forward_and_sample()
        return ids, ids.tolist(), None
    ev_start = torch.cuda.Event(enable_timing=True)
    ev_end = torch.cuda.Event(enable_timing=True)
    stream = torch.cuda.current_stream(device)  # the profiled device's, even if not the current one
    ev_start.record(stream)
    with torch.inference_mode():
        ids = forward_and_sample()
    ev_end.record(stream)
    sampled = ids.tolist()  # implicit sync
    ev_end.synchronize()
    return ids, sampled, ev_start.elapsed_time(ev_end)
