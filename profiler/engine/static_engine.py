"""Static batching as servers without paging run it: one padded batch, prefill, then decode steps.

The batch is left-padded to its longest prompt and runs on transformers' own path (default sdpa
attention, a contiguous ``DynamicCache``, an ``attention_mask`` and explicit ``position_ids``:
transformers 5 does not derive positions from the mask). Every decode step runs the whole batch;
rows that have finished keep running as padding until the caller stops decoding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from batchsim.profiler.engine.models import build_model
from batchsim.profiler.engine.records import StepTiming
from batchsim.profiler.engine.timing import timed_sample

logger = logging.getLogger(__name__)


class StaticEngine:
    """Padded static-batch engine with the same ``StepTiming`` record as ``Engine``.

    Args:
        model: preset name, ``config.json`` path or local checkpoint directory.
        device, dtype, seed: as for ``batchsim.profiler.engine.paged_engine.Engine``.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        from transformers import DynamicCache

        self._cache_cls = DynamicCache
        self.device = torch.device(device)
        self.model, self.info = build_model(model, self.device, dtype, seed)
        self.pad_token_id = self.model.config.pad_token_id or 0  # masked out: value irrelevant
        self._cache: object | None = None
        self._mask: torch.Tensor | None = None  # [B, S_total] 1 = real token, 0 = left padding
        self._next_pos: torch.Tensor | None = None  # [B] position of the next token per row
        self._last: torch.Tensor | None = None  # [B] last sampled token per row
        self._outputs: list[list[int]] = []
        self._max_new: list[int] | None = None

    @property
    def batch_size(self) -> int:
        return len(self._outputs)

    @property
    def outputs(self) -> list[list[int]]:
        """Tokens generated so far per row (copies), including rows past their budget."""
        return [list(o) for o in self._outputs]

    def prefill(
        self, batch_prompts: Sequence[Sequence[int]], max_new_tokens: Sequence[int] | None = None
    ) -> tuple[list[int], StepTiming]:
        """Start a new batch: left-pad, prefill, sample one token per row.

        ``max_new_tokens`` (optional, per row) only affects accounting: decode steps count rows
        that already have their budget as padding tokens.
        """
        t_start = time.perf_counter()
        if not batch_prompts or any(len(p) == 0 for p in batch_prompts):
            raise ValueError("a static batch needs at least one prompt and no empty prompts")
        if max_new_tokens is not None and len(max_new_tokens) != len(batch_prompts):
            raise ValueError(
                f"max_new_tokens has {len(max_new_tokens)} entries for {len(batch_prompts)} prompts"
            )
        lens = [len(p) for p in batch_prompts]
        width = max(lens)
        if width > self.info.max_model_len:
            raise ValueError(
                f"prompt of {width} tokens exceeds max_model_len {self.info.max_model_len}"
            )
        rows = [[self.pad_token_id] * (width - len(p)) + [int(t) for t in p] for p in batch_prompts]
        ids = torch.tensor(rows, dtype=torch.int64, device=self.device)  # [B, S]
        mask = torch.tensor(
            [[0] * (width - n) + [1] * n for n in lens], dtype=torch.int64, device=self.device
        )  # [B, S]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, S]
        self._cache = self._cache_cls(config=self.model.config)
        t_prep = time.perf_counter()

        sampled, gpu_ms = self._run(ids, mask, positions)
        t_end = time.perf_counter()

        self._mask = mask
        self._next_pos = positions[:, -1] + 1
        self._outputs = [[t] for t in sampled]
        self._max_new = list(max_new_tokens) if max_new_tokens is not None else None
        batch = len(rows)
        return sampled, StepTiming(
            wall_ms=(t_end - t_start) * 1e3,
            gpu_ms=gpu_ms,
            prep_ms=(t_prep - t_start) * 1e3,
            num_seqs=batch,
            num_prefill_tokens=batch * width,
            num_decode_tokens=0,
            kv_tokens_read=batch * width,
            num_padding_tokens=batch * width - sum(lens),
        )

    def decode(self) -> tuple[list[int], StepTiming]:
        """One decode step of the whole padded batch; returns one token per row."""
        t_start = time.perf_counter()
        if self._mask is None or self._next_pos is None or self._last is None:
            raise ValueError("decode() needs a batch: call prefill() first")
        batch = self.batch_size
        ids = self._last[:, None]  # [B, 1]
        mask = torch.cat([self._mask, self._mask.new_ones(batch, 1)], dim=1)  # [B, S + 1]
        positions = self._next_pos[:, None]  # [B, 1]
        num_done = 0
        if self._max_new is not None:
            num_done = sum(len(o) >= m for o, m in zip(self._outputs, self._max_new, strict=True))
        t_prep = time.perf_counter()

        sampled, gpu_ms = self._run(ids, mask, positions)
        t_end = time.perf_counter()

        self._mask = mask
        self._next_pos = self._next_pos + 1
        for out, token in zip(self._outputs, sampled, strict=True):
            out.append(token)
        return sampled, StepTiming(
            wall_ms=(t_end - t_start) * 1e3,
            gpu_ms=gpu_ms,
            prep_ms=(t_prep - t_start) * 1e3,
            num_seqs=batch,
            num_prefill_tokens=0,
            num_decode_tokens=batch,
            kv_tokens_read=batch * mask.shape[1],
            num_padding_tokens=num_done,
        )

    def _run(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> tuple[list[int], float | None]:
        def forward_and_sample() -> torch.Tensor:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self._cache,
                use_cache=True,
                logits_to_keep=1,
            )
            return out.logits[:, -1].argmax(dim=-1)  # [B]

        self._last, sampled, gpu_ms = timed_sample(self.device, forward_and_sample)
        return sampled, gpu_ms
