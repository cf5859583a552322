"""Builders of every kind of report, small enough for the browser test and the format tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from batchsim.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY_PROFILE = ROOT / "profiles" / "tiny-qwen2-cpu.json"


def simulate_run(out: Path, policy: str = "continuous", *extra: str) -> Path:
    """A small run folder (report.html included, as simulate writes it)."""
    assert main(["simulate", "--policy", policy, "--request-rate", "20", "--num-requests", "120",
                 "--input-len", "256", "--output-len", "32", "--range-ratio", "0.5",
                 "--out", str(out), "--quiet", *extra]) == 0
    return out


def build_run_report(tmp: Path) -> Path:
    return simulate_run(tmp / "run") / "report.html"


def build_comparison_report(tmp: Path) -> Path:
    runs = [simulate_run(tmp / p, p) for p in ("static", "continuous")]
    out = tmp / "compare.html"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    return out


def build_profile_report(tmp: Path) -> Path:
    out = tmp / "profile.html"
    assert main(["report", str(TINY_PROFILE), "--out", str(out)]) == 0
    return out


def build_sweep_report(tmp: Path) -> Path:
    out = tmp / "sweep"
    assert main(["sweep", "--policy", "static,dynamic", "--vary", "max_batch_size=4,8",
                 "--request-rate", "5:40:3",
                 "--num-requests", "60", "--input-len", "128", "--output-len", "16",
                 "--goodput", "ttft:200", "--workers", "1", "--out", str(out), "--quiet"]) == 0
    return out / "report.html"


def build_validation_report(tmp: Path) -> Path:
    """A short `batchsim validate` of the tiny model on CPU (needs torch: the real side)."""
    pytest.importorskip("torch", reason="validate runs the real engine (profile extra)")
    out = tmp / "validation"
    assert main(["validate", "--profile", str(TINY_PROFILE), "--policy", "continuous",
                 "--loads", "0.5,0.9", "--num-requests", "8", "--input-len", "16",
                 "--output-len", "4", "--out", str(out), "--quiet"]) == 0
    return out / "report.html"


def build_observed_report(tmp: Path) -> Path:
    """`validate --observed` of the hand-made vLLM log, with a timeseries beside it."""
    run = tmp / "vllm"
    run.mkdir()
    log = ROOT / "tests" / "data" / "traces" / "vllm_log.jsonl"
    (run / "requests.jsonl").write_text(log.read_text())
    (run / "timeseries.csv").write_text("t,prompt_throughput,gen_throughput,running,waiting\n"
                                        "1.0,300,10,1,0\n2.0,300,8,1,0\n3.0,0,0,0,0\n")
    out = tmp / "observed"
    assert main(["validate", "--observed", str(run / "requests.jsonl"), "--policy",
                 "continuous", "--out", str(out), "--quiet"]) == 0
    return out / "report.html"


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "observed": build_observed_report,
    "run": build_run_report,
    "comparison": build_comparison_report,
    "profile": build_profile_report,
    "sweep": build_sweep_report,
    "validation": build_validation_report,
}


@pytest.fixture(params=sorted(BUILDERS))
def any_report(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Each kind of report, written into a fresh temporary folder."""
    return BUILDERS[request.param](tmp_path)
