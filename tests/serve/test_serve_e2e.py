"""`batchsim serve` (continuous policy, tiny-qwen2 on CPU) driven over loopback."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pandas as pd

from batchsim.cli import main
from tests.serve.conftest import Server
from tests.serve.streams import stream_completion


def test_bench_end_to_end(continuous_server: Server, tmp_path):
    """bench writes simulate's run folder; every request got exactly its output tokens, and
    the server counted exactly those tokens."""
    before = continuous_server.metrics()
    out = tmp_path / "bench"
    rc = main(["bench", "--endpoint", continuous_server.url, "--num-requests", "24",
               "--input-len", "24", "--output-len", "12", "--range-ratio", "0.5",
               "--request-rate", "40", "--seed", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("config.json", "metrics.json", "requests.csv", "steps.csv", "report.html",
                 "itl_cdf.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] == 24 and metrics["failed"] == 0
    assert metrics["generated_tokens_match"] is True
    req = pd.read_csv(out / "requests.csv")
    assert (req["generated_tokens"] == req["output_tokens"]).all()
    assert (req["ttft_ms"] <= req["e2el_ms"]).all()
    # the server measures from its own arrival, later than the client's send
    assert (req["server_ttft_ms"] <= req["ttft_ms"] + 1e-6).all()
    after = continuous_server.wait_idle()
    produced = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert produced == req["output_tokens"].sum()
    assert metrics["server_metrics"]["generation_tokens"] == produced


def test_64_concurrent_streams_get_exactly_their_tokens(continuous_server: Server):
    """64 clients stream back to back for a bounded time; each response has exactly
    max_tokens tokens; afterwards nothing runs and the KV pool is empty."""
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 6.0
    results = []

    async def client_loop(client: httpx.AsyncClient, k: int) -> None:
        for _ in range(3):  # bounded in count and in time
            if time.monotonic() > deadline:
                return
            n_in, n_out = int(rng.integers(4, 40)), int(rng.integers(2, 24))
            prompt = rng.integers(0, 512, n_in).tolist()
            got = await stream_completion(client, continuous_server.url, prompt, n_out)
            results.append((n_out, got))

    async def go() -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with asyncio.timeout(180), httpx.AsyncClient(
                limits=limits, timeout=60.0, trust_env=False) as client:
            await asyncio.gather(*(client_loop(client, k) for k in range(64)))

    asyncio.run(go())
    assert len(results) >= 64
    for n_out, got in results:
        assert got.status == 200 and got.done
        assert len(got.tokens) == n_out and got.finish == "length"
        assert got.usage is not None and got.usage["completion_tokens"] == n_out
    idle = continuous_server.wait_idle()
    assert idle["vllm:gpu_cache_usage_perc"] == 0
    assert idle["vllm:num_requests_running"] == 0


def test_disconnect_mid_stream_aborts_and_frees_kv(continuous_server: Server):
    """A client that closes its stream after a few tokens is aborted: its KV blocks return."""
    before = continuous_server.metrics()

    async def go() -> int:
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
            body = {"prompt": list(range(1, 60)), "max_tokens": 400, "ignore_eos": True,
                    "stream": True}
            seen = 0
            async with client.stream("POST", f"{continuous_server.url}/v1/completions",
                                     json=body) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: "):
                        seen += 1
                    if seen == 3:
                        break  # leaving the block closes the connection
            return seen

    assert asyncio.run(go()) == 3
    after = continuous_server.wait_idle()
    assert after["vllm:gpu_cache_usage_perc"] == 0
    assert after["vllm:num_requests_running"] == 0
    assert (after["vllm:request_success_total"] - before["vllm:request_success_total"]) == 1
    produced = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert 3 <= produced < 400  # it stopped long before its 400 tokens


def test_malformed_requests_answer_400_naming_the_field(continuous_server: Server):
    url = f"{continuous_server.url}/v1/completions"
    cases = [(b"{not json", "body"), (b'{"prompt": [1, 2], "max_tokens": "5"}', "max_tokens"),
             (b'{"prompt": [1, 2], "stream": 1}', "stream"),
             (b'{"prompt": [1, 2], "max_tokens": 600}', "max_tokens"),
             (b'{"prompt": [1, 1000]}', "prompt"), (b'{"prompt": "text"}', "prompt"),
             (b'{"prompt": ' + json.dumps(list(range(1, 513))).encode() + b"}", "prompt"),
             (b'{"prompt": [1], "min_tokens": 9, "max_tokens": 3}', "min_tokens")]
    for body, field in cases:
        resp = httpx.post(url, content=body, timeout=10.0, trust_env=False)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["param"] == field, (body, resp.text)
    resp = httpx.post(f"{continuous_server.url}/v1/chat/completions", json={"messages": "hi"},
                      timeout=10.0, trust_env=False)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"


def test_models_health_metrics_and_dashboard(continuous_server: Server):
    get = lambda path: httpx.get(continuous_server.url + path, timeout=10.0,  # noqa: E731
                                 trust_env=False)
    assert get("/health").status_code == 200
    models = get("/v1/models").json()
    assert models["data"][0]["id"] == "tiny-qwen2" and models["data"][0]["max_model_len"] == 512
    text = get("/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_count", "vllm:e2e_request_latency_seconds_sum",
                 "batchsim:device_busy_fraction", "vllm:num_preemptions_total"):
        assert name in text, name
    page = get("/").text
    assert "Plotly" in page and "dashboard/data" in page and "https://" not in page[:2000]
    data = get("/dashboard/data").json()
    assert set(data) >= {"t_s", "tokens_per_s", "running", "waiting", "kv_usage",
                         "busy_fraction"}
