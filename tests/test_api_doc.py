"""docs/API.md is executable: every Python block runs, in order, in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import batchsim

DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def test_every_block_of_the_api_page_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 5, "the API page lost its examples"
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), scope)
    assert (tmp_path / "runs" / "continuous-8rps" / "requests.csv").exists()
    assert (tmp_path / "continuous-8rps.html").read_text().startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out.count("refused:") == 3


def test_python_knob_values_are_type_checked():
    """A knob declared int refuses a float with a fraction and a bool; a float knob takes an
    int; a Literal knob its own values only."""
    for knobs, words in (({"max_num_seqs": 64.5}, "max_num_seqs"),
                         ({"max_num_seqs": True}, "bool"),
                         ({"enable_chunked_prefill": 1}, "enable_chunked_prefill"),
                         ({"policy": "lifo"}, "policy")):
        with pytest.raises(ValueError, match=words):
            batchsim.simulate("continuous", workload={"num_requests": 5}, knobs=knobs)
    run = batchsim.simulate("continuous", workload={"num_requests": 5},
                            knobs={"gpu_memory_utilization": 1, "max_num_seqs": "32"})
    assert run.config["knobs"]["gpu_memory_utilization"] == 1.0
    assert run.config["knobs"]["max_num_seqs"] == 32


def test_api_matches_the_command_line(tmp_path):
    """The same run through the API and through `batchsim simulate` gives the same metrics."""
    from batchsim.cli import main

    out = tmp_path / "cli"
    assert main(["simulate", "--policy", "dynamic", "--num-requests", "60", "--request-rate",
                 "6", "--seed", "3", "--set", "max_batch_size=4", "--out", str(out),
                 "--quiet"]) == 0
    import json

    cli = json.loads((out / "metrics.json").read_text())
    api = batchsim.simulate("dynamic", workload={"num_requests": 60, "request_rate": 6},
                            knobs={"max_batch_size": 4}, seed=3).metrics
    assert api == cli


def test_bad_workload_parameters_name_the_valid_ones():
    with pytest.raises(ValueError, match="num_requests"):
        batchsim.simulate("continuous", workload={"num_requets": 5})
    with pytest.raises(ValueError, match="not both"):
        batchsim.simulate("continuous", trace="x.jsonl", workload={"num_requests": 5})


def test_importing_batchsim_is_cheap():
    import subprocess
    import sys

    code = "import sys, batchsim; print(sorted(m for m in ('pandas', 'simpy', 'plotly') " \
           "if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
