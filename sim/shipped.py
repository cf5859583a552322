"""The files batchsim ships (profiles, the example trace), found from any directory.

They install as package data (`batchsim/profiles/*.json`, `batchsim/traces/*.jsonl`; in a
checkout those folders link the repository's `profiles/` and `traces/`) and are located through
importlib.resources, never relative to the working directory. A bare file name that is not a
file here names a shipped one: `--profile qwen2.5-0.5b-cpu.json`, `--trace chat.jsonl` (the
extension may be left out), and so does the checkout's spelling `traces/chat.jsonl` or
`profiles/NAME.json` when no such file is here.

The hybrid policy's CPU path needs a CPU prefill model and a CPU->GPU KV copy that an analytic
GPU profile does not have; `hybrid_defaults` fills them in from the shipped CPU profile of the
same model and an assumed copy bandwidth, and says so in one line per assumption.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Literal

Kind = Literal["profiles", "traces"]
_SUFFIX: dict[Kind, str] = {"profiles": ".json", "traces": ".jsonl"}
DEFAULT_PROFILE_NAME = "qwen2.5-0.5b-h100-analytic.json"
# The assumed CPU->GPU KV copy bandwidth of the hybrid default: PCIe-class, the figure
# bench/hybrid_gain.py and docs/HYBRID.md assume (no profile ships a measured kv_copy yet)
DEFAULT_KV_COPY_GBPS = 25.0


def shipped_dir(kind: Kind) -> Path:
    """The folder of shipped files of this kind (wheels install unzipped: a real directory;
    resolved, so a checkout records the same paths as before the link existed)."""
    return Path(str(files("batchsim") / kind)).resolve()


def shipped_names(kind: Kind) -> list[str]:
    folder = shipped_dir(kind)
    return sorted(p.name for p in folder.glob(f"*{_SUFFIX[kind]}")) if folder.is_dir() else []


def default_profile() -> Path:
    """The profile a run uses when none is given."""
    return shipped_dir("profiles") / DEFAULT_PROFILE_NAME


def is_shipped(path: str | Path) -> bool:
    """Whether `path` is one of the shipped files (which commands must not rewrite unasked)."""
    file = Path(path).resolve()
    return any(file.parent == shipped_dir(kind) for kind in _SUFFIX)


def resolve(path: str | Path, kind: Kind) -> Path:
    """`path` itself when it exists or names a folder; else the shipped file of that name
    (with or without its extension) if there is one; else `path` (its reader says it is
    missing). A name under the checkout's own folder (`traces/chat.jsonl`,
    `profiles/NAME.json`, as the README spells them) counts as bare: an installed batchsim
    runs the README's commands from any folder."""
    given = Path(path)
    if given.exists() or given.parent not in (Path("."), Path(kind)):
        return given
    for name in (given.name, given.name + _SUFFIX[kind]):
        candidate = shipped_dir(kind) / name
        if candidate.is_file():
            return candidate
    return given


def shipped_cpu_profile(model: str) -> Path | None:
    """The shipped profile measured on a CPU for `model`, if any."""
    for name in shipped_names("profiles"):
        path = shipped_dir("profiles") / name
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a damaged shipped file is reported when it is used, not here
        fp, info = doc.get("fingerprint") or {}, doc.get("model") or {}
        if fp.get("device_type") == "cpu" and info.get("name") == model:
            return path
    return None


def hybrid_defaults(device_type: str | None, model: str | None, has_cpu_prefill: bool,
                    has_kv_copy: bool) -> tuple[Path | None, float | None, list[str]]:
    """(CPU profile, KV copy GB/s, assumptions) for a CPU path the user gave nothing for.

    Only a GPU profile gets defaults (a CPU profile's own model is not a second device); each
    default comes with the sentence that says what was assumed. None where nothing is needed or
    nothing fits (the CPU path then says what is missing)."""
    if device_type == "cpu":
        return None, None, []
    cpu_profile, gbps, said = None, None, []
    if not has_cpu_prefill and model is not None:
        cpu_profile = shipped_cpu_profile(model)
        if cpu_profile is not None:
            said.append(f"the CPU path's prefill cost is the shipped CPU profile "
                        f"{cpu_profile.name} (measured on another machine's CPU; give "
                        "--cpu-profile for yours)")
    if not has_kv_copy:
        gbps = DEFAULT_KV_COPY_GBPS
        said.append(f"the CPU->GPU KV copy is ASSUMED at {gbps:g} GB/s (PCIe-class; give "
                    "--kv-copy-gbps, or a profile with a measured kv_copy)")
    return cpu_profile, gbps, said
