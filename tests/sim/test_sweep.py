"""Sweeps: grid expansion, rate ranges, SLO search, Pareto frontier, and the command end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from batchsim.cli import main
from batchsim.sim.run import RunSpec
from batchsim.sim.sweep.analysis import max_rate_under_slo, pareto_mask, recommendation
from batchsim.sim.sweep.sweep import Configuration, SweepSpec, expand, grid, parse_rates, parse_vary
from batchsim.sim.workload.synthetic import SyntheticSpec


def test_rate_range_is_linspace_inclusive_and_lists_allow_inf():
    assert parse_rates("1:40:10") == tuple(np.linspace(1, 40, 10))
    assert parse_rates("1:40:10")[-1] == 40.0 and len(parse_rates("1:40:10")) == 10
    assert parse_rates("2,5,inf") == (2.0, 5.0, math.inf)
    assert parse_rates("3:3:1") == (3.0,)


@pytest.mark.parametrize("bad", ["40:1:10", "0:5:3", "1:5", "1:5:x", "1:5:1", "a,b", "-1,2",
                                 "1:inf:3"])
def test_bad_rate_ranges_are_rejected(bad):
    with pytest.raises(ValueError, match="--request-rate"):
        parse_rates(bad)


def test_grid_is_policies_times_knob_combinations_times_rates():
    configs = expand(["static", "dynamic"], parse_vary(["max_batch_size=1,8",
                                                        "max_queue_delay_ms=0,10"]))
    assert len(configs) == 8
    assert configs[1] == Configuration("static", (("max_batch_size", "1"),
                                                  ("max_queue_delay_ms", "10")))
    sweep = SweepSpec(tuple(configs[:2]), (1.0, 2.0, 4.0),
                      RunSpec("static", synthetic=SyntheticSpec(num_requests=5)))
    points = grid(sweep)
    assert [(c.label, r) for c, r, _ in points][:3] == [
        ("static max_batch_size=1 max_queue_delay_ms=0", 1.0),
        ("static max_batch_size=1 max_queue_delay_ms=0", 2.0),
        ("static max_batch_size=1 max_queue_delay_ms=0", 4.0)]
    spec = points[4][2]
    assert spec.synthetic is not None and spec.synthetic.request_rate == 2.0
    assert spec.synthetic.num_requests == 5 and dict(spec.knobs)["max_queue_delay_ms"] == "10"


@pytest.mark.parametrize("bad", ["max_num_seqs", "=1,2", "max_num_seqs="])
def test_bad_vary_is_rejected(bad):
    with pytest.raises(ValueError, match="--vary"):
        parse_vary([bad])


def _table(rows):
    return pd.DataFrame(rows, columns=["config", "request_rate", "slo_attainment",
                                       "output_token_throughput", "e2el_p99_ms"])


def test_slo_search_takes_the_last_rate_before_the_first_failure():
    table = _table([
        ("A", 1, 1.00, 10, 5), ("A", 2, 0.995, 20, 6), ("A", 4, 0.90, 30, 9), ("A", 8, 1.0, 40, 9),
        ("B", 1, 0.50, 10, 5), ("B", 2, 0.99, 20, 6),
        ("C", 1, 1.00, 10, 5), ("C", 2, 0.999, 20, 6),
    ])
    limits = max_rate_under_slo(table).set_index("config")
    assert limits.loc["A", "max_rate"] == 2 and limits.loc["A", "fails_at"] == 4  # 8 is ignored
    assert limits.loc["A", "output_token_throughput"] == 20
    assert math.isnan(limits.loc["B", "max_rate"]) and limits.loc["B", "fails_at"] == 1
    assert limits.loc["C", "max_rate"] == 2 and math.isnan(limits.loc["C", "fails_at"])
    text = recommendation(table, {"ttft_ms": 500.0})
    assert text.startswith("Recommended: C") and "limit lies above the grid" in text
    assert "TTFT ≤ 500 ms" in text


def test_pareto_frontier_keeps_only_undominated_points():
    throughput = np.array([10, 20, 20, 30, 15, 30])
    latency = np.array([1.0, 2.0, 3.0, 5.0, 2.5, 4.0])
    # (20, 3) is beaten by (20, 2); (15, 2.5) by (20, 2); (30, 5) by (30, 4)
    assert pareto_mask(throughput, latency).tolist() == [True, True, False, False, False, True]


def test_recommendation_without_slo_names_the_highest_throughput():
    table = _table([("A", 1, np.nan, 10, 5), ("B", 1, np.nan, 30, 7)]).drop(
        columns="slo_attainment")
    assert "No SLO given" in recommendation(table, None) and "from B" in recommendation(table, None)


def test_sweep_command_end_to_end(tmp_path, capsys):
    """Two configurations × three loads in two worker processes -> table, meta and report."""
    out = tmp_path / "sweep"
    code = main(["sweep", "--policy", "continuous", "--vary", "max_num_seqs=2,16",
                 "--request-rate", "2:20:3", "--num-requests", "80", "--input-len", "128",
                 "--output-len", "16", "--goodput", "ttft:300", "--workers", "2",
                 "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "sweep.csv", "sweep.json"]
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 6 and table["request_rate"].tolist() == [2, 11, 20] * 2
    assert table["max_num_seqs"].tolist() == [2, 2, 2, 16, 16, 16]
    assert (table["completed"] == 80).all() and table["slo_attainment"].between(0, 1).all()
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["points"] == 6 and meta["goodput"] == {"ttft_ms": 300.0}
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith(("Recommended:", "None of the"))
    # the same sweep in one process gives the same table
    again = tmp_path / "again"
    assert main(["sweep", "--policy", "continuous", "--vary", "max_num_seqs=2,16",
                 "--request-rate", "2:20:3", "--num-requests", "80", "--input-len", "128",
                 "--output-len", "16", "--goodput", "ttft:300", "--workers", "1",
                 "--out", str(again), "--quiet"]) == 0
    assert (again / "sweep.csv").read_bytes() == (out / "sweep.csv").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--policy", "continuous", "--vary", "nope=1,2", "--request-rate", "1"], "unknown knob"),
    (["--policy", "continuous", "--vary", "max_num_seqs=0", "--request-rate", "1"],
     "max_num_seqs"),
    (["--policy", "continuous", "--request-rate", "5:1:3"], "--request-rate"),
    (["--policy", "continuous"], "needs --request-rate"),
    (["--preset", "seed-batch-window", "--policy", "static"], "--preset fixes"),
    (["--policy", "continuous", "--request-rate", "1", "--workers", "0"], "--workers"),
    (["--policy", "continuous", "--request-rate", "1", "--kv-copy-gbps", "25"],
     "this sweep has none"),
    (["--policy", "continuous", "--request-rate", "1", "--jitter"], "has none"),
])
def test_bad_sweep_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "sweep"
    assert main(["sweep", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("preset, header", [
    ("seed-batch-window", "batch  wait (ms)  avg latency (ms)  P95 latency (ms)"),
    ("seed-dynamic-vs-batch1", "strategy  throughput (tok/s)  speed-up"),
])
def test_presets_print_the_seed_tables(tmp_path, capsys, preset, header):
    out = tmp_path / "sweep"
    assert main(["sweep", "--preset", preset, "--num-requests", "16", "--workers", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert header in printed
    assert "e+0" not in printed and "%" in printed  # 11,353 not 1.135e+04; GPU use in %
    report = (out / "report.html").read_text()
    assert "speed-up" in report or "wait (ms)" in report
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == (18 if preset == "seed-batch-window" else 6)


def test_trace_sweep_replays_the_trace_at_each_mean_rate(tmp_path):
    """A trace recorded at 10 req/s, swept at 5 and 20 req/s: time scales 2 and 0.5."""
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(
        json.dumps({"arrival_s": i * 0.1, "input_tokens": 64, "output_tokens": 8}) + "\n"
        for i in range(41)))
    out = tmp_path / "sweep"
    assert main(["sweep", "--policy", "continuous", "--trace", str(trace), "--request-rate",
                 "5,20", "--workers", "1", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "sweep.csv")
    assert table["time_scale"].tolist() == pytest.approx([2.0, 0.5])
    assert table["completed"].tolist() == [41, 41]
    assert main(["sweep", "--policy", "continuous", "--trace", str(trace), "--request-rate",
                 "inf", "--out", str(tmp_path / "bad")]) == 2


def test_cpu_path_options_go_to_the_hybrid_configurations_only(tmp_path):
    """--cpu-profile / --kv-copy-gbps in a sweep of continuous and hybrid: the hybrid points get
    the CPU path, the continuous ones run as without them."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--policy", "continuous,hybrid", "--request-rate", "5,20",
                 "--num-requests", "30", "--input-len", "64", "--output-len", "8",
                 "--cpu-profile", "profiles/qwen2.5-0.5b-cpu.json", "--kv-copy-gbps", "25",
                 "--workers", "1", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "sweep.csv")
    assert sorted(set(table["policy"])) == ["continuous", "hybrid"]
    assert (table["completed"] == 30).all()
