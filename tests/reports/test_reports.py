"""Report files: self-contained, honest about their inputs, and `batchsim report` dispatch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchsim.cli import main
from batchsim.reports.run_report import RunData, load_run, render_run_report
from tests.reports.conftest import BUILDERS, TINY_PROFILE, simulate_run


def test_reports_are_self_contained(any_report: Path):
    """No external script, stylesheet or font: the file opens offline from disk."""
    text = any_report.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", text)
    assert text.count("<script>") >= 2 and 'id="js-errors"' in text


def test_simulate_writes_the_report_and_itl_quantiles(tmp_path):
    run = simulate_run(tmp_path / "run")
    assert (run / "report.html").is_file() and (run / "itl_cdf.csv").is_file()
    text = (run / "report.html").read_text()
    assert "Profile source: analytic" in text  # the shipped default profile is analytic
    itl = pd.read_csv(run / "itl_cdf.csv")
    assert itl["probability"].iloc[0] == 0 and itl["probability"].iloc[-1] == 1
    assert itl["itl_ms"].is_monotonic_increasing


def test_measured_profile_has_no_analytic_warning(tmp_path):
    run = simulate_run(tmp_path / "run", "continuous", "--profile", str(TINY_PROFILE))
    assert "Profile source: analytic" not in (run / "report.html").read_text()


def test_big_runs_are_downsampled_and_say_so(tmp_path):
    """A 120k-step run: the page stays small and names the downsampling."""
    run = load_run(simulate_run(tmp_path / "run"))
    n = 120_000
    steps = pd.DataFrame({
        "step": np.arange(n), "start_s": np.arange(n) * 1e-3, "duration_s": np.full(n, 1e-3),
        "phase": np.where(np.arange(n) % 50 == 0, "prefill", "decode"), "layout": "packed",
        "device": "gpu", "batch_size": np.arange(n) % 64, "prefill_tokens": 0,
        "decode_tokens": 1, "kv_blocks_used": np.arange(n) % 1000, "kv_tokens_used": 0})
    big = RunData("big", run.config, {**run.metrics, "duration_s": 120.0}, run.requests, steps,
                  run.itl_cdf)
    out = render_run_report(big, tmp_path / "big.html")
    text = out.read_text()
    assert "120,000 steps: per-step series are downsampled" in text
    assert "Showing" in text and "of 120,000 steps" in text
    assert out.stat().st_size < 8_000_000


def test_report_rebuilds_a_run_folder_report(tmp_path, capsys):
    run = simulate_run(tmp_path / "run")
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert "report:" in capsys.readouterr().out


def test_report_of_a_profile_defaults_to_next_to_it(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_bytes(TINY_PROFILE.read_bytes())
    assert main(["report", str(profile)]) == 0
    text = (tmp_path / "p.html").read_text()
    assert "measured (points) vs fitted (lines)" in text and "CV MAPE" in text


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "not a run folder"),
    (["RUN", "RUN2"], "needs --out"),
    (["RUN", str(TINY_PROFILE), "--out", "x.html"], "give only run folders"),
])
def test_report_bad_input_is_one_line(tmp_path, capsys, args, message):
    run = simulate_run(tmp_path / "run")
    run2 = simulate_run(tmp_path / "run2", "static")
    argv = [{"RUN": str(run), "RUN2": str(run2)}.get(a, a) for a in args]
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_comparison_lists_what_differs(tmp_path):
    out = BUILDERS["comparison"](tmp_path)
    text = out.read_text()
    assert "What differs between the runs" in text and "knobs.max_batch_size" in text


def test_profile_refit_writes_the_profile_report_next_to_it(tmp_path, capsys):
    profile = tmp_path / "tiny.json"
    profile.write_bytes(TINY_PROFILE.read_bytes())
    assert main(["profile", "--refit", str(profile), "--quiet"]) == 0
    assert (tmp_path / "tiny.html").is_file()
    assert f"report: {tmp_path / 'tiny.html'}" in capsys.readouterr().out


def test_run_report_shows_the_command_and_an_overload_banner(tmp_path):
    """An overloaded run's report says so as simulate's warning does, and names its command."""
    out = tmp_path / "over"
    assert main(["simulate", "--policy", "static", "--request-rate", "200", "--num-requests",
                 "400", "--input-len", "256", "--output-len", "64", "--out", str(out),
                 "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert "Overloaded: The server did not keep up with its arrivals" in text
    assert "Made by <code>batchsim" in text  # (sys.argv is pytest's here)
    calm = simulate_run(tmp_path / "calm")
    assert "Overloaded" not in (calm / "report.html").read_text()


def test_comparison_has_delta_columns(tmp_path):
    """The first run is the baseline; each other run gets a Δ column."""
    from batchsim.reports.compare import columns_with_deltas, with_deltas

    assert columns_with_deltas(["a", "b", "c"]) == ["a", "b", "Δ b", "c", "Δ c"]
    rows = with_deltas([{"metric": "x", "a": 100.0, "b": 110.0},
                        {"metric": "policy", "a": "static", "b": "continuous"}], ["a", "b"])
    assert rows[0]["Δ b"] == "+10.0%" and rows[1]["Δ b"] is None
    # a fraction (GPU busy) reads as percentages, its change in percentage points
    busy = with_deltas([{"metric": "GPU busy", "a": 0.423, "b": 0.606, "_fraction": True}],
                       ["a", "b"])[0]
    assert busy == {"metric": "GPU busy", "a": "42.3%", "b": "60.6%", "Δ b": "+18.3 pp"}
