"""Client helpers for the serve tests: one streamed completion, read to its end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Streamed:
    status: int
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False  # saw [DONE]


async def stream_completion(client: httpx.AsyncClient, url: str, prompt: list[int],
                            max_tokens: int, **extra: Any) -> Streamed:
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}, **extra}
    async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
        out = Streamed(resp.status_code)
        if resp.status_code != 200:
            await resp.aread()
            return out
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                out.done = True
                break
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                out.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                out.tokens.extend(choice.get("token_ids") or [])
                out.finish = choice.get("finish_reason") or out.finish
    return out
