"""The summary prints what `vllm bench serve` prints: token totals and peak concurrency."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from batchsim.cli import main
from batchsim.summary import peak_concurrency


def test_peak_concurrency_counts_requests_in_the_server():
    requests = pd.DataFrame({"arrival_s": [0.0, 0.5, 1.0, 3.0, 3.0],
                             "finish_s": [1.0, 2.0, 2.5, np.nan, 4.0]})
    # at 1.0 the first leaves as the third arrives (2 in); the rejected one at 3.0 never counts
    assert peak_concurrency(requests) == 2
    assert peak_concurrency(requests.iloc[:0]) == 0


def test_simulate_prints_token_totals_and_peak_concurrency(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--num-prompts", "30", "--request-rate",
                 "inf", "--random-input-len", "100", "--random-output-len", "7", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["completed"] == 30
    assert "Total input tokens:                           3000" in printed
    assert "Total generated tokens:                        210" in printed
    assert "Peak concurrent requests:                       30" in printed  # all at t=0
