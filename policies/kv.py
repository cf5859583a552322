"""KV-cache memory accounting: how many tokens fit, and how they are reserved.

Two models (seed 002): paged blocks, where a request holds ceil(tokens / block_size) blocks and
grows one block at a time; and contiguous reservation, where a static batch reserves
batch_size * (padded prompt + max output) tokens up front.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemoryFacts:
    """Memory facts of a model on a device, from the profile."""

    total_bytes: int  # device memory
    weight_bytes: int
    kv_bytes_per_token: int
    activation_reserve_bytes: int = 0  # peak activations of the largest step, kept free

    def kv_capacity_tokens(self, gpu_memory_utilization: float) -> int:
        """Tokens of KV that fit in the budgeted fraction of device memory."""
        budget = self.total_bytes * gpu_memory_utilization - self.weight_bytes
        budget -= self.activation_reserve_bytes
        if budget <= 0:
            raise ValueError(
                f"the model does not fit: gpu_memory_utilization={gpu_memory_utilization} of "
                f"{self.total_bytes / 2**30:.1f} GiB leaves {budget / 2**30:.2f} GiB for KV after "
                f"{self.weight_bytes / 2**30:.2f} GiB of weights and "
                f"{self.activation_reserve_bytes / 2**30:.2f} GiB of activations: "
                "raise gpu_memory_utilization or use a larger device"
            )
        return int(budget // self.kv_bytes_per_token)


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold num_tokens (ceil division)."""
    return -(-num_tokens // block_size)
