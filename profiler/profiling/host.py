"""Facts about the machine a profile is measured on: the profile's fingerprint."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (or platform) plus the usable core count."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def ram_bytes() -> int:
    """Total machine RAM."""
    import psutil

    return int(psutil.virtual_memory().total)


def nvidia_driver() -> str | None:
    """NVIDIA driver version through pynvml, or None if NVML is unavailable."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def device_name(device: str) -> str:
    """GPU name from torch, or the CPU model."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(device))
    return cpu_name()


def fingerprint(model: str, device: str, dtype: str, config_hash: str) -> dict[str, Any]:
    """What identifies a measurement: device, software versions, model, dtype, time, host."""
    import torch
    import transformers

    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return {
        "device": device_name(device),
        "device_type": device_type,
        "driver": nvidia_driver() if device_type == "cuda" else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),  # intra-op CPU threads during the measurement
        "transformers": transformers.__version__,
        "dtype": dtype,
        "model": model,
        "config_hash": config_hash,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }


# Fields that must agree for a partial profile to be resumed.
RESUME_KEYS: tuple[str, ...] = ("model", "device", "device_type", "dtype", "config_hash", "threads")
