"""The HTTP layer: OpenAI-compatible endpoints over an engine handle (FastAPI).

Handlers never wait for the engine: they check the body (`serve.protocol`), `submit` it, and
read the request's events from an asyncio queue that the engine thread (or the engine
process's reader thread) feeds through `call_soon_threadsafe`, once per step. A streamed
response sends one server-sent event per token (the last one carries `finish_reason`), then,
with `stream_options.include_usage`, a usage chunk, then `[DONE]`. The usage of every response
also carries `server_timing` (queue, TTFT and E2E as the server measured them, in ms), so a
client can tell its own overhead apart. A client that goes away mid-request is aborted: the
engine frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from batchsim.serve.dashboard import dashboard_page
from batchsim.serve.events import Batch, EngineHandle, Event, Unavailable
from batchsim.serve.live_stats import LiveStats
from batchsim.serve.protocol import (
    GenerationRequest,
    ModelLimits,
    RequestError,
    parse_chat,
    parse_completion,
)

Detokenize = Callable[[int], str]


def _ms(value_s: float | None) -> float | None:
    return None if value_s is None else value_s * 1e3


def _usage(gen: GenerationRequest, completion_tokens: int, ev: Event) -> dict[str, Any]:
    timing = ev.timing or {}
    return {
        "prompt_tokens": len(gen.prompt_token_ids),
        "completion_tokens": completion_tokens,
        "total_tokens": len(gen.prompt_token_ids) + completion_tokens,
        "server_timing": {"queue_ms": _ms(timing.get("queue_s")),
                          "ttft_ms": _ms(timing.get("ttft_s")),
                          "e2el_ms": _ms(timing.get("e2e_s"))},
    }


def _error(status: int, message: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}.get(
        status, "InternalServerError")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": status}}, status_code=status, headers=headers)


class _Response:
    """Builds the OpenAI objects of one request (completion or chat, chunk or whole)."""

    def __init__(self, gen: GenerationRequest, model: str, detokenize: Detokenize | None) -> None:
        self.gen = gen
        self.model = model
        self.detokenize = detokenize
        chat = gen.kind == "chat"
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def text(self, tokens: list[int]) -> str:
        return "".join(self.detokenize(t) for t in tokens) if self.detokenize else ""

    def head(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = self.object + (".chunk" if chunk and self.gen.kind == "chat" else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices}

    def choice(self, tokens: list[int], finish: str | None, chunk: bool) -> dict[str, Any]:
        text = self.text(tokens)
        out: dict[str, Any] = {"index": 0, "token_ids": tokens, "finish_reason": finish}
        if self.gen.kind == "chat":
            out["delta" if chunk else "message"] = {"role": "assistant", "content": text}
        else:
            out["text"] = text
            out["logprobs"] = None
        return out


def _finish_reason(ev: Event) -> str:
    return "length" if ev.reason == "length" else "stop" if ev.reason == "stop" else "abort"


class EventPoster:
    """The engine loop's `post`: one thread-safe hand-over per step onto the event loop, which
    then puts each event in its request's queue (the sinks are `asyncio.Queue.put_nowait`)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the app starts serving

    def __call__(self, batch: Batch) -> None:
        if not batch:
            return  # a step without events (statistics only)
        assert self.loop is not None, "events before the server started"
        self.loop.call_soon_threadsafe(batch.deliver)


def create_app(engine: EngineHandle, limits: ModelLimits, stats: LiveStats, policy: str,
               poster: EventPoster, detokenize: Detokenize | None = None) -> FastAPI:
    """The ASGI app; the caller owns the engine loop (starts and shuts it down) and gives it
    `poster` as its `post`, which the app binds to its event loop on the first request."""
    app = FastAPI(title="batchsim serve", docs_url=None, redoc_url=None, openapi_url=None)
    page: list[str] = []  # built on the first GET / (plotly.js is a few MB)

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError("body", f"is not valid JSON ({e})") from None

    async def generate(request: Request,
                       parse: Callable[[Any, ModelLimits], GenerationRequest]) -> Any:
        if poster.loop is None:
            poster.loop = asyncio.get_running_loop()
        try:
            gen = parse(await body_of(request), limits)
        except RequestError as e:
            return JSONResponse(e.body(), status_code=e.status)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        try:
            index = engine.submit(gen, queue.put_nowait)  # called on this loop, by post_batch
        except Unavailable as e:
            return _error(503, str(e), headers={"Retry-After": str(e.retry_after_s)})
        out = _Response(gen, limits.name, detokenize)
        if gen.stream:
            return StreamingResponse(_stream(engine, index, queue, gen, out),
                                     media_type="text/event-stream")
        return await _whole(engine, index, queue, gen, out, request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(request, parse_completion)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await generate(request, parse_chat)

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": limits.name, "object": "model",
                                            "created": int(stats.start_wall),
                                            "owned_by": "batchsim", "root": limits.name,
                                            "max_model_len": limits.max_model_len}]}

    @app.get("/health")
    async def health() -> Any:
        if engine.error is not None or engine.stopped:
            return _error(503, f"engine not running: {engine.error or 'stopped'}")
        return PlainTextResponse("")

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(stats.prometheus(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/")
    async def dashboard() -> Any:
        if not page:
            page.append(dashboard_page(limits.name, policy))
        return HTMLResponse(page[0])

    @app.get("/dashboard/data")
    async def dashboard_data() -> Any:
        data: dict[str, Any] = stats.history()
        data["status"] = (f"{stats.running} running, {stats.waiting} waiting, KV "
                          f"{stats.kv_usage:.0%}, {stats.generation_tokens} tokens generated")
        return data

    return app


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def _stream(engine: EngineHandle, index: int, queue: asyncio.Queue[Event],
                  gen: GenerationRequest, out: _Response) -> AsyncIterator[str]:
    """SSE events of one request; aborts it if the client goes away (cancel or close)."""
    done = False
    count = 0
    try:
        while True:
            ev = await queue.get()
            if ev.kind == "token":
                count += 1
                finish = _finish_reason(ev) if ev.reason else None
                yield _sse(out.head([out.choice([ev.token], finish, chunk=True)], chunk=True))
                if ev.reason is None:
                    continue
            elif ev.reason == "rejected":
                yield _sse({"error": {"message": f"rejected: {ev.detail}", "type":
                                      "ServiceUnavailableError", "code": 503}})
            else:
                yield _sse(out.head([out.choice([], _finish_reason(ev), chunk=True)],
                                    chunk=True))
            if gen.include_usage:
                yield _sse({**out.head([], chunk=True), "usage": _usage(gen, count, ev)})
            yield "data: [DONE]\n\n"
            done = True
            return
    finally:
        if not done:
            engine.abort(index)


async def _whole(engine: EngineHandle, index: int, queue: asyncio.Queue[Event],
                 gen: GenerationRequest, out: _Response, request: Request) -> Any:
    """A non-streamed response; polls for a disconnect while waiting (then aborts)."""
    tokens: list[int] = []
    while True:
        try:
            ev = await asyncio.wait_for(queue.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                engine.abort(index)
                return PlainTextResponse("", status_code=499)
            continue
        if ev.kind == "token":
            tokens.append(ev.token)
            if ev.reason is None:
                continue
        if ev.reason == "rejected":
            return _error(503, f"rejected: {ev.detail}", headers={"Retry-After": "1"})
        body = out.head([out.choice(tokens, _finish_reason(ev), chunk=False)], chunk=False)
        body["usage"] = _usage(gen, len(tokens), ev)
        return body
