"""The engine loop in its own process: statistics relayed exactly, a dead engine fails cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from batchsim.serve.live_stats import LiveStats
from batchsim.serve.stats_relay import StatsRelay, replay
from tests.serve.conftest import ROOT, start_server


def test_relayed_statistics_equal_direct_ones():
    """Replaying the recorded calls gives the same /metrics as making them directly."""
    direct, relay = LiveStats("m"), StatsRelay()
    for target in (direct, relay):
        target.admitted(12)
        target.step(0.02, 0.001, 3, 3, 1, 0.25, 1, host_cpu_s=0.0004, host_runqueue_s=0.0005)
        target.request_done("length", 0.03, 0.2, 0.01, [0.02, 0.021])
        target.idle(0, 0, 0.0)
    relayed = LiveStats("m")
    relayed.start_wall = direct.start_wall
    replay(relayed, relay.take())
    assert relay.take() == []
    drop_uptime = [ln for ln in direct.prometheus().splitlines() if "busy_fraction{" not in ln]
    assert drop_uptime == [ln for ln in relayed.prometheus().splitlines()
                           if "busy_fraction{" not in ln]
    assert relayed.host_runqueue_s == 0.0005 and relayed.generation_tokens == 3


def test_engine_build_failure_is_one_line_exit_2():
    """A model the child cannot build: the parent prints the child's one line, exits 2."""
    proc = subprocess.run([sys.executable, "-m", "batchsim", "serve", "--model", "no-such-model",
                           "--policy", "continuous"], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown model 'no-such-model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _engine_child(pid: int) -> int:
    """The spawned engine process (not multiprocessing's resource tracker)."""
    kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    (engine,) = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    return engine


def test_a_dead_engine_process_ends_streams_and_fails_health():
    """SIGKILL of the engine child mid-stream: the stream ends, /health is 503, new requests
    get 503, and the server still shuts down on SIGTERM with status 0."""
    server = start_server("--model", "tiny-qwen2", "--policy", "continuous")
    try:
        child = _engine_child(server.proc.pid)
        body = {"prompt": [1, 2, 3], "max_tokens": 500, "ignore_eos": True, "stream": True}
        events = []
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60,
                          trust_env=False) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 2:
                    os.kill(child, signal.SIGKILL)
        assert events[-1] == "[DONE]"
        assert "engine process exited" in json.loads(events[-2])["error"]["message"]
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/health", trust_env=False).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        again = httpx.post(f"{server.url}/v1/completions", json={"prompt": [1], "max_tokens": 2},
                           trust_env=False, timeout=10)
        assert again.status_code == 503 and "Retry-After" in again.headers
    finally:
        assert server.stop() == 0


def test_hybrid_is_refused_in_one_line_before_any_engine_is_built(capsys):
    """The hybrid policy's CPU path is not served: one line, exit 2, nothing started."""
    from batchsim.cli import main

    assert main(["serve", "--model", "tiny-qwen2", "--policy", "hybrid"]) == 2
    err = capsys.readouterr().err
    assert "serve cannot run --policy hybrid yet" in err and err.count("\n") == 1
