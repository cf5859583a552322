"""The command line: a good run writes its folder; bad input is one line, exit 2, no folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from batchsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces" / "chat.jsonl"


def test_simulate_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "--policy", "continuous", "--request-rate", "20",
                 "--num-requests", "200", "--seed", "3", "--out", str(out),
                 "--set", "max_num_seqs=64", "--goodput", "ttft:500", "tpot:50"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "itl_cdf.csv", "metrics.json", "report.html", "requests.csv", "steps.csv"]
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["completed"] == 200 and metrics["profile_source"] == "analytic"
    assert config["knobs"]["max_num_seqs"] == 64 and config["seed"] == 3
    assert "goodput" in metrics
    printed = capsys.readouterr().out
    assert "Successful requests:" in printed and "analytic" in printed


def test_no_report_skips_only_the_html(tmp_path):
    """--no-report writes every table (the ITL quantiles included), identical, but no page."""
    args = ["simulate", "--policy", "continuous", "--request-rate", "20", "--num-requests", "50",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert main([*args, "--no-report", "--out", str(tmp_path / "bare")]) == 0
    names = sorted(p.name for p in (tmp_path / "bare").iterdir())
    assert names == ["config.json", "itl_cdf.csv", "metrics.json", "requests.csv", "steps.csv"]
    for name in ("itl_cdf.csv", "metrics.json", "requests.csv", "steps.csv"):
        assert ((tmp_path / "bare" / name).read_bytes()
                == (tmp_path / "full" / name).read_bytes()), name


def test_hybrid_summary_shows_the_cpu_path(tmp_path, capsys):
    """A hybrid run prints its CPU path's use, with counts matching metrics.json."""
    cpu = str(ROOT / "profiles" / "qwen2.5-0.5b-cpu.json")
    out = tmp_path / "hybrid"
    assert main(["simulate", "--policy", "hybrid", "--profile", cpu, "--cpu-profile", cpu,
                 "--kv-copy-gbps", "25", "--request-rate", "0.5", "--num-requests", "30",
                 "--input-len", "32", "--output-len", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    paths = json.loads((out / "metrics.json").read_text())["prefill_path_requests"]
    assert paths["cpu"] > 0 and paths["gpu"] + paths["cpu"] == 30
    assert f"{paths['gpu']} / {paths['cpu']}" in printed and "CPU busy fraction:" in printed
    plain = tmp_path / "plain"
    assert main(["simulate", "--policy", "continuous", "--num-requests", "5", "--out",
                 str(plain)]) == 0
    assert "CPU path" not in capsys.readouterr().out


def test_same_seed_gives_identical_files(tmp_path):
    for name in ("a", "b"):
        assert main(["simulate", "--policy", "dynamic", "--request-rate", "5", "--num-requests",
                     "100", "--seed", "9", "--out", str(tmp_path / name), "--quiet"]) == 0
    for file in ("metrics.json", "requests.csv", "steps.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


@pytest.mark.parametrize("profile", sorted((ROOT / "profiles").glob("*.json")),
                         ids=lambda p: p.stem)
@pytest.mark.parametrize("policy", ["static", "dynamic", "continuous"])
def test_every_shipped_profile_simulates(tmp_path, profile, policy):
    out = tmp_path / "run"
    assert main(["simulate", "--profile", str(profile), "--policy", policy, "--request-rate",
                 "0.2", "--num-requests", "12", "--input-len", "64", "--output-len", "16",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] == 12
    assert metrics["output_token_throughput"] * metrics["duration_s"] == pytest.approx(12 * 16)


def test_every_policy_runs_the_shipped_chat_trace(tmp_path):
    for policy in ("static", "dynamic", "continuous"):
        assert main(["simulate", "--policy", policy, "--trace", str(TRACE), "--time-scale",
                     "0.2", "--out", str(tmp_path / policy), "--quiet"]) == 0


def write_trace(tmp_path, lines):
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"arrival_s": 0, "input_tokens": 10, "output_tokens": 5}'


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "nope"], "invalid choice: 'nope'"),
    (["--policy", "continuous", "--set", "max_num_seq=4"], "unknown knob 'max_num_seq'"),
    (["--policy", "continuous", "--set", "max_num_seqs"], "--set takes KNOB=VALUE"),
    (["--policy", "continuous", "--set", "max_num_seqs=lots"], "cannot read 'lots'"),
    (["--policy", "continuous", "--set", "enable_chunked_prefill=false",
      "--set", "max_num_batched_tokens=512", "--input-len", "1024"],
     "max_num_batched_tokens (512) is smaller than the longest prompt (1024)"),
    (["--policy", "static", "--profile", "/nonexistent.json"], "cannot read profile"),
    (["--policy", "static", "--trace", "TRACE", "--request-rate", "3"],
     "--request-rate cannot be combined with --trace"),
    (["--policy", "static", "--input-len", "40000"], "exceeds the model's context (32768)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    args = [str(write_trace(tmp_path, [GOOD])) if a == "TRACE" else a for a in args]
    out = tmp_path / "run"
    with pytest.raises(SystemExit) if "nope" in args else _nullcontext() as exit_info:
        code = main(["simulate", *args, "--out", str(out)])
    code = exit_info.value.code if exit_info else code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(("line", "message"), [
    ('{"arrival_s": 0, "input_tokens": 10', "trace.jsonl:2: malformed JSON"),
    ('{"arrival_s": 0, "input_tokens": 10, "output_tokens": 0}', "trace.jsonl:2: output_tokens"),
    ('{"arrival_s": 0, "input_tokens": 40000, "output_tokens": 5}',
     "trace.jsonl:2: request of 40000 input + 5 output tokens exceeds"),
])
def test_bad_trace_lines(tmp_path, capsys, line, message):
    trace = write_trace(tmp_path, [GOOD, line])
    code = main(["simulate", "--policy", "continuous", "--trace", str(trace),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and not (tmp_path / "run").exists()


def test_reject_too_long_counts_instead_of_failing(tmp_path):
    trace = write_trace(tmp_path, [GOOD, '{"arrival_s": 1, "input_tokens": 40000, '
                                   '"output_tokens": 5}'])
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(trace), "--out", str(out),
                 "--reject-too-long", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] == 1 and metrics["rejected"] == 1


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "corrupted JSON"),
    ('{"schema": "other"}', "not a batchsim profile"),
    ('{"schema": "batchsim.profile", "schema_version": 99}', "schema_version 99 is not supported"),
    ('{"schema": "batchsim.profile", "schema_version": 1, "source": "measured"}',
     "missing field 'memory'"),
])
def test_bad_profiles(tmp_path, capsys, content, message):
    profile = tmp_path / "p.json"
    profile.write_text(content)
    code = main(["simulate", "--policy", "continuous", "--profile", str(profile),
                 "--num-requests", "3", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(profile) in err
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_is_kept_unless_forced(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["simulate", "--policy", "static", "--num-requests", "3", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_python_dash_m_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "batchsim", "simulate", "--policy", "static",
                           "--num-requests", "4", "--out", str(tmp_path / "r"), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "run folder:" in done.stdout


def test_refit_rewrites_cost_models_from_raw_points(tmp_path, capsys):
    """`profile --refit` refits a measured profile in place without torch; the simulator loads
    the result; an analytic profile (no raw points) is refused and left as it was."""
    from batchsim.sim.profile import load_profile

    measured = tmp_path / "tiny.json"
    doc = json.loads((ROOT / "profiles" / "tiny-qwen2-cpu.json").read_text())
    doc["cost_models"] = {k: {"terms": [{"const": 1.0}]} for k in doc["cost_models"]}
    measured.write_text(json.dumps(doc))
    assert main(["profile", "--refit", str(measured), "--quiet"]) == 0
    refitted = json.loads(measured.read_text())
    assert refitted["cost_models"]["packed.decode"]["terms"] != [{"const": 1.0}]
    assert refitted["cost_models"]["packed.decode"]["cv"]["n_points"] > 0
    assert refitted["points"] == doc["points"]
    load_profile(measured)
    analytic = tmp_path / "analytic.json"
    analytic.write_bytes((ROOT / "profiles" / "qwen2.5-0.5b-h100-analytic.json").read_bytes())
    before = analytic.read_bytes()
    assert main(["profile", "--refit", str(analytic)]) == 2
    assert "no measured points to refit" in capsys.readouterr().err
    assert analytic.read_bytes() == before


def test_merge_takes_the_median_of_all_passes_samples(tmp_path, capsys):
    """`profile --merge` pools every pass's samples per grid point, takes their median, refits,
    and refuses passes of another setup without writing anything."""
    from batchsim.sim.profile import load_profile

    doc = json.loads((ROOT / "profiles" / "tiny-qwen2-cpu.json").read_text())
    slow = json.loads(json.dumps(doc))
    for point in slow["points"]:  # a second pass on a machine running 40% slower
        point["samples_s"] = [t * 1.4 for t in point["samples_s"]]
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "merged.json"
    a.write_text(json.dumps(doc))
    b.write_text(json.dumps(slow))
    assert main(["profile", "--merge", str(a), str(b), "--out", str(out), "--quiet"]) == 0
    merged = json.loads(out.read_text())
    first, first_slow = doc["points"][0], slow["points"][0]
    point = next(p for p in merged["points"] if p["id"] == first["id"])
    pooled = first["samples_s"] + first_slow["samples_s"]
    assert point["time_s"] == pytest.approx(float(np.median(pooled)))
    assert point["repeats"] == len(pooled) and point["passes"] == 2
    assert len(merged["points"]) == len(doc["points"])
    assert merged["run"]["passes"]["count"] == 2
    load_profile(out)

    other = json.loads(json.dumps(doc))
    other["fingerprint"]["dtype"] = "bfloat16"
    c = tmp_path / "c.json"
    c.write_text(json.dumps(other))
    assert main(["profile", "--merge", str(a), str(c), "--out", str(tmp_path / "x.json")]) == 2
    assert "fingerprint.dtype" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
