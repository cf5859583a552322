"""The load client of `batchsim bench`: `vllm bench serve` semantics against any OpenAI server.

Each request is sent at its workload arrival time (seeded arrivals from `sim.workload`), as a
streamed `/v1/completions` call with token-id prompt, `max_tokens = min_tokens = output_tokens`
and `ignore_eos`, so it generates exactly its output length. With `max_concurrency` at most that
many are in flight (later ones wait for a slot, as vllm bench's semaphore does). Timestamps are
the client's `perf_counter`: TTFT from sending to the first chunk with a choice, one inter-token
gap per further chunk, E2EL to the end of the stream. An unreachable server, an error status or
an error event fails that request only (HTTP 503 and 429 count as rejected), never the run.
Every loop is bounded: one attempt per request, each within `request_timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from batchsim.sim.workload.workload import Workload

Status = Literal["completed", "rejected", "failed"]


@dataclass(frozen=True)
class LoadSpec:
    """Where and how to send (the workload and prompts come separately)."""

    endpoint: str  # base URL, e.g. http://127.0.0.1:8000
    model: str | None = None  # None: the server's first model (GET /v1/models)
    max_concurrency: int | None = None
    request_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint must be an http:// or https:// URL, got "
                             f"{self.endpoint!r}")
        if self.max_concurrency is not None and self.max_concurrency <= 0:
            raise ValueError(f"--max-concurrency must be positive, got {self.max_concurrency}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"--request-timeout-s must be positive, got "
                             f"{self.request_timeout_s}")

    @property
    def base(self) -> str:
        return self.endpoint.rstrip("/").removesuffix("/v1")


@dataclass
class RequestResult:
    """What the client saw of one request (times in seconds)."""

    index: int
    status: Status = "failed"
    reason: str = ""
    sent_s: float = float("nan")  # since the run's start
    ttft_s: float = float("nan")  # since sent
    e2el_s: float = float("nan")
    chunk_s: list[float] = field(default_factory=list)  # arrival of every token chunk, since sent
    output_tokens: int = 0  # usage.completion_tokens, else tokens counted in the chunks
    server_timing: dict[str, Any] | None = None  # the server's own times, when it sends them


def request_body(model: str, prompt: Sequence[int], output_tokens: int,
                 priority: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model, "prompt": list(prompt), "max_tokens": output_tokens,
        "min_tokens": output_tokens, "ignore_eos": True, "temperature": 0.0, "stream": True,
        "stream_options": {"include_usage": True},
    }
    if priority:
        body["priority"] = priority
    return body


async def first_model(client: httpx.AsyncClient, base: str) -> str:
    """The first model the server lists (ValueError if it cannot be asked)."""
    try:
        resp = await client.get(f"{base}/v1/models", timeout=10.0)
        resp.raise_for_status()
        return str(resp.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{base}/v1/models: cannot list the server's models ({e}); is the "
                         "server running? pass --served-model to skip this") from None


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any],
               result: RequestResult, t0: float, timeout_s: float) -> None:
    sent = time.perf_counter()
    result.sent_s = sent - t0
    counted = 0
    try:
        async with asyncio.timeout(timeout_s), client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                result.status = "rejected" if resp.status_code in (429, 503) else "failed"
                result.reason = f"HTTP {resp.status_code}: {_message(text)}"
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = time.perf_counter() - sent
                chunk = json.loads(data)
                if "error" in chunk:
                    result.reason = f"error event: {_message(json.dumps(chunk))}"
                    return
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
                    result.server_timing = usage.get("server_timing")
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                choice = choices[0]
                if (choice.get("text") or choice.get("token_ids")
                        or (choice.get("delta") or {}).get("content")):
                    if not result.chunk_s:
                        result.ttft_s = now
                    result.chunk_s.append(now)
                    counted += len(choice.get("token_ids") or [None])
                if choice.get("finish_reason") == "abort":
                    result.reason = "the server aborted the request"
                    return
            result.e2el_s = time.perf_counter() - sent
    except TimeoutError:
        result.reason = f"no complete answer within {timeout_s:g} s"
        return
    except httpx.HTTPError as e:
        result.reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return
    except json.JSONDecodeError as e:
        result.reason = f"malformed event: {e}"
        return
    if not result.chunk_s:
        result.reason = "the stream ended without any token"
        return
    result.output_tokens = result.output_tokens or counted
    result.status = "completed"


def _message(text: str) -> str:
    try:
        err = json.loads(text).get("error", {})
        return str(err.get("message", text) if isinstance(err, dict) else err)
    except (json.JSONDecodeError, AttributeError):
        return text.strip()


async def run_load(spec: LoadSpec, workload: Workload, prompts: Sequence[Sequence[int]],
                   progress: Callable[[int], None] | None = None) -> tuple[list[RequestResult],
                                                                           str]:
    """Send every request of workload (prompts: token ids per request); returns the results
    in workload order and the model name used."""
    n = len(workload)
    results = [RequestResult(i) for i in range(n)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(spec.request_timeout_s, connect=10.0)
    sem = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
    done = 0
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        model = spec.model or await first_model(client, spec.base)
        url = f"{spec.base}/v1/completions"
        t0 = time.perf_counter()

        async def send(i: int) -> None:
            nonlocal done
            delay = t0 + float(workload.arrival_s[i]) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = request_body(model, prompts[i], int(workload.output_tokens[i]),
                                int(workload.priority[i]))
            if sem is None:
                await _one(client, url, body, results[i], t0, spec.request_timeout_s)
            else:
                async with sem:
                    await _one(client, url, body, results[i], t0, spec.request_timeout_s)
            done += 1
            if progress is not None:
                progress(done)

        await asyncio.gather(*(send(i) for i in range(n)))
    return results, model
