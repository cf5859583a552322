"""The recorder's direct outputs equal the table-based ones: steps.csv written from the run
records, summary metrics from its arrays, and the lazy steps table of a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchsim.sim.csv_table import write_csv
from batchsim.sim.metrics import summarize
from batchsim.sim.run import RunSpec, prepare, simulate, write_run
from batchsim.sim.workload.synthetic import SyntheticSpec

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "profiles" / "tiny-qwen2-cpu.json")
SYN = SyntheticSpec(num_requests=120, request_rate=40.0, input_len=300, output_len=40,
                    range_ratio=0.5)
# the tiny model's CPU profile on both paths: the hybrid policy then prefills some on the CPU
HYBRID_SYN = SyntheticSpec(num_requests=120, request_rate=20.0, input_len=16, output_len=6,
                           range_ratio=0.5)


def _run(policy: str, **extra):
    synthetic = HYBRID_SYN if policy == "hybrid" else SYN
    return simulate(prepare(RunSpec(policy=policy, synthetic=synthetic, seed=3, **extra)))


CASES = {
    "continuous": {},
    "static": {},  # padded steps
    "dynamic": {},
    "preempting": {"knobs": {"num_gpu_blocks_override": "60"}},
    "prefix_caching": {"knobs": {"enable_prefix_caching": "true"}},  # kv_cached_blocks column
    "hybrid": {"profile": TINY, "cpu_profile": TINY, "kv_copy_gbps": 5.0},
}


@pytest.mark.parametrize("case", CASES)
def test_steps_csv_from_runs_is_the_tables_csv(case: str, tmp_path: Path):
    extra = dict(CASES[case])
    policy = "continuous" if case in ("preempting", "prefix_caching") else case
    out = _run(policy, **extra)
    table = out.recorder.steps_table()
    write_csv(table, tmp_path / "table.csv")
    table.to_csv(tmp_path / "pandas.csv", index=False, float_format="%.6f")
    assert (tmp_path / "table.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    written = out.recorder.write_steps_csv(tmp_path / "runs.csv")
    if case == "hybrid":  # CPU steps merge by start time: left to the table's writer
        assert out.recorder.cpu_steps, "the case should use the CPU path"
        assert not written and not (tmp_path / "runs.csv").exists()
    else:
        assert written
        assert (tmp_path / "runs.csv").read_bytes() == (tmp_path / "table.csv").read_bytes()
    if case == "preempting":
        assert out.metrics["preemptions"] > 0, "the case should preempt"
    if case == "prefix_caching":
        assert b"kv_cached_blocks" in (tmp_path / "runs.csv").read_bytes().split(b"\n")[0]


@pytest.mark.parametrize("case", ["continuous", "prefix_caching"])
def test_steps_csv_row_formatter_fallback_writes_the_same(case, tmp_path, monkeypatch):
    """Times numpy's formatting refuses (never seen in a simulation) take the %-format path:
    the run records decline, and write_run writes the table through write_csv's rows."""
    from batchsim.sim import csv_table, recorder

    policy = "continuous"
    out = _run(policy, **CASES[case])
    assert out.recorder.write_steps_csv(tmp_path / "numpy.csv")
    monkeypatch.setattr(recorder, "fixed_fits", lambda x: False)
    monkeypatch.setattr(csv_table, "fixed_fits", lambda x, decimals=6: False)
    assert not out.recorder.write_steps_csv(tmp_path / "declined.csv")
    assert not (tmp_path / "declined.csv").exists()
    write_run(tmp_path / "run", out)
    assert (tmp_path / "run" / "steps.csv").read_bytes() == (tmp_path / "numpy.csv").read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_metrics_from_arrays_equal_metrics_from_the_table(case: str):
    extra = dict(CASES[case])
    out = _run("continuous" if case in ("preempting", "prefix_caching") else case, **extra)
    rec = out.recorder
    kv = int(out.config["kv_capacity_blocks"])
    from_table = summarize(rec, out.requests, rec.steps_table(), kv, "x")
    from_arrays = summarize(rec, out.requests, None, kv, "x")
    assert from_arrays == from_table


def test_a_run_builds_its_steps_table_only_when_asked(tmp_path: Path):
    out = _run("continuous")
    assert out.steps_table is None
    write_run(tmp_path / "run", out)
    assert out.steps_table is None, "steps.csv came from the run records"
    steps = out.steps
    assert out.steps is steps and len(steps) == out.recorder.num_steps
    write_csv(steps, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "run" / "steps.csv").read_bytes()


def test_a_given_steps_table_is_the_one_written(tmp_path: Path):
    """A caller that replaces the steps table gets its table written, not the recorder's."""
    out = _run("continuous")
    out.steps_table = out.recorder.steps_table().head(3).copy()
    write_run(tmp_path / "run", out)
    assert len((tmp_path / "run" / "steps.csv").read_text().splitlines()) == 4


def test_segments_read_back_as_tuples():
    out = _run("continuous")
    segments = out.recorder.segments
    assert len(segments) >= 120 and all(len(s) == 3 and s[0] <= s[1] for s in segments)


def test_parsing_simulate_arguments_imports_no_pandas():
    code = ("import sys; from batchsim.cli import build_parser; "
            "a = build_parser(sys.argv[1:]).parse_args(sys.argv[1:]); "
            "assert a.handler is not None; "
            "bad = [m for m in ('pandas', 'plotly', 'simpy', 'scipy', 'torch') "
            "if m in sys.modules]; print(' '.join(bad))")
    argv = ["simulate", "--policy", "continuous", "--num-requests", "10", "--out", "x"]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == ""
