"""Read and check one LLMServingSim performance folder (no torch, no pandas).

PERF_DIR = ``.../profiler/perf/<hw>/<org>/<model>/<variant>``, as LLMServingSim writes it:

    meta.yaml               profiler, vLLM and GPU facts, engine arguments, skew-fit summary
    tp<N>/dense.csv         layer, tokens, time_us            per layer of a one-layer model
    tp<N>/per_sequence.csv  layer, sequences, time_us         lm_head, sampler
    tp<N>/attention.csv     prefill_chunk, kv_prefill, n_decode, kv_decode, time_us
    tp<N>/moe.csv           tokens, activated_experts, time_us  (MoE models; LLMServingSim's
                            profiler measures it at tp1 only, so tp1's serves every degree)
    tp<N>/skew_fit.csv      pc, n_label, skew_rate_label, kv_big_label, kp_label, alpha, n_samples
                            (when meta.yaml's skew_fit is enabled)

Every problem is a ValueError naming the file (and line) and what is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLUMNS: dict[str, tuple[str, ...]] = {
    "dense.csv": ("layer", "tokens", "time_us"),
    "per_sequence.csv": ("layer", "sequences", "time_us"),
    "attention.csv": ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"),
    "moe.csv": ("tokens", "activated_experts", "time_us"),
    "skew_fit.csv": ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha"),
}
_TEXT_COLUMNS = {"layer", "n_label", "skew_rate_label", "kv_big_label", "kp_label"}
_SIGNED_COLUMNS = {"alpha"}  # a fitted correction may be slightly negative


def interp1(keys: Sequence[float], values: Sequence[float], x: float) -> float:
    """Piecewise-linear through (keys, values): the first value below the first key, the last
    segment continued beyond the last key with its slope floored at 0 (monotone extrapolation)."""
    n = len(keys)
    if n == 1 or x <= keys[0]:
        return values[0]
    i = min(bisect_right(keys, x) - 1, n - 2)
    slope = (values[i + 1] - values[i]) / (keys[i + 1] - keys[i])
    if x > keys[-1]:
        return values[-1] + max(slope, 0.0) * (x - keys[-1])
    return values[i] + slope * (x - keys[i])


@dataclass
class NestedTable:
    """Scattered rows (k1, ..., kd) -> time, interpolated one axis at a time, outermost first:
    along axis 1 between the two nearest k1 present, and inside each of those, along axis 2
    between the nearest k2 present *for that k1*, and so on (each row may have its own keys,
    as LLMServingSim's grids do). Each axis uses interp1's rule."""

    children: dict[float, Any] = field(default_factory=dict)  # key -> NestedTable or float
    keys: list[float] = field(default_factory=list)

    @classmethod
    def build(cls, rows: Sequence[tuple[tuple[float, ...], float]]) -> NestedTable:
        root = cls()
        for key, value in rows:
            node = root
            for k in key[:-1]:
                node = node.children.setdefault(k, cls())
            node.children[key[-1]] = value
        root._sort()
        return root

    def _sort(self) -> None:
        self.keys = sorted(self.children)
        for child in self.children.values():
            if isinstance(child, NestedTable):
                child._sort()

    def __call__(self, query: Sequence[float]) -> float:
        x, rest = query[0], query[1:]

        def at(k: float) -> float:
            child = self.children[k]
            return child(rest) if isinstance(child, NestedTable) else float(child)

        keys = self.keys
        if len(keys) == 1 or x <= keys[0]:
            return at(keys[0])
        i = min(bisect_right(keys, x) - 1, len(keys) - 2)
        if x == keys[i]:
            return at(keys[i])
        lo, hi = at(keys[i]), at(keys[i + 1])
        slope = (hi - lo) / (keys[i + 1] - keys[i])
        if x > keys[-1]:
            return hi + max(slope, 0.0) * (x - keys[-1])
        return lo + slope * (x - keys[i])

    def axis_keys(self, depth: int) -> list[float]:
        """Every key present on axis `depth` (0 = outermost), sorted."""
        if depth == 0:
            return list(self.keys)
        found: set[float] = set()
        for child in self.children.values():
            if isinstance(child, NestedTable):
                found.update(child.axis_keys(depth - 1))
        return sorted(found)


@dataclass
class Table:
    """One CSV: rows of named numeric (or label) fields, its path and sha256."""

    path: Path
    rows: list[dict[str, Any]]
    sha256: str


def read_table(path: Path, integer_keys: bool = True) -> Table:
    """Read a table, checking its header, every row's fields and values."""
    name = path.name
    required = COLUMNS[name]
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: missing table ({e.strerror})") from None
    lines = raw.decode("utf-8", errors="replace").splitlines()
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: empty table (expected columns {', '.join(required)})")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; expected {list(required)}")
    index = {c: header.index(c) for c in required}
    rows = []
    for lineno, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise ValueError(f"{path}:{lineno}: malformed row: {len(fields)} fields, header has "
                             f"{len(header)}")
        row: dict[str, Any] = {}
        for col, j in index.items():
            text = fields[j].strip()
            if col in _TEXT_COLUMNS:
                if not text:
                    raise ValueError(f"{path}:{lineno}: empty {col}")
                row[col] = text
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: {col} is not a number: {text!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}:{lineno}: {col} is {text} (must be finite)")
            if value < 0 and col not in _SIGNED_COLUMNS:
                raise ValueError(f"{path}:{lineno}: {col} is negative ({text})")
            if col == "time_us" and value <= 0:
                raise ValueError(f"{path}:{lineno}: time_us must be positive, got {text}")
            if col not in ("time_us", "alpha") and integer_keys and value != int(value):
                raise ValueError(f"{path}:{lineno}: {col} must be an integer, got {text}")
            row[col] = value
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: table has no rows")
    return Table(path, rows, hashlib.sha256(raw).hexdigest())


def read_meta(folder: Path) -> dict[str, Any]:
    """meta.yaml as a mapping, with the fields the importer needs checked."""
    import yaml

    path = folder / "meta.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror}); is {folder} an LLMServingSim "
                         "perf folder (.../perf/<hw>/<org>/<model>/<variant>)?") from None
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, Mapping):
        raise ValueError(f"{path}: not a mapping of profile facts")
    for key in ("architecture", "model"):
        if not isinstance(meta.get(key), str):
            raise ValueError(f"{path}: missing {key!r}")
    return dict(meta)


def tp_folder(folder: Path, meta: Mapping[str, Any], tp: int) -> Path:
    """The tp<N> folder, which must exist."""
    sub = folder / f"tp{tp}"
    if not sub.is_dir():
        have = sorted(p.name for p in folder.glob("tp*") if p.is_dir())
        raise ValueError(f"{sub}: missing tp{tp} folder (have {have or 'none'}; meta.yaml "
                         f"tp_degrees {meta.get('tp_degrees')})")
    return sub


def by_layer(table: Table, key: str) -> dict[str, tuple[list[float], list[float]]]:
    """dense / per_sequence: layer -> (sorted keys, times in seconds); duplicate keys refused."""
    grouped: dict[str, dict[float, float]] = {}
    for lineno, row in enumerate(table.rows, start=2):
        per = grouped.setdefault(row["layer"], {})
        if row[key] in per:
            raise ValueError(f"{table.path}: duplicate row for {row['layer']} at {key} "
                             f"{int(row[key])} (row {lineno})")
        per[row[key]] = row["time_us"] * 1e-6
    return {layer: (sorted(v), [v[k] for k in sorted(v)]) for layer, v in grouped.items()}


def nested(table: Table, columns: Sequence[str]) -> NestedTable:
    """A NestedTable over `columns` (outermost first), times in seconds."""
    return NestedTable.build([(tuple(r[c] for c in columns), r["time_us"] * 1e-6)
                              for r in table.rows])
