"""`batchsim validate --observed` on a `batchsim bench` folder: serve, bench, then compare."""

from __future__ import annotations

import json

from batchsim.cli import main
from tests.serve.conftest import ROOT, start_server

PROFILE = str(ROOT / "profiles" / "tiny-qwen2-cpu.json")


def test_validate_observed_reads_a_bench_folder(tmp_path, capsys):
    """The observed side is the bench's own metrics; the simulated side replays the requests
    as they were sent (arrival_s = send time) through the server's policy and knobs."""
    server = start_server("--profile", PROFILE, "--policy", "continuous",
                          "--set", "max_num_seqs=4")
    bench = tmp_path / "bench"
    try:
        assert main(["bench", "--endpoint", server.url, "--num-requests", "10",
                     "--request-rate", "20", "--input-len", "16", "--output-len", "6",
                     "--max-concurrency", "4", "--out", str(bench), "--quiet"]) == 0
    finally:
        assert server.stop() == 0
    observed = json.loads((bench / "metrics.json").read_text())
    assert observed["completed"] == 10 and observed["generated_tokens_match"]
    out = tmp_path / "val"
    capsys.readouterr()
    assert main(["validate", "--observed", str(bench), "--profile", PROFILE,
                 "--policy", "continuous", "--set", "max_num_seqs=4", "--no-jitter",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TTFT mean (ms)" in printed and f"validation folder: {out}" in printed
    doc = json.loads((out / "validation.json").read_text())
    (point,) = doc["points"]
    ttft = point["comparison"]["ttft_ms.mean"]
    assert ttft["real"] == observed["ttft_ms"]["mean"]  # the bench's figure, as measured
    assert ttft["sim"] is not None and ttft["sim"] > 0 and ttft["rel_error"] is not None
    e2el = point["comparison"]["e2el_ms.mean"]
    assert e2el["real"] == observed["e2el_ms"]["mean"] and e2el["sim"] > 0
