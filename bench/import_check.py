"""An imported profile's step-time predictions next to the times composed from the tables.

Usage: python bench/import_check.py PERF_DIR CONFIG.json PROFILE.json [--tp N]
  (PROFILE.json from `batchsim profile --import llmservingsim PERF_DIR --model CONFIG.json`;
  give the same --tp, and no link flags: the link is the import's default, hardware.yaml's or
  the built-in one)
Prints, for a few typical shapes per phase, the composed time, the profile's prediction and the
relative difference, and the components of the composition.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from batchsim.policies.base import StepShape, chunk_attn_pairs
    from batchsim.profiler.imported.compose import Link, StepComposer
    from batchsim.profiler.imported.hardware import tp_link
    from batchsim.profiler.imported.tables import read_meta
    from batchsim.profiler.model_arch import read_config
    from batchsim.sim.profile import load_profile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("perf_dir", type=Path)
    p.add_argument("config", type=Path)
    p.add_argument("profile", type=Path)
    p.add_argument("--tp", type=int, default=1)
    args = p.parse_args()
    link = tp_link(args.perf_dir, None, None, args.tp)  # as the import without link flags
    composer = StepComposer(args.perf_dir, read_meta(args.perf_dir), read_config(args.config),
                            args.tp, Link(link.gbps * 1e9, link.latency_us * 1e-6), 2)
    profile = load_profile(args.profile)
    shapes = [
        ("prefill 1 x 512", StepShape(1, 512, 0, chunk_attn_pairs(0, 512), 0)),
        ("prefill 1 x 2000 after 3000", StepShape(1, 2000, 0, chunk_attn_pairs(3000, 2000), 0)),
        ("decode 1 @ 1000", StepShape(1, 0, 1, 0, 1000)),
        ("decode 32 @ 700", StepShape(32, 0, 32, 0, 32 * 700)),
        ("decode 100 @ 1500", StepShape(100, 0, 100, 0, 100 * 1500)),
        ("mixed 1900 + 100 @ 800", StepShape(101, 1900, 100, chunk_attn_pairs(0, 1900),
                                             100 * 800)),
        ("mixed 300 (after 1200) + 60 @ 600", StepShape(61, 300, 60,
                                                        chunk_attn_pairs(1200, 300), 60 * 600)),
    ]
    print(f"{'shape':<34}{'composed ms':>12}{'profile ms':>11}{'diff':>8}   components (ms)")
    for name, shape in shapes:
        parts = composer.breakdown(shape)
        composed = sum(parts.values())
        pred = profile.cost_model("packed", shape.phase).predict(shape)
        detail = " ".join(f"{k} {v * 1e3:.2f}" for k, v in parts.items() if v)
        print(f"{name:<34}{composed * 1e3:>12.3f}{pred * 1e3:>11.3f}"
              f"{(pred - composed) / composed * 100:>7.2f}%   {detail}")


if __name__ == "__main__":
    main()
