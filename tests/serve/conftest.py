"""A `batchsim serve` subprocess on a free loopback port, for the end-to-end tests.

Every wait is bounded; the server is stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0  # model build + warm-up on a loaded 2-core machine


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]

    def metrics(self) -> dict[str, float]:
        from batchsim.serve.bench_run import parse_prometheus

        return parse_prometheus(httpx.get(f"{self.url}/metrics", timeout=10.0,
                                          trust_env=False).text)

    def wait_idle(self, timeout_s: float = 30.0) -> dict[str, float]:
        """/metrics once nothing runs or waits (bounded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = self.metrics()
            idle = (m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
                    and m["vllm:gpu_cache_usage_perc"] == 0)
            if idle or time.monotonic() > deadline:
                return m
            time.sleep(0.2)

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("the server did not exit within the bound") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(*args: str) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "batchsim", "serve", "--port", str(port), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    server = Server(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2.0, trust_env=False).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise AssertionError("the server did not start in time")


@pytest.fixture(scope="module")
def continuous_server() -> Iterator[Server]:
    server = start_server("--model", "tiny-qwen2", "--policy", "continuous",
                          "--set", "max_num_seqs=64")
    yield server
    assert server.stop() == 0
