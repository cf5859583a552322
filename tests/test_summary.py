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


def test_percentile_metrics_and_metric_percentiles_choose_the_rows(tmp_path, capsys):
    """--percentile-metrics picks the latency sections, --metric-percentiles the P rows (as
    vllm bench serve); the values are metrics.json's."""
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--num-prompts", "30", "--request-rate",
                 "10", "--percentile-metrics", "ttft,e2el", "--metric-percentiles", "90,99",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert "TPOT" not in text and "ITL" not in text and "Queueing" not in text
    assert f"{metrics['ttft_ms']['p90']:.2f}" in text.split("P90 TTFT (ms):")[1].split("\n")[0]
    assert "P99 E2EL (ms):" in text and "P95" not in text


def test_bad_percentile_flags_are_one_line(tmp_path, capsys):
    """An unknown metric or a percentile the run does not store: exit 2, one line, no folder."""
    for flag, value, word in (("--percentile-metrics", "ttft,foo", "foo"),
                              ("--metric-percentiles", "97", "97")):
        out = tmp_path / word
        assert main(["simulate", "--policy", "continuous", "--num-prompts", "5", flag, value,
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1 and not out.exists()


def test_fractions_print_as_percentages(tmp_path, capsys):
    """A small model's KV peak (well under 1%) must not print as 0.00."""
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--num-prompts", "20", "--request-rate",
                 "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert 0 < m["max_kv_utilization"] < 0.01
    for label, key in (("Max KV utilization:", "max_kv_utilization"),
                       ("GPU busy fraction (not saturation):", "gpu_busy_fraction"),
                       ("Prefill time share:", "prefill_time_share")):
        row = next(line for line in printed.splitlines() if line.startswith(label))
        assert row.split()[-1] == f"{100 * m[key]:.2f}%"
