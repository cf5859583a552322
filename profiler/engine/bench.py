"""Smoke benchmark of the paged engine: build time, one prefill step and one decode step.

    python -m batchsim.profiler.engine.bench --model qwen2.5-0.5b --dtype bfloat16 --prefill-tokens
    128 \
        --decode-batch 8

Prints one JSON object. Each kind of step runs once untimed (first calls of a shape are slow on
CPU), then ``--repeats`` timed times; the record lists each repeat's wall ms and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from batchsim.profiler.engine.paged_engine import Engine
from batchsim.profiler.engine.records import EngineChunk, EnginePlan


def _summary(walls: list[float], gpus: list[float | None]) -> dict[str, Any]:
    gpu = [g for g in gpus if g is not None]
    return {
        "wall_ms": [round(w, 2) for w in walls],
        "wall_ms_median": round(statistics.median(walls), 2),
        "gpu_ms_median": round(statistics.median(gpu), 2) if gpu else None,
    }


def run(
    model: str,
    device: str,
    dtype: str,
    prefill_tokens: int,
    decode_batch: int,
    decode_context: int,
    repeats: int,
) -> dict[str, Any]:
    """Build the engine; time prefill steps of ``prefill_tokens``, decodes of ``decode_batch``."""
    t0 = time.perf_counter()
    engine = Engine(model, device=device, dtype=dtype, kv_memory_bytes=256 << 20, block_size=16)
    build_s = time.perf_counter() - t0
    vocab = engine.info.vocab_size
    prompt = [(7 * i + 3) % vocab for i in range(max(prefill_tokens, decode_context))]

    engine.add("warmup", prompt[:16])
    engine.step(EnginePlan(prefills=[EngineChunk("warmup", 0, 16)]))
    engine.free("warmup")

    walls, gpus = [], []
    for r in range(repeats):
        engine.add(("p", r), prompt[:prefill_tokens])
        t = engine.step(EnginePlan(prefills=[EngineChunk(("p", r), 0, prefill_tokens)])).timing
        engine.free(("p", r))
        walls.append(t.wall_ms)
        gpus.append(t.gpu_ms)
    prefill = _summary(walls, gpus)

    ids = [("d", i) for i in range(decode_batch)]
    for sid in ids:
        engine.add(sid, prompt[:decode_context])
    engine.step(EnginePlan(prefills=[EngineChunk(sid, 0, decode_context) for sid in ids]))
    engine.step(EnginePlan(decodes=ids))  # warm-up: first decode shape
    walls, gpus = [], []
    for _ in range(repeats):
        t = engine.step(EnginePlan(decodes=ids)).timing
        walls.append(t.wall_ms)
        gpus.append(t.gpu_ms)
    return {
        "model": model,
        "device": device,
        "dtype": dtype,
        "backend": engine.backend,
        "build_s": round(build_s, 2),
        "num_params": engine.info.num_params,
        f"prefill_{prefill_tokens}": prefill,
        f"decode_batch_{decode_batch}_context_{decode_context}": _summary(walls, gpus),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--prefill-tokens", type=int, default=128)
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument(
        "--decode-context", type=int, default=128, help="prompt tokens per decoding sequence"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        json.dumps(
            run(
                args.model,
                args.device,
                args.dtype,
                args.prefill_tokens,
                args.decode_batch,
                args.decode_context,
                args.repeats,
            )
        )
    )


if __name__ == "__main__":
    main()
