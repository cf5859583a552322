"""`simulate --replicas N --router R` on the command line: one line and exit 2 for what
cannot work, `--replicas 1` the plain simulator byte for byte, and the files a cluster adds."""

from __future__ import annotations

import json

import pytest

from batchsim.cli import main
from batchsim.sim.outputs import read_table

SMALL = ["simulate", "--policy", "continuous", "--num-requests", "60", "--request-rate", "30",
         "--input-len", "128", "--output-len", "16", "--quiet"]


@pytest.mark.parametrize("extra, message", [
    (["--replicas", "0"], "--replicas must be an integer from 1 to 1024, got 0"),
    (["--replicas", "2", "--router", "random"], "argument --router: invalid choice: 'random'"),
    (["--replicas", "3", "--profile", "qwen2.5-0.5b-cpu", "--profile",
      "qwen2.5-0.5b-h100-analytic"], "--profile given 2 times for --replicas 3"),
    (["--profile", "qwen2.5-0.5b-cpu", "--profile", "qwen2.5-0.5b-cpu"],
     "a mixed fleet needs --replicas 2"),
    (["--router", "least_kv"], "--router least_kv routes between replicas"),
])
def test_impossible_clusters_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    try:
        code = main([*SMALL, *extra, "--out", str(out)])
    except SystemExit as e:  # argparse's own refusals (an unknown choice)
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_one_replica_writes_the_plain_run_byte_for_byte(tmp_path):
    plain, one = tmp_path / "plain", tmp_path / "one"
    assert main([*SMALL, "--out", str(plain)]) == 0
    assert main([*SMALL, "--replicas", "1", "--out", str(one)]) == 0
    for name in ("metrics.json", "requests.csv", "steps.csv", "itl_cdf.csv"):
        assert (plain / name).read_bytes() == (one / name).read_bytes(), name
    config = [json.loads((d / "config.json").read_text()) for d in (plain, one)]
    assert [{k: v for k, v in c.items() if k != "command"} for c in config] == [
        {k: v for k, v in config[0].items() if k != "command"}] * 2


def test_a_mixed_fleet_run_folder(tmp_path, capsys):
    """Two replicas on two profiles: per-replica rows name each one's device; the replica
    column appears in both tables; the report has the replica table."""
    out = tmp_path / "run"
    argv = [*SMALL[:-1], "--replicas", "2", "--router", "least_outstanding",
            "--profile", "qwen2.5-0.5b-h100-analytic", "--profile", "qwen2.5-0.5b-cpu",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Replicas (router least_outstanding)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["replicas"]
    assert [r["replica"] for r in rows] == [0, 1]
    assert "h100" in rows[0]["device"] and "h100" not in rows[1]["device"]
    assert sum(r["num_requests"] for r in rows) == metrics["num_requests"] == 60
    assert metrics["profile_source"] == "analytic+measured"
    # the one-thread CPU replica is slower, so least outstanding sends it fewer requests
    assert rows[1]["num_requests"] < rows[0]["num_requests"]
    requests = read_table(out / "requests.csv")
    assert list(requests.columns)[-1] == "replica"
    assert requests["replica"].value_counts().to_dict() == {0: rows[0]["num_requests"],
                                                            1: rows[1]["num_requests"]}
    assert set(read_table(out / "steps.csv")["replica"]) == {0, 1}
    config = json.loads((out / "config.json").read_text())
    assert config["cluster"]["replicas"] == 2
    assert "Replicas" in (out / "report.html").read_text()


def test_a_cluster_saves_vllms_result_json_with_each_requests_own_gaps(tmp_path):
    """--save-result --save-detailed of a cluster: each request's ITLs come from the replica
    that served it (their sum is its E2EL - TTFT) and pool into the cluster's ITL figures."""
    out = tmp_path / "run"
    assert main([*SMALL, "--replicas", "3", "--router", "least_outstanding", "--save-result",
                 "--save-detailed", "--out", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    requests = read_table(out / "requests.csv")
    assert requests["replica"].nunique() == 3
    for k, row in requests.iterrows():
        assert len(doc["itls"][k]) == row["output_tokens"] - 1
        assert sum(doc["itls"][k]) == pytest.approx((row["e2el_ms"] - row["ttft_ms"]) / 1e3)
    pooled = [x * 1e3 for gaps in doc["itls"] for x in gaps]
    assert sum(pooled) / len(pooled) == pytest.approx(metrics["itl_ms"]["mean"])
