"""The TP all-reduce link of an import: the flags, else the perf tree's hardware.yaml, else the
documented defaults.

LLMServingSim's profiler writes `profiler/perf/<hw>/hardware.yaml` (`python -m profiler
hardware`): the device's spec and, on a machine with two or more GPUs, an NCCL all-reduce
benchmark (`measured.interconnect`: `npus`, `samples` of bytes and microseconds, and `fit`:
`bandwidth_gbps`, `latency_ns` of t = 2 latency + bytes / bandwidth, the ring all-reduce at
two GPUs), repeated under `defaults.link_bw` / `defaults.link_latency` (each with a `source`).
Our ring model at N GPUs, 2(N-1)/N bytes / bandwidth + 2(N-1) latency, is that formula at N=2,
so the fit's two figures are its bandwidth and per-hop latency. A single-GPU machine's file
has `interconnect: null`: then the defaults are used, and the profile says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# published defaults of the all-reduce link: a PCIe-class link (docs/IMPORT.md)
DEFAULT_LINK_GBPS = 25.0
DEFAULT_LINK_LATENCY_US = 5.0


@dataclass(frozen=True)
class LinkChoice:
    gbps: float
    latency_us: float
    source: str  # where the two figures came from, for the profile's assumptions


def hardware_yaml(folder: Path) -> Path | None:
    """<hw>/hardware.yaml for PERF_DIR = .../perf/<hw>/<org>/<model>/<variant>, if present."""
    try:
        path = folder.resolve().parents[2] / "hardware.yaml"
    except IndexError:
        return None
    return path if path.is_file() else None


def read_hardware_yaml(path: Path) -> Mapping[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        raise ValueError(f"{path}: not a readable hardware.yaml") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: not a readable hardware.yaml (not a mapping)")
    return doc


def tp_link(folder: Path, flag_gbps: float | None, flag_latency_us: float | None,
            tp: int) -> LinkChoice:
    """The link for tp > 1: each flag given wins; otherwise hardware.yaml's measured link."""
    gbps, lat_us, source = DEFAULT_LINK_GBPS, DEFAULT_LINK_LATENCY_US, "default (assumed)"
    path = hardware_yaml(folder) if tp > 1 and (flag_gbps is None or flag_latency_us is None) \
        else None
    if path is not None:
        found = _measured(path, read_hardware_yaml(path))
        if found is not None:
            gbps, lat_us, how = found
            source = f"{path} {how}"
        else:
            source = f"default (assumed: {path} has no measured interconnect)"
    if flag_gbps is not None:
        gbps = flag_gbps
    if flag_latency_us is not None:
        lat_us = flag_latency_us
    if flag_gbps is not None and flag_latency_us is not None:
        source = "--tp-link-gbps / --tp-link-latency-us"
    elif flag_gbps is not None or flag_latency_us is not None:
        source += ", one of them from the flag"
    return LinkChoice(gbps, lat_us, source)


def _measured(path: Path, doc: Mapping[str, Any]) -> tuple[float, float, str] | None:
    measured = doc.get("measured")
    inter = measured.get("interconnect") if isinstance(measured, Mapping) else None
    fit = inter.get("fit") if isinstance(inter, Mapping) else None
    if isinstance(fit, Mapping) and ("bandwidth_gbps" in fit or "latency_ns" in fit):
        npus = inter.get("npus") if isinstance(inter, Mapping) else None
        return (_positive(path, "measured.interconnect.fit.bandwidth_gbps",
                          fit.get("bandwidth_gbps")),
                _positive(path, "measured.interconnect.fit.latency_ns", fit.get("latency_ns"),
                          zero_ok=True) / 1e3,
                f"measured.interconnect.fit (NCCL all-reduce across {npus} GPUs)")
    defaults = doc.get("defaults")
    if not isinstance(defaults, Mapping):
        return None
    bw, lat = defaults.get("link_bw"), defaults.get("link_latency")
    if not isinstance(bw, Mapping) or not isinstance(lat, Mapping):
        return None
    return (_positive(path, "defaults.link_bw.value", bw.get("value")),
            _positive(path, "defaults.link_latency.value", lat.get("value"), zero_ok=True) / 1e3,
            f"defaults.link_bw / link_latency (source: {bw.get('source')}, "
            f"{lat.get('source')})")


def _positive(path: Path, key: str, value: Any, zero_ok: bool = False) -> float:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value >= 0 if zero_ok else value > 0))
    if not ok:
        raise ValueError(f"{path}: {key} must be a {'non-negative' if zero_ok else 'positive'} "
                         f"number, got {value!r}")
    return float(value)
