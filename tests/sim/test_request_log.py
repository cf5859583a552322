"""vLLM request logs and LLMServingSim workload files: read directly as traces, detected like the
other formats; a log's missing or out-of-order timestamps are one error naming file:line.

tests/data/traces/vllm_log.jsonl (3 requests, written out of arrival order, a blank line) and
llmservingsim.jsonl (epoch nanoseconds, input_tok_ids on some lines) are hand-made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batchsim.cli import main
from batchsim.sim.workload.request_log import read_request_log
from batchsim.sim.workload.traces import read_trace
from batchsim.sim.workload.transform import TraceOptions
from batchsim.sim.workload.workload import WorkloadError

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"
SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "llmservingsim"
          / "bench" / "examples" / "RTXPRO6000" / "Llama-3.1-8B" / "vllm" / "requests.jsonl")


def test_vllm_log_is_a_trace_of_queued_ts_from_the_first_request(caplog):
    """Arrivals are the server's queued_ts relative to the first; sorted; ids kept."""
    w = read_trace(DATA / "vllm_log.jsonl")
    assert w.provenance["format"] == "vllm" and w.provenance["sorted"]
    np.testing.assert_allclose(w.arrival_s, [0.0, 0.5, 1.5])
    assert w.input_tokens.tolist() == [100, 200, 300]
    assert w.output_tokens.tolist() == [11, 5, 2]
    assert w.ids == ["r0", "r1", "r2"] and w.line_numbers.tolist() == [1, 4, 2]
    assert "timestamps are not sorted" in caplog.text
    forced = read_trace(DATA / "vllm_log.jsonl", TraceOptions(format="vllm"))
    assert forced.input_tokens.tolist() == [100, 200, 300]


def test_llmservingsim_workload_in_nanoseconds():
    """arrival_time_ns becomes seconds from the first request, to the microsecond."""
    w = read_trace(DATA / "llmservingsim.jsonl")
    assert w.provenance["format"] == "llmservingsim"
    np.testing.assert_allclose(w.arrival_s, [0.0, 0.25, 1.000000001], atol=1e-6)
    assert w.input_tokens.tolist() == [128, 64, 4096]
    assert w.output_tokens.tolist() == [16, 4, 1]
    assert w.line_numbers.tolist() == [1, 2, 4]


def test_request_log_keeps_every_timestamp():
    log = read_request_log(DATA / "vllm_log.jsonl")
    assert log.ids == ["r0", "r2", "r1"]
    assert log.stamps["first_token_ts"].tolist() == [50.101, 51.9, 50.7]
    assert log.arrival_time is not None and log.arrival_time.tolist() == [1000.0, 1001.5, 1000.5]


_GOOD = {"request_id": "a", "input_toks": 10, "output_toks": 3, "queued_ts": 1.0,
         "scheduled_ts": 1.0, "first_token_ts": 1.5, "last_token_ts": 2.0}


@pytest.mark.parametrize(("change", "message"), [
    ({"first_token_ts": None}, "missing first_token_ts"),
    ({"scheduled_ts": "soon"}, "scheduled_ts must be a finite number"),
    ({"last_token_ts": 1.2}, "last_token_ts (1.2) is earlier than first_token_ts (1.5)"),
    ({"scheduled_ts": 0.5}, "scheduled_ts (0.5) is earlier than queued_ts (1.0)"),
    ({"output_toks": 2.5}, "output_toks must be a whole number"),
])
def test_bad_log_line_is_one_error_naming_file_and_line(tmp_path, capsys, change, message):
    bad = {k: v for k, v in {**_GOOD, **change}.items() if v is not None}
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(_GOOD) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(WorkloadError, match=f"log.jsonl:2: .*{_escape(message)}"):
        read_trace(path)
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "log.jsonl:2:" in err[0] and message in err[0]
    assert not out.exists()


def test_simulate_replays_a_vllm_log(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(DATA / "vllm_log.jsonl"),
                 "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["workload"]["trace"]["format"] == "vllm"
    assert config["workload"]["num_requests"] == 3


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared LLMServingSim data absent ({SHARED})")
def test_shared_pro6000_log_reads_as_300_requests():
    """The published run: 300 requests over ~29 s, ids bench-0..299 in arrival order."""
    w = read_trace(SHARED)
    assert len(w) == 300 and w.provenance["format"] == "vllm" and not w.provenance["sorted"]
    assert w.ids is not None and w.ids[0] == "bench-0"
    assert 25 < float(w.arrival_s[-1]) < 35


def _escape(text: str) -> str:
    import re

    return re.escape(text)
