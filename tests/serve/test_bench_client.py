"""`batchsim bench` against servers that are not there or answer errors: counted, not a crash."""

from __future__ import annotations

import json

import pandas as pd

from batchsim.cli import main
from tests.serve.conftest import free_port


def test_unreachable_endpoint_fails_each_request_and_writes_the_folder(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "b"
    rc = main(["bench", "--endpoint", url, "--served-model", "m", "--num-requests", "5",
               "--input-len", "4", "--output-len", "2", "--out", str(out), "--quiet"])
    assert rc == 1
    assert "no request completed" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["completed"], metrics["failed"]) == (0, 5)
    req = pd.read_csv(out / "requests.csv")
    assert (req["status"] == "failed").all() and req["reject_reason"].str.contains(
        "Connect").all()


def test_bench_saves_vllms_result_json_with_its_failures(tmp_path):
    """--save-result on bench: vLLM's keys, the failed requests counted with their errors,
    the workload's rate and burstiness as sent."""
    url = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "b"
    assert main(["bench", "--endpoint", url, "--served-model", "m", "--num-prompts", "4",
                 "--request-rate", "50", "--burstiness", "0.5", "--input-len", "4",
                 "--output-len", "2", "--max-concurrency", "2", "--out", str(out), "--quiet",
                 "--save-result", "--save-detailed"]) == 1
    doc = json.loads((out / "result.json").read_text())
    assert (doc["completed"], doc["failed"], doc["num_prompts"]) == (0, 4, 4)
    assert (doc["request_rate"], doc["burstiness"], doc["max_concurrency"]) == (50.0, 0.5, 2)
    assert doc["backend"] == "openai" and doc["mean_ttft_ms"] is None
    assert all("Connect" in e for e in doc["errors"]) and doc["itls"] == [[]] * 4


def test_unreachable_endpoint_without_model_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["bench", "--endpoint", f"http://127.0.0.1:{free_port()}", "--num-requests", "2",
               "--out", str(tmp_path / "b")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/v1/models" in err
    assert not (tmp_path / "b").exists()


def test_bad_flags_exit_2(tmp_path, capsys):
    for args in (["--endpoint", "127.0.0.1:8000"], ["--endpoint", "http://127.0.0.1:1",
                                                    "--max-concurrency", "0"]):
        assert main(["bench", *args, "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
