"""`batchsim serve` with a padded-batch policy: exact tokens, and an aborted row leaves no KV."""

from __future__ import annotations

import asyncio

import httpx

from tests.serve.conftest import start_server
from tests.serve.streams import stream_completion


def test_static_batches_stream_exact_tokens_and_abort():
    server = start_server("--model", "tiny-qwen2", "--policy", "static",
                          "--set", "max_batch_size=4", "--set", "max_queue_delay_ms=30")
    try:
        async def go() -> list[object]:
            async with asyncio.timeout(120), httpx.AsyncClient(timeout=60.0,
                                                               trust_env=False) as client:
                lengths = [3, 9, 5, 12, 7, 2]
                whole = [stream_completion(client, server.url, [1] * (4 + i), n)
                         for i, n in enumerate(lengths)]
                return [lengths, *await asyncio.gather(*whole)]

        lengths, *got = asyncio.run(go())
        for n, g in zip(lengths, got, strict=True):
            assert g.status == 200 and len(g.tokens) == n and g.finish == "length"

        async def abort_one() -> None:
            async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
                body = {"prompt": [3, 4, 5], "max_tokens": 200, "ignore_eos": True,
                        "stream": True}
                async with client.stream("POST", f"{server.url}/v1/completions",
                                         json=body) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            break

        asyncio.run(abort_one())
        idle = server.wait_idle(timeout_s=60)
        assert idle["vllm:gpu_cache_usage_perc"] == 0 and idle["vllm:num_requests_running"] == 0
        assert idle["vllm:generation_tokens_total"] < sum(lengths) + 200
    finally:
        assert server.stop() == 0
