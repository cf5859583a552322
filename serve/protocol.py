"""OpenAI-compatible request bodies: parsed and checked before anything reaches the engine.

`parse_completion` and `parse_chat` turn a decoded JSON body into a `GenerationRequest` or raise
`RequestError` naming the offending field (the HTTP layer answers 400 with it, in OpenAI's error
shape). Field names and defaults follow vLLM's OpenAI server: `max_tokens` (default: what the
context leaves after the prompt), `min_tokens`, `ignore_eos`, `stream`,
`stream_options.include_usage`, `priority` (lower = more urgent). Unknown fields are ignored, as
vLLM and OpenAI do; a known field of the wrong type is an error. Decoding is greedy: sampling
fields are accepted and ignored, except `n`, which must be 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Tokenize = Callable[[str], list[int]]
ApplyChat = Callable[[list[dict[str, str]]], list[int]]


class RequestError(ValueError):
    """A bad request: `param` is the field at fault, `status` the HTTP status to answer."""

    def __init__(self, param: str, message: str, status: int = 400) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = f"{param}: {message}"
        self.status = status

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        kind = "NotFoundError" if self.status == 404 else "BadRequestError"
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.status}}


@dataclass(frozen=True)
class ModelLimits:
    """What a request is checked against."""

    name: str  # the served model name (`model` must match it when given)
    max_model_len: int  # prompt + output tokens at most
    vocab_size: int
    tokenize: Tokenize | None = None  # None: the model has no tokenizer; token ids only
    apply_chat: ApplyChat | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request: token ids in, exactly `max_tokens` out unless EOS stops it earlier."""

    kind: Literal["completion", "chat"]
    prompt_token_ids: list[int]
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    priority: int


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any,
           what: str) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python: a JSON true is not a token count
    if isinstance(value, bool) and kind is not bool and bool not in (
            kind if isinstance(kind, tuple) else (kind,)):
        raise RequestError(name, f"must be {what}, got a boolean")
    if not isinstance(value, kind):
        raise RequestError(name, f"must be {what}, got {type(value).__name__}")
    return value


def _token_ids(name: str, value: Sequence[Any], vocab_size: int) -> list[int]:
    if not value:
        raise RequestError(name, "is empty")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise RequestError(name, "a list of token ids must hold integers only")
    bad = [t for t in value if not 0 <= t < vocab_size]
    if bad:
        raise RequestError(name, f"token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
    return [int(t) for t in value]


def _prompt_ids(value: Any, limits: ModelLimits) -> list[int]:
    """`prompt`: text, token ids, or a batch of one of either."""
    if isinstance(value, list) and value and isinstance(value[0], str | list):
        if len(value) != 1:
            raise RequestError("prompt", f"batches of prompts are not supported (got "
                               f"{len(value)}): send one request per prompt")
        value = value[0]
    if isinstance(value, str):
        if limits.tokenize is None:
            raise RequestError("prompt", f"model {limits.name} has no tokenizer: send the "
                               "prompt as a list of token ids")
        if not value:
            raise RequestError("prompt", "is empty")
        return _token_ids("prompt", limits.tokenize(value), limits.vocab_size)
    if isinstance(value, list):
        return _token_ids("prompt", value, limits.vocab_size)
    raise RequestError("prompt", f"must be a string or a list of token ids, got "
                       f"{type(value).__name__}")


def _messages_ids(value: Any, limits: ModelLimits) -> list[int]:
    if not isinstance(value, list) or not value:
        raise RequestError("messages", "must be a non-empty list of {role, content} objects")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise RequestError(f"messages[{i}]", "must be an object with string role and "
                               "content")
        messages.append({"role": m["role"], "content": m["content"]})
    if limits.apply_chat is None:
        raise RequestError("messages", f"model {limits.name} has no tokenizer or chat template: "
                           "use /v1/completions with token ids")
    return _token_ids("messages", limits.apply_chat(messages), limits.vocab_size)


def _common(body: Any, limits: ModelLimits, kind: Literal["completion", "chat"],
            prompt: Callable[[dict[str, Any]], list[int]], max_field: str) -> GenerationRequest:
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    model = _typed(body, "model", str, None, "a string")
    if model is not None and model != limits.name:
        raise RequestError("model", f"the model {model!r} does not exist; this server serves "
                           f"{limits.name!r}", status=404)
    ids = prompt(body)
    n = _typed(body, "n", int, 1, "an integer")
    if n != 1:
        raise RequestError("n", "only n=1 is supported (greedy decoding)")
    room = limits.max_model_len - len(ids)
    if room <= 0:
        raise RequestError("prompt" if kind == "completion" else "messages",
                           f"{len(ids)} prompt tokens leave no room in the model's context of "
                           f"{limits.max_model_len} tokens")
    max_tokens = _typed(body, max_field, int, None, "an integer")
    if max_tokens is None and max_field != "max_tokens":
        max_tokens = _typed(body, "max_tokens", int, None, "an integer")
    if max_tokens is None:
        max_tokens = room
    if max_tokens < 1:
        raise RequestError(max_field, f"must be at least 1, got {max_tokens}")
    if max_tokens > room:
        raise RequestError(max_field, f"this model's maximum context length is "
                           f"{limits.max_model_len} tokens; {len(ids)} prompt tokens + "
                           f"{max_tokens} output tokens exceed it")
    min_tokens = _typed(body, "min_tokens", int, 0, "an integer")
    if not 0 <= min_tokens <= max_tokens:
        raise RequestError("min_tokens", f"must be between 0 and max_tokens ({max_tokens}), "
                           f"got {min_tokens}")
    options = _typed(body, "stream_options", dict, {}, "an object")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError("stream_options.include_usage", "must be a boolean")
    for name in ("temperature", "top_p"):
        _typed(body, name, (int, float), None, "a number")
    return GenerationRequest(
        kind=kind,
        prompt_token_ids=ids,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=_typed(body, "ignore_eos", bool, False, "a boolean"),
        stream=_typed(body, "stream", bool, False, "a boolean"),
        include_usage=include_usage,
        priority=_typed(body, "priority", int, 0, "an integer"),
    )


def parse_completion(body: Any, limits: ModelLimits) -> GenerationRequest:
    """POST /v1/completions."""

    def prompt(b: dict[str, Any]) -> list[int]:
        if "prompt" not in b:
            raise RequestError("prompt", "is required")
        return _prompt_ids(b["prompt"], limits)

    return _common(body, limits, "completion", prompt, "max_tokens")


def parse_chat(body: Any, limits: ModelLimits) -> GenerationRequest:
    """POST /v1/chat/completions (`max_completion_tokens`, or the older `max_tokens`)."""

    def prompt(b: dict[str, Any]) -> list[int]:
        if "messages" not in b:
            raise RequestError("messages", "is required")
        return _messages_ids(b["messages"], limits)

    return _common(body, limits, "chat", prompt, "max_completion_tokens")
