"""The skew correction of decode attention: alpha by bucket, from meta.yaml + tp<N>/skew_fit.csv.

The attention table is measured with every decode of a step at the same context length. A step
whose decodes differ is slower than the uniform one at their mean; LLMServingSim's profiler
measured that and fitted t = t(mean) + alpha * (t(max) - t(mean)) per bucket of (prefill chunk,
number of decodes, skew rate = (mean - min) / (max - min), longest context, prefill KV). The
bucket edges are meta.yaml's skew_fit.bucket_axes (right-inclusive); a bucket the table lacks
takes the tp's alpha_default; no skew fit at all means alpha = 0 (no unmeasured correction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsim.profiler.imported.tables import Table

_AXES = ("n", "skew_rate", "kv_big", "kp")


@dataclass
class SkewFit:
    """Alpha per bucket for one tensor-parallel degree."""

    alpha_default: float = 0.0
    bins: dict[str, tuple[list[float], list[str]]] = field(default_factory=dict)
    by_bucket: dict[tuple[float, str, str, str, str], float] = field(default_factory=dict)
    pcs: list[float] = field(default_factory=list)  # prefill chunks the buckets were fitted at
    summary: dict[str, Any] = field(default_factory=dict)  # meta.yaml's fit errors, for the doc

    @classmethod
    def load(cls, folder: Path, meta: Mapping[str, Any], tp: int,
             read: Callable[[Path], Table]) -> SkewFit:
        block = meta.get("skew_fit")
        if not isinstance(block, Mapping) or not block.get("enabled"):
            return cls()
        per_tp = block.get("per_tp") or {}
        entry = per_tp.get(tp, per_tp.get(str(tp))) if isinstance(per_tp, Mapping) else None
        if not isinstance(entry, Mapping):
            return cls(float(block.get("alpha_default", 0.0) or 0.0))
        where = f"{folder / 'meta.yaml'}: skew_fit"
        axes = entry.get("bucket_axes") or block.get("bucket_axes")
        if not isinstance(axes, Mapping):
            raise ValueError(f"{where} has no bucket_axes")
        bins = {}
        for name in _AXES:
            edges, labels = axes.get(f"{name}_bins"), axes.get(f"{name}_labels")
            if (not isinstance(edges, Sequence) or not isinstance(labels, Sequence)
                    or len(edges) != len(labels) + 1):
                raise ValueError(f"{where}.bucket_axes: {name}_bins needs one edge more than "
                                 f"{name}_labels")
            bins[name] = ([float(e) for e in edges], [str(x) for x in labels])
        try:
            alpha_default = float(entry.get("alpha_default", 0.0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}.per_tp.{tp}.alpha_default is not a number") from None
        fit = cls(alpha_default, bins, summary={k: entry[k] for k in entry
                                                 if k != "bucket_table"})
        table = entry.get("bucket_table")
        if table:
            rows = read(folder / str(table)).rows
            for r in rows:
                key = (r["pc"], r["n_label"], r["skew_rate_label"], r["kv_big_label"],
                       r["kp_label"])
                fit.by_bucket[key] = float(r["alpha"])
            fit.pcs = sorted({r["pc"] for r in rows})
        return fit

    def alpha(self, pc: float, n: float, skew_rate: float, kv_big: float, kp: float) -> float:
        if not self.by_bucket:
            return self.alpha_default
        # buckets are keyed by the profiled prefill chunk: take the nearest one
        pc_key = min(self.pcs, key=lambda p: abs(p - pc))
        labels = [_label(self.bins[name], value) for name, value in
                  zip(_AXES, (n, min(max(skew_rate, 0.0), 1.0), kv_big, kp), strict=True)]
        key = (pc_key, labels[0], labels[1], labels[2], labels[3])
        return self.by_bucket.get(key, self.alpha_default)


def _label(axis: tuple[list[float], list[str]], value: float) -> str:
    edges, labels = axis
    for i, label in enumerate(labels):
        if value <= edges[i + 1]:
            return label
    return labels[-1]
