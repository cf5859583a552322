"""Is this machine steady enough to validate on? Re-measure a profile's own points over time.

    python bench/machine_drift.py --profile profiles/distilgpt2-cpu.json --seconds 360

Rebuilds the profile's engines as `batchsim validate` does (same model, dtype, threads, device)
and re-measures the cheap reference points `batchsim validate` uses for its drift check
(profiler/drift.py), again and again for --seconds. Each line is one round: the time since the
start, the drift (median of time now / time in the profile) and each point's ratio. At the end:
the range of the drift and its largest change between consecutive rounds. A validation's
latency errors follow the machine's level point by point (docs/VALIDATION.md), so a drift that
moves by more than the accuracy you want within the length of a point makes that accuracy
unreachable on this machine, whatever the cost model.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=str(ROOT / "profiles" / "distilgpt2-cpu.json"))
    p.add_argument("--seconds", type=float, default=360.0)
    p.add_argument("--device", help="cuda or cpu (default: the profile's)")
    args = p.parse_args()

    from batchsim.profiler.real.drift import blocks_needed, measure_drift, reference_points
    from batchsim.profiler.real.validate import ValidationEngines, engine_spec, with_threads
    from batchsim.sim.profile import load_profile

    profile = load_profile(args.profile)
    spec = engine_spec(profile, None, args.device)

    def go() -> list[float]:
        refs = reference_points(args.profile, packed=True, padded=True)
        engines = ValidationEngines.build(spec, blocks_needed(refs, 16) + 1, 16, padded=True)
        print(f"{len(refs.points)} reference points of {args.profile}; {spec.model} on "
              f"{spec.device}, {spec.threads} thread(s)", flush=True)
        ratios: list[float] = []
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < args.seconds:
            d = measure_drift(refs, engines.paged, engines.static, seed=k)
            k += 1
            if d["ratio"] is None:
                continue
            ratios.append(d["ratio"])
            points = " ".join(f"{r['ratio']:.2f}" for r in d["points"])
            print(f"{time.perf_counter() - t0:7.0f} s  drift {d['ratio']:.3f}  points {points}",
                  flush=True)
        return ratios

    ratios = with_threads(spec.threads, go)
    if len(ratios) < 2:
        print("too few rounds: give more --seconds")
        return 1
    steps = [abs(b - a) for a, b in itertools.pairwise(ratios)]
    print(f"\n{len(ratios)} rounds: drift {min(ratios):.3f}-{max(ratios):.3f} "
          f"(spread {max(ratios) / min(ratios):.2f}x); largest change between consecutive "
          f"rounds {max(steps):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
