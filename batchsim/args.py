"""Command-line options shared by `simulate`, `validate` and `sweep`, defined once."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchsim.sim.engine_config import EngineConfig


def add_knob_option(p: argparse.ArgumentParser, example: str = "max_num_seqs=128") -> None:
    p.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                   help=f"set a policy knob (repeatable), e.g. --set {example}")


def parse_knobs(items: list[str]) -> dict[str, str]:
    """`--set KNOB=VALUE` items -> {knob: value} (values are parsed by the policy's config)."""
    knobs: dict[str, str] = {}
    for item in items:
        knob, sep, value = item.partition("=")
        if not sep or not knob.strip():
            raise ValueError(f"--set takes KNOB=VALUE, got {item!r}")
        knobs[knob.strip()] = value.strip()
    return knobs


def add_cpu_path_options(p: argparse.ArgumentParser) -> None:
    """The hybrid policy's CPU path: its cost model and the KV copy into the GPU pool."""
    h = p.add_argument_group("hybrid policy: the CPU path (a CPU copy of the model prefills)")
    h.add_argument("--cpu-profile", help="CPU profile of the same model whose packed.prefill is "
                   "the CPU path's cost (default: the profile's own cpu.packed.prefill)")
    h.add_argument("--kv-copy-gbps", type=float, help="ASSUMED CPU->GPU KV copy bandwidth, GB/s "
                   "(default: the profile's measured kv_copy); recorded as an assumption")
    h.add_argument("--kv-copy-latency-us", type=float, default=0.0,
                   help="assumed fixed cost per KV hand-off, us (with --kv-copy-gbps)")


def add_jitter_option(p: argparse.ArgumentParser, default: bool) -> None:
    """Step-time jitter drawn from the profile's repeats (sim.jitter)."""
    state = "on" if default else "off"
    p.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=default,
                   help="price each GPU step at the cost model's prediction times a factor drawn "
                        "from the profile's own repeat scatter (seeded by --seed; needs a "
                        f"measured profile); default {state}")


def add_engine_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine-config", metavar="META.json",
                   help="a vLLM engine's settings (engine_kwargs, kv_cache) as knobs: "
                        "max_num_seqs, max_num_batched_tokens, block_size, num_gpu_blocks, ...; "
                        "--set wins; one warning per setting batchsim does not model")


def engine_config(path: str | None, policies: list[str]) -> EngineConfig | None:
    """--engine-config read once (its warnings logged once) for these policies' knobs."""
    if path is None:
        return None
    import dataclasses

    from batchsim.policies.registry import get_policy
    from batchsim.sim.engine_config import read_engine_config

    names = {f.name for p in policies for f in dataclasses.fields(get_policy(p).config_class)}
    return read_engine_config(path, names)
