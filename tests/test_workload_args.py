"""The workload options are defined once (batchsim.args) and mean the same in simulate, sweep
and validate: each command accepts each trace flag, applies it, and validate's printed rerun
command spells out every option it ran with."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest

from batchsim.args import workload_from_args
from batchsim.cli import build_parser, main
from batchsim.sim.validation.plan import base_workload
from batchsim.sim.workload.traces import load_trace
from batchsim.sim.workload.transform import TraceOptions
from batchsim.validate_cmd import command_line, spec_from_args

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(ROOT / "traces" / "chat.jsonl")
PROFILE = str(ROOT / "profiles" / "tiny-qwen2-cpu.json")

# flag, value, the TraceOptions field it sets, the value there
TRACE_FLAGS = [
    ("--trace-format", "native", "format", "native"),
    ("--strict", None, "strict", True),
    ("--start", "10", "start_s", 10.0),
    ("--duration", "60", "duration_s", 60.0),
    ("--max-input-len", "900", "max_input_len", 900),
    ("--sample", "0.5", "sample", 0.5),
    ("--target-rate", "3", "target_rate", 3.0),
]
COMMANDS = {
    "simulate": ["simulate", "--policy", "continuous"],
    "sweep": ["sweep", "--policy", "continuous"],
    "validate": ["validate", "--profile", PROFILE, "--policy", "continuous"],
}


def _words(flag: str, value: str | None) -> list[str]:
    return [flag] if value is None else [flag, value]


# validate has no --target-rate: --loads sets each point's rate (the test after this one)
ACCEPTS = [(command, *f) for command in sorted(COMMANDS) for f in TRACE_FLAGS
           if not (command == "validate" and f[0] == "--target-rate")]


@pytest.mark.parametrize(("command", "flag", "value", "field", "expected"), ACCEPTS,
                         ids=[f"{a[0]}{a[1]}" for a in ACCEPTS])
def test_every_command_accepts_every_trace_flag(command, flag, value, field, expected):
    args = build_parser().parse_args([*COMMANDS[command], "--trace", TRACE, *_words(flag, value)])
    options = workload_from_args(args).trace_options
    assert options is not None and getattr(options, field) == expected


def test_validate_has_no_rate_flags_because_loads_set_the_rate(capsys):
    for flag in ("--target-rate", "--time-scale", "--request-rate"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*COMMANDS["validate"], "--trace", TRACE, flag, "2"])
        assert exit_info.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_trace_flags_without_a_trace_are_refused(command, capsys):
    assert main([*COMMANDS[command], "--max-input-len", "100", "--sample", "0.5"]) == 2
    assert "--max-input-len, --sample needs --trace" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_synthetic_flags_with_a_trace_are_refused(command, capsys):
    assert main([*COMMANDS[command], "--trace", TRACE, "--input-len", "100"]) == 2
    assert "--input-len cannot be combined with --trace" in capsys.readouterr().err


CUT = ["--start", "100", "--duration", "200", "--max-input-len", "1200", "--sample", "0.5",
       "--seed", "4"]


def _cut_trace() -> int:
    options = TraceOptions(start_s=100, duration_s=200, max_input_len=1200, sample=0.5, seed=4)
    return len(load_trace(TRACE, options=options))


def test_sweep_applies_the_trace_flags(tmp_path):
    """The sweep replays exactly the requests `simulate` would: windowed, filtered, sampled."""
    n = _cut_trace()
    assert 0 < n < 3000 / 4
    out = tmp_path / "sweep"
    assert main(["sweep", "--policy", "continuous", "--trace", TRACE, *CUT, "--request-rate",
                 "2,4", "--workers", "1", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "sweep.csv")
    assert table["num_requests"].tolist() == [n, n]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["workload"]["trace_options"]["max_input_len"] == 1200
    run = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", TRACE, *CUT, "--target-rate",
                 "4", "--out", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_requests"] == n
    # the sweep's 4 req/s point is the simulate run at --target-rate 4
    row = table[table["request_rate"] == 4].iloc[0]
    assert row["request_throughput"] == pytest.approx(metrics["request_throughput"], rel=1e-6)


def test_sweep_target_rate_is_one_load_at_that_rate(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--policy", "continuous", "--trace", TRACE, "--max-input-len", "1200",
                 "--target-rate", "3", "--workers", "1", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "sweep.csv")
    assert table["request_rate"].tolist() == [3.0]
    assert main(["sweep", "--policy", "continuous", "--trace", TRACE, "--target-rate", "3",
                 "--request-rate", "1,2", "--out", str(tmp_path / "bad")]) == 2
    assert "--target-rate and --request-rate" in capsys.readouterr().err


def test_validate_reads_the_trace_with_the_flags():
    args = build_parser().parse_args([*COMMANDS["validate"], "--trace", TRACE, *CUT])
    spec = spec_from_args(args)
    assert len(base_workload(spec.workload, spec.seed)) == _cut_trace()


@pytest.mark.parametrize("extra", [
    ["--no-jitter"],
    ["--jitter-replicas", "3"],
    ["--trace", TRACE, *CUT, "--strict", "--trace-format", "native"],
    ["--num-requests", "9", "--input-len", "20", "--burstiness", "0.5", "--set",
     "max_num_seqs=4", "--kv-copy-latency-us", "3", "--device", "cpu"],
    ["--scheduling-policy", "priority", "--set", "max-num-seqs=4"],
])
def test_validate_rerun_command_reproduces_every_option(tmp_path, extra):
    """The command in validation.json parses back to the same options (before: --no-jitter and
    --jitter-replicas were dropped)."""
    out = tmp_path / "val"
    args = build_parser().parse_args([*COMMANDS["validate"], *extra, "--out", str(out)])
    again = build_parser().parse_args(shlex.split(command_line(args, out))[1:])
    assert vars(again) == vars(args)


VLLM_BENCH = [("--num-prompts", "--num-requests", "9"), ("--random-input-len", "--input-len", "20"),
              ("--random-output-len", "--output-len", "5"),
              ("--random-range-ratio", "--range-ratio", "0.1")]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_vllm_bench_flag_names_are_aliases(command):
    parse = build_parser().parse_args
    ours = parse([*COMMANDS[command], *(w for _, flag, v in VLLM_BENCH for w in (flag, v))])
    theirs = parse([*COMMANDS[command], *(w for flag, _, v in VLLM_BENCH for w in (flag, v))])
    assert vars(ours) == vars(theirs) and ours.num_requests == 9


def test_knobs_as_vllm_spells_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--set", "max-num-seqs=64",
                 "--scheduling-policy", "priority", "--num-requests", "10", "--out", str(out),
                 "--quiet"]) == 0
    knobs = json.loads((out / "config.json").read_text())["knobs"]
    assert knobs["max_num_seqs"] == 64 and knobs["policy"] == "priority"
    assert main(["simulate", "--policy", "continuous", "--set", "scheduling-policy=priority",
                 "--num-requests", "10", "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["knobs"]["policy"] \
        == "priority"
    assert main(["simulate", "--policy", "static", "--scheduling-policy", "priority",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "unknown knob 'scheduling_policy' for policy 'static'" in capsys.readouterr().err
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--policy", "continuous", "--vary", "max-num-seqs=2,4",
                 "--request-rate", "5", "--num-prompts", "10", "--workers", "1", "--out",
                 str(sweep), "--quiet"]) == 0
    assert pd.read_csv(sweep / "sweep.csv")["max_num_seqs"].tolist() == [2, 4]
