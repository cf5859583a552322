"""`batchsim validate --endpoint`: bench a running server and compare with the simulation."""

from __future__ import annotations

import json

from batchsim.cli import main
from tests.serve.conftest import ROOT, start_server

PROFILE = str(ROOT / "profiles" / "tiny-qwen2-cpu.json")


def test_validate_endpoint_writes_the_error_table(tmp_path, capsys):
    server = start_server("--profile", PROFILE, "--policy", "continuous",
                          "--set", "max_num_seqs=8")
    try:
        out = tmp_path / "val"
        rc = main(["validate", "--endpoint", server.url, "--profile", PROFILE,
                   "--policy", "continuous", "--set", "max_num_seqs=8", "--num-requests", "12",
                   "--input-len", "16", "--output-len", "8", "--loads", "0.3,0.6",
                   "--no-jitter", "--out", str(out)])
        printed = capsys.readouterr().out
    finally:
        assert server.stop() == 0
    assert rc == 0
    assert "client-side times" in printed and "server-side times" in printed
    assert "client + HTTP overhead on mean TTFT" in printed
    doc = json.loads((out / "validation.json").read_text())
    assert [p["load"] for p in doc["points"]] == [0.3, 0.6]
    for p in doc["points"]:
        for name in ("request_throughput", "ttft_ms.mean", "e2el_ms.p99"):
            c = p["comparison"][name]
            assert c["real"] is not None and c["sim"] is not None and c["rel_error"] is not None
        server_side = p["comparison_server_side"]["ttft_ms.mean"]
        assert server_side["real"] <= p["comparison"]["ttft_ms.mean"]["real"]
        assert p["failed"] == 0 and p["rejected"] == 0
        assert (out / p["folder"] / "real" / "requests.csv").is_file()
        assert (out / p["folder"] / "sim" / "metrics.json").is_file()
    assert doc["errors"]["e2el_ms.mean"]["num_points"] == 2
    assert (out / "validation.csv").is_file() and (out / "report.html").is_file()
