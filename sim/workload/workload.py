"""Workloads: who arrives when, asking for how many tokens.

Native trace format (JSONL, one request per line):
    {"arrival_s": 0.0, "input_tokens": 812, "output_tokens": 153, "id": "r1", "priority": 0}
`id`, `priority`, `hash_ids` (prefix-block hashes, a list of integers, one per 512
tokens of the prompt as in Mooncake's traces) and `prefix_group` with `prefix_len` (the first
prefix_len tokens are that group's shared prompt) are optional. Public
trace formats (Azure, BurstGPT, Mooncake, Vidur) are read by `batchsim.sim.workload.traces`
(`load_trace` reads any of them); synthetic workloads are drawn by
`batchsim.sim.workload.synthetic`. This module is the leaf both build on: it imports neither.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchsim.policies.request import PrefixId, Request
from batchsim.sim.errors import UsageError

HASH_BLOCK_TOKENS = 512  # tokens per hash_ids entry (Mooncake's block size)


class WorkloadError(UsageError):
    """Bad workload input; the message names the file, line and problem."""


@dataclass
class PrefixBlocks:
    """Ragged per-request lists of prefix-block hashes, stored flat.

    One int64 array plus offsets instead of a list of lists: a million Mooncake requests
    with a few dozen blocks each stay a few hundred MB smaller. Request i's blocks are
    values[offsets[i]:offsets[i + 1]].
    """

    values: np.ndarray  # int64 [total blocks]
    offsets: np.ndarray  # int64 [N + 1], offsets[0] == 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index]:self.offsets[index + 1]]

    def take(self, index: np.ndarray) -> PrefixBlocks:
        """The lists of the requests at `index`, in that order."""
        starts, ends = self.offsets[index], self.offsets[np.asarray(index) + 1]
        lengths = ends - starts
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        # position of every kept value in the old flat array, built without a Python loop
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return PrefixBlocks(self.values[np.repeat(starts, lengths) + within], offsets)


@dataclass
class Workload:
    """Column arrays, sorted by arrival time."""

    arrival_s: np.ndarray  # float64 [N]
    input_tokens: np.ndarray  # int64 [N]
    output_tokens: np.ndarray  # int64 [N]
    priority: np.ndarray  # int64 [N]
    ids: list[str] | None  # None: a request's id is its index (saves a string per request)
    source: str  # how it was made; for a trace, its path (error messages say source:line)
    line_numbers: np.ndarray | None = None  # trace line of each request, for error messages
    hash_ids: PrefixBlocks | None = field(default=None, repr=False)
    # shared system prompts: request i's first prefix_tokens[i] tokens are group
    # prefix_group[i]'s (-1: none); synthetic --num-prefix-groups
    prefix_group: np.ndarray | None = field(default=None, repr=False)  # int64 [N]
    prefix_tokens: np.ndarray | None = field(default=None, repr=False)  # int64 [N]
    # how a trace was read and transformed (format, window, scale, drops), for config.json
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def requests(self, with_prefix: bool = False, start: int = 0,
                 stop: int | None = None) -> list[Request]:
        """The requests start..stop-1 (default: all); with_prefix: with their prefix identity
        (for prefix caching), from hash_ids or the prefix groups."""
        rows = range(len(self))[start:stop]
        start, stop = rows.start, rows.stop
        ids = self.ids[start:stop] if self.ids is not None else [str(i) for i in rows]
        out = [
            Request(i, float(a), int(n_in), int(n_out), int(p), rid)
            for i, a, n_in, n_out, p, rid in zip(
                rows, self.arrival_s[start:stop], self.input_tokens[start:stop],
                self.output_tokens[start:stop], self.priority[start:stop], ids, strict=True)
        ]
        if with_prefix:
            for request, prefix in zip(out, self.prefixes(start, stop), strict=True):
                request.prefix = prefix
        return out

    def prefixes(self, start: int = 0, stop: int | None = None) -> list[PrefixId | None]:
        """Each request's prefix identity (of requests start..stop-1; default: all): its
        hash_ids (512-token blocks), else its prefix group (one block of its shared length,
        the group as its hash), else None."""
        rows = range(len(self))[start:stop]
        start, stop = rows.start, rows.stop
        out: list[PrefixId | None] = [None] * len(rows)
        if self.prefix_group is not None and self.prefix_tokens is not None:
            for k, (g, t) in enumerate(zip(self.prefix_group[start:stop].tolist(),
                                           self.prefix_tokens[start:stop].tolist(), strict=True)):
                if g >= 0 and t > 0:
                    out[k] = PrefixId(int(t), np.int64(g).tobytes())
        if self.hash_ids is not None:  # the finer identity wins where a request has both
            values = self.hash_ids.values.astype(np.int64, copy=False)
            offsets = self.hash_ids.offsets[start:stop + 1].tolist()
            for k in range(len(out)):
                if offsets[k + 1] > offsets[k]:
                    out[k] = PrefixId(HASH_BLOCK_TOKENS,
                                      values[offsets[k]:offsets[k + 1]].tobytes())
        return out

    def where(self, index: int) -> str:
        """Human pointer to request `index`: its trace line when there is one."""
        if self.line_numbers is not None:
            return f"{self.source}:{int(self.line_numbers[index])}"
        return f"{self.source} request {index}"

    def take(self, index: np.ndarray, arrival_s: np.ndarray | None = None) -> Workload:
        """The requests at `index` (in that order), optionally with new arrival times."""
        return dataclasses.replace(
            self,
            arrival_s=self.arrival_s[index] if arrival_s is None else arrival_s,
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            priority=self.priority[index],
            ids=None if self.ids is None else [self.ids[i] for i in index],
            line_numbers=None if self.line_numbers is None else self.line_numbers[index],
            hash_ids=None if self.hash_ids is None else self.hash_ids.take(index),
            prefix_group=None if self.prefix_group is None else self.prefix_group[index],
            prefix_tokens=None if self.prefix_tokens is None else self.prefix_tokens[index],
            provenance=dict(self.provenance),
        )
