"""The GPUs an analytic profile knows: published peak figures, one row per product.

Every figure is the vendor's published number for the product (the source is named beside each
row): dense (not sparse) BF16 tensor throughput with FP32 accumulation, memory bandwidth, memory
size, the GPU-to-GPU link a tensor-parallel all-reduce uses (bandwidth per direction), and the
number of streaming multiprocessors (SMs; the architecture whitepapers: Hopper H100 SXM5 132, PCIe
114, H200 132; Ampere A100 108; Ada L40S 142, L4 58, RTX 4090 128; RTX Blackwell PRO 6000 Server
188; Blackwell B200 148).
`family` selects the kernel-efficiency calibration (profiler/analytic/calibration.py); a family
without calibration data uses the pooled one. `--gpu FILE.json` takes the same fields.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

FAMILIES = ("ampere", "ada", "hopper", "blackwell")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    family: str  # ampere | ada | hopper | blackwell
    peak_flops: float  # dense BF16 FLOP/s (FP32 accumulate), published
    mem_bandwidth: float  # bytes/s, published
    mem_bytes: int  # device memory, published
    link_bandwidth: float  # bytes/s per direction to a peer GPU (NVLink, else PCIe)
    link_latency_s: float = 5e-6  # per ring hop of an all-reduce (assumed, see docs/ANALYTIC.md)
    # streaming multiprocessors, published: how many attention tiles run at once, so how long a
    # step whose few tiles each walk a long context takes (a tile runs on one SM)
    sm_count: int = 132
    link: str = ""  # what the link is
    source: str = ""  # where the figures come from

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"GPU {self.name!r}: family must be one of {', '.join(FAMILIES)}, "
                             f"got {self.family!r}")
        for f in ("peak_flops", "mem_bandwidth", "mem_bytes", "link_bandwidth"):
            v = getattr(self, f)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) \
                    or v <= 0:
                raise ValueError(f"GPU {self.name!r}: {f} must be a positive number, got {v!r}")
        if not math.isfinite(self.link_latency_s) or self.link_latency_s < 0:
            raise ValueError(f"GPU {self.name!r}: link_latency_s must be >= 0")
        if not isinstance(self.sm_count, int) or isinstance(self.sm_count, bool) \
                or not 0 < self.sm_count <= 10_000:
            raise ValueError(f"GPU {self.name!r}: sm_count must be a positive integer, got "
                             f"{self.sm_count!r}")


T, G = 1e12, 1e9
GIB = 2**30


# fmt: off
GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 989 TFLOPS dense (1,979 with
    # sparsity), HBM3 3.35 TB/s, 80 GB, NVLink 900 GB/s (bidirectional).
    GpuSpec("h100-sxm", "hopper", 989 * T, 3350 * G, 80 * GIB, 450 * G,
            sm_count=132, link="NVLink 4",
            source="NVIDIA H100 datasheet, SXM5 column"),
    # Same datasheet, PCIe column: BF16 756 TFLOPS dense, HBM2e 2.0 TB/s, 80 GB; PCIe Gen5 x16
    # (64 GB/s per direction) without an NVLink bridge.
    GpuSpec("h100-pcie", "hopper", 756 * T, 2000 * G, 80 * GIB, 64 * G,
            sm_count=114, link="PCIe Gen5 x16",
            source="NVIDIA H100 datasheet, PCIe column"),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 989 TFLOPS dense, HBM3e 4.8 TB/s,
    # 141 GB, NVLink 900 GB/s.
    GpuSpec("h200", "hopper", 989 * T, 4800 * G, 141 * GIB, 450 * G,
            sm_count=132, link="NVLink 4",
            source="NVIDIA H200 datasheet, SXM column"),
    # NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense; 40 GB HBM2 1,555 GB/s;
    # 80 GB HBM2e 2,039 GB/s (SXM); NVLink 600 GB/s.
    GpuSpec("a100-40gb", "ampere", 312 * T, 1555 * G, 40 * GIB, 300 * G,
            sm_count=108, link="NVLink 3",
            source="NVIDIA A100 datasheet, 40GB SXM column"),
    GpuSpec("a100-80gb", "ampere", 312 * T, 2039 * G, 80 * GIB, 300 * G,
            sm_count=108, link="NVLink 3",
            source="NVIDIA A100 datasheet, 80GB SXM column"),
    # NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense (733 with sparsity), GDDR6 864 GB/s,
    # 48 GB, PCIe Gen4 x16 (32 GB/s per direction), no NVLink.
    GpuSpec("l40s", "ada", 362.05 * T, 864 * G, 48 * GIB, 32 * G,
            sm_count=142, link="PCIe Gen4 x16",
            source="NVIDIA L40S datasheet"),
    # NVIDIA L4 datasheet: BF16 121 TFLOPS dense (242 with sparsity), 300 GB/s, 24 GB,
    # PCIe Gen4 x16.
    GpuSpec("l4", "ada", 121 * T, 300 * G, 24 * GIB, 32 * G,
            sm_count=58, link="PCIe Gen4 x16",
            source="NVIDIA L4 datasheet"),
    # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: BF16 tensor with FP32
    # accumulate 165.2 TFLOPS dense, GDDR6X 1,008 GB/s, 24 GB, PCIe Gen4 x16, no NVLink.
    GpuSpec("rtx-4090", "ada", 165.2 * T, 1008 * G, 24 * GIB, 32 * G,
            sm_count=128, link="PCIe Gen4 x16",
            source="NVIDIA Ada Lovelace GPU architecture whitepaper, RTX 4090 column"),
    # NVIDIA RTX PRO 6000 Blackwell Server Edition datasheet: 96 GB GDDR7, 1,597 GB/s;
    # FP16/BF16 tensor with FP32 accumulate 503.8 TFLOPS dense (NVIDIA RTX Blackwell GPU
    # architecture whitepaper); PCIe Gen5 x16, no NVLink.
    GpuSpec("rtx-pro-6000", "blackwell", 503.8 * T, 1597 * G, 96 * GIB, 64 * G,
            sm_count=188, link="PCIe Gen5 x16",
            source="NVIDIA RTX PRO 6000 Blackwell Server Edition datasheet; RTX Blackwell "
                   "architecture whitepaper"),
    # NVIDIA HGX B200 datasheet, per GPU: FP16/BF16 2.25 PFLOPS dense (4.5 with sparsity),
    # HBM3e 8 TB/s, 180 GB, NVLink 5 1.8 TB/s (bidirectional).
    GpuSpec("b200", "blackwell", 2250 * T, 8000 * G, 180 * GIB, 900 * G,
            sm_count=148, link="NVLink 5",
            source="NVIDIA HGX B200 datasheet, per-GPU figures"),
)}
# fmt: on

ALIASES = {
    "h100": "h100-sxm", "h100-80gb": "h100-sxm", "h100-sxm5": "h100-sxm", "h200-sxm": "h200",
    "a100": "a100-80gb", "a100-sxm": "a100-80gb", "rtxpro6000": "rtx-pro-6000",
    "rtx-pro-6000-blackwell": "rtx-pro-6000", "pro6000": "rtx-pro-6000", "4090": "rtx-4090",
    "rtx4090": "rtx-4090",
}


def gpu_names() -> list[str]:
    return sorted(GPUS)


def resolve_gpu(spec: str) -> GpuSpec:
    """A GPU by name (case-insensitive, aliases allowed) or a JSON file of GpuSpec fields."""
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        return gpu_from_json(path)
    key = spec.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise ValueError(f"unknown GPU {spec!r}: known GPUs are {', '.join(gpu_names())} "
                         "(or pass a JSON file of your own figures, see docs/ANALYTIC.md)")
    return GPUS[key]


def gpu_from_json(path: Path) -> GpuSpec:
    try:
        doc: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the GPU file ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a GPU file is a JSON object of {', '.join(_FIELDS)}")
    unknown = sorted(set(doc) - set(_FIELDS))
    missing = [f for f in _REQUIRED if f not in doc]
    if unknown or missing:
        raise ValueError(f"{path}: " + "; ".join(
            ([f"unknown fields {', '.join(unknown)}"] if unknown else [])
            + ([f"missing fields {', '.join(missing)}"] if missing else []))
            + f" (fields: {', '.join(_FIELDS)})")
    doc.setdefault("name", path.stem)
    doc.setdefault("source", f"user file {path.name}")
    try:
        return GpuSpec(**doc)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


_FIELDS = tuple(f.name for f in fields(GpuSpec))
_REQUIRED = ("family", "peak_flops", "mem_bandwidth", "mem_bytes", "link_bandwidth")
