"""OpenAI request bodies: what is accepted, and the field each error names."""

from __future__ import annotations

import pytest

from batchsim.serve.protocol import ModelLimits, RequestError, parse_chat, parse_completion

LIMITS = ModelLimits(name="m", max_model_len=64, vocab_size=100)
TEXT = ModelLimits(name="m", max_model_len=64, vocab_size=100,
                   tokenize=lambda s: [ord(c) % 100 for c in s],
                   apply_chat=lambda ms: [1, *(ord(c) % 100 for m in ms for c in m["content"])])


def test_defaults_follow_vllm():
    """max_tokens defaults to what the context leaves; greedy, no stream, priority 0."""
    req = parse_completion({"prompt": [1, 2, 3]}, LIMITS)
    assert req.prompt_token_ids == [1, 2, 3] and req.max_tokens == 61
    assert (req.min_tokens, req.ignore_eos, req.stream, req.include_usage, req.priority) == (
        0, False, False, False, 0)


def test_all_fields_and_batch_of_one():
    req = parse_completion({"prompt": [[4, 5]], "max_tokens": 7, "min_tokens": 7,
                            "ignore_eos": True, "stream": True, "priority": -2,
                            "stream_options": {"include_usage": True}, "model": "m",
                            "temperature": 0, "unknown_field": {"x": 1}}, LIMITS)
    assert (req.prompt_token_ids, req.max_tokens, req.min_tokens, req.priority) == (
        [4, 5], 7, 7, -2)
    assert req.ignore_eos and req.stream and req.include_usage


def test_text_and_chat_need_a_tokenizer():
    assert parse_completion({"prompt": "ab"}, TEXT).prompt_token_ids == [97, 98]
    chat = parse_chat({"messages": [{"role": "user", "content": "a"}],
                       "max_completion_tokens": 3}, TEXT)
    assert chat.prompt_token_ids == [1, 97] and chat.max_tokens == 3 and chat.kind == "chat"
    with pytest.raises(RequestError) as e:
        parse_completion({"prompt": "ab"}, LIMITS)
    assert e.value.param == "prompt" and "token ids" in e.value.message


@pytest.mark.parametrize(("body", "param"), [
    ([1, 2], "body"),
    ({}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [1, True]}, "prompt"),
    ({"prompt": [100]}, "prompt"),
    ({"prompt": [[1], [2]]}, "prompt"),
    ({"prompt": [1] * 64}, "prompt"),
    ({"prompt": [1], "max_tokens": 64}, "max_tokens"),
    ({"prompt": [1], "max_tokens": 0}, "max_tokens"),
    ({"prompt": [1], "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": [1], "max_tokens": True}, "max_tokens"),
    ({"prompt": [1], "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"prompt": [1], "ignore_eos": "yes"}, "ignore_eos"),
    ({"prompt": [1], "stream": 1}, "stream"),
    ({"prompt": [1], "stream_options": []}, "stream_options"),
    ({"prompt": [1], "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"prompt": [1], "priority": "high"}, "priority"),
    ({"prompt": [1], "n": 2}, "n"),
    ({"prompt": [1], "temperature": "hot"}, "temperature"),
])
def test_errors_name_the_field(body, param):
    with pytest.raises(RequestError) as e:
        parse_completion(body, LIMITS)
    assert e.value.param == param and e.value.status == 400
    assert e.value.body()["error"]["param"] == param


def test_unknown_model_is_404():
    with pytest.raises(RequestError) as e:
        parse_completion({"prompt": [1], "model": "other"}, LIMITS)
    assert (e.value.param, e.value.status) == ("model", 404)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": "2"},
     "max_completion_tokens"),
])
def test_chat_errors(body, param):
    with pytest.raises(RequestError) as e:
        parse_chat(body, TEXT)
    assert e.value.param == param
