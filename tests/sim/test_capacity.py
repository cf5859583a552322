"""`batchsim plan`: replica counts tried in ascending order, stopping at the first that meets the
SLO, answered in one sentence; what it cannot answer is one line and exit 2."""

from __future__ import annotations

import json

import pytest

from batchsim.cli import main
from batchsim.sim.run import RunSpec
from batchsim.sim.sweep.analysis import SLO_TARGET
from batchsim.sim.sweep.capacity import plan_capacity
from batchsim.sim.sweep.sweep import Configuration, SweepSpec
from batchsim.sim.workload.synthetic import SyntheticSpec

# 8 sequences per replica cannot keep up with 200 req/s of 512-token prompts
SATURATED = SyntheticSpec(num_requests=300, input_len=512, output_len=64)


def sweep(rate: float, **kw) -> SweepSpec:
    base = RunSpec("continuous", knobs={"max_num_seqs": "8"}, synthetic=SATURATED,
                   goodput={"ttft_ms": 200.0}, **kw)
    configs = (Configuration("continuous", (("router", "round_robin"),)),
               Configuration("continuous", (("router", "least_outstanding"),)))
    return SweepSpec(configs, (rate,), base)


def test_the_search_stops_at_the_first_count_that_meets_the_slo():
    plan = plan_capacity(sweep(200.0), max_replicas=8, workers=1)
    assert plan.replicas is not None and plan.replicas >= 2
    table = plan.table
    counts = table["replicas"].astype(int)
    assert list(dict.fromkeys(counts)) == list(range(1, plan.replicas + 1))  # ascending, stop
    below = table[counts < plan.replicas]
    assert (below["slo_attainment"] < SLO_TARGET).all()
    at = table[counts == plan.replicas]
    assert (at["slo_attainment"] >= SLO_TARGET).any()
    assert len(table[counts == 1]) == 1  # one replica: the router is moot, run once
    assert plan.best["slo_attainment"] == at["slo_attainment"].max()
    assert plan.sentence.startswith(f"Capacity plan: {plan.replicas} replicas running ")
    assert "within TTFT ≤ 200 ms at 200 req/s" in plan.sentence


def test_no_count_up_to_the_limit_says_so():
    plan = plan_capacity(sweep(200.0), max_replicas=1, workers=1)
    assert plan.replicas is None
    assert plan.sentence.startswith("No configuration of up to 1 replicas keeps 99%")


def test_plan_command_writes_a_sweep_folder_with_the_answer(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["plan", "--request-rate", "200", "--goodput", "ttft:200", "--set",
                 "max_num_seqs=8", "--num-requests", "300", "--input-len", "512",
                 "--output-len", "64", "--max-replicas", "6", "--workers", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["capacity"]["replicas"] >= 2
    assert meta["capacity"]["sentence"] in printed
    assert (out / "sweep.csv").is_file() and (out / "report.html").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--request-rate", "10"], "plan needs --goodput"),
    (["--goodput", "ttft:100"], "plan needs --request-rate R"),
    (["--goodput", "ttft:100", "--request-rate", "5,10"], "one finite --request-rate R"),
    (["--goodput", "ttft:100", "--request-rate", "5", "--replicas", "3"],
     "give --max-replicas, not --replicas"),
    (["--goodput", "ttft:100", "--request-rate", "5", "--max-replicas", "0"],
     "--max-replicas must be from 1 to 1024"),
])
def test_plan_refuses_what_it_cannot_answer(tmp_path, capsys, extra, message):
    out = tmp_path / "plan"
    assert main(["plan", "--num-requests", "10", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()
