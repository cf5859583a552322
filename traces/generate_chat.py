"""Generate traces/chat.jsonl: synthetic chat traffic shaped like a public conversation trace.

Distributions (fitted by hand to published statistics of the Azure LLM inference trace 2023,
conversation: input median 1,020 / p99 4,142 tokens, output median 129 / p99 601 tokens,
19,366 requests in 58 minutes = 5.5 req/s; see shared docs MODELS-AND-TRACES.md):
- input tokens  ~ lognormal(median 1020, sigma 0.602), so its p99 is 4142; clipped to [8, 16384]
- output tokens ~ lognormal(median 129, sigma 0.662), so its p99 is 601; clipped to [1, 4096]
  (matching median and p99 puts the means at ~1,220 and ~160 tokens, against the trace's
  published 1,155 and 211: a lognormal cannot match all three; the tail was preferred)
- arrivals: gamma inter-arrival gaps, mean rate 5.5 req/s, shape 0.5 (coefficient of variation
  1.41, burstier than Poisson; the shape is an assumption, not a published figure)
Usage: python traces/generate_chat.py [--num-requests 3000] [--seed 2023] [--out traces/chat.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

Z99 = 2.3263478740408408  # standard normal 99th percentile


def lognormal(rng: np.random.Generator, median: float, p99: float, n: int) -> np.ndarray:
    sigma = math.log(p99 / median) / Z99
    return rng.lognormal(mean=math.log(median), sigma=sigma, size=n)


def generate(num_requests: int, seed: int, rate: float = 5.5, shape: float = 0.5) -> list[dict]:
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=shape, scale=1.0 / (rate * shape), size=num_requests)
    arrival = np.concatenate(([0.0], np.cumsum(gaps[:-1])))
    inputs = np.clip(np.rint(lognormal(rng, 1020, 4142, num_requests)), 8, 16384).astype(int)
    outputs = np.clip(np.rint(lognormal(rng, 129, 601, num_requests)), 1, 4096).astype(int)
    return [
        {"arrival_s": round(float(a), 6), "input_tokens": int(i), "output_tokens": int(o),
         "id": f"chat-{k:05d}"}
        for k, (a, i, o) in enumerate(zip(arrival, inputs, outputs, strict=True))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "chat.jsonl")
    args = parser.parse_args()
    rows = generate(args.num_requests, args.seed)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inputs = np.array([r["input_tokens"] for r in rows])
    outputs = np.array([r["output_tokens"] for r in rows])
    span = rows[-1]["arrival_s"]
    print(f"{args.out}: {len(rows)} requests over {span:.0f} s ({len(rows) / span:.2f} req/s)")
    for name, x in (("input", inputs), ("output", outputs)):
        print(f"  {name}: mean {x.mean():.0f} median {np.median(x):.0f} "
              f"p99 {np.percentile(x, 99):.0f} max {x.max()}")


if __name__ == "__main__":
    main()
