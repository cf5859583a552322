"""The bad-input catalogue: every promise of the README's bad-input paragraph and of issue 16,
one case each. A bad input prints one line naming the problem (file:line where there is one),
exits 2, writes nothing and leaves what was there untouched; no traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batchsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces" / "chat.jsonl"
CPU = ROOT / "profiles" / "qwen2.5-0.5b-cpu.json"
SIM = ["simulate", "--num-requests", "5"]


def _fails(capsys, argv: list[str], *needles: str) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchsim: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def _trace(tmp_path: Path, *lines: str, name: str = "t.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


GOOD = '{"arrival_s": 0.0, "input_tokens": 8, "output_tokens": 4}'


@pytest.mark.parametrize("line, message", [
    ('{"arrival_s": 0.0, "input_tokens": 8', "malformed JSON"),  # malformed line
    ('"arrival_s": 0.0, "input_tokens": 8, "output_tokens": 4', "malformed JSON"),  # no braces
    ('[1, 2, 3]', "expected a JSON object"),
    ('{"arrival_s": 0.0, "input_tokens": 8}', "missing field 'output_tokens'"),
    ('{"arrival_s": 0.0, "input_tokens": 0, "output_tokens": 4}', "positive integer"),
    ('{"arrival_s": 0.0, "input_tokens": -3, "output_tokens": 4}', "positive integer"),
    ('{"arrival_s": NaN, "input_tokens": 8, "output_tokens": 4}', "NaN is not valid JSON"),
    ('{"arrival_s": 1e999, "input_tokens": 8, "output_tokens": 4}', "finite"),
    ('{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "priority": 1e30}', "priority"),
    ('{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "priority": 0.5}', "priority"),
    ('{"arrival_s": 0, "input_tokens": 8, "output_tokens": ' + "9" * 400 + "}", "too large"),
    ('{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4, "hash_ids": [' + "9" * 30 + "]}",
     "hash_ids"),
    ('{"arrival_s": 0, "input_tokens": 8, "output_tokens": 4} {}', "malformed JSON"),
])
def test_malformed_trace_line_names_file_and_line(tmp_path, capsys, line, message):
    trace = _trace(tmp_path, GOOD, line, GOOD)
    _fails(capsys, ["simulate", "--policy", "continuous", "--trace", trace,
                    "--out", str(tmp_path / "run")], f"{trace}:2:", message)
    assert not (tmp_path / "run").exists()


def test_request_longer_than_the_context(tmp_path, capsys):
    trace = _trace(tmp_path, GOOD, '{"arrival_s": 1, "input_tokens": 900000, "output_tokens": 4}')
    _fails(capsys, ["simulate", "--policy", "continuous", "--trace", trace, "--out",
                    str(tmp_path / "r")], f"{trace}:2:", "--reject-too-long")


@pytest.mark.parametrize("argv, message", [
    (["--policy", "nope"], "invalid choice"),
    (["--policy", "continuous", "--set", "nope=1"], "unknown knob 'nope'"),
    (["--policy", "continuous", "--set", "max_num_seqs=0"], "max_num_seqs"),
    (["--policy", "continuous", "--set", "block_size=1000000000000"], "[1, 1024]"),
    (["--policy", "dynamic", "--set", "priority_levels=10000000000"], "[0, 1024]"),
    (["--policy", "static", "--set", "max_queue_delay_ms=nan"], "finite"),
    (["--policy", "continuous", "--set", "gpu_memory_utilization=inf"], "finite"),
    (["--policy", "continuous", "--set", "max_num_seqs=" + "9" * 50], "65536"),
    (["--policy", "dynamic", "--set", "preferred_batch_size=a,b"], "list of integers"),
    (["--policy", "continuous", "--request-rate", "nan"], "--request-rate"),
    (["--policy", "continuous", "--request-rate", "1e-300"], "beyond"),
    (["--policy", "continuous", "--burstiness", "inf"], "--burstiness"),
    (["--policy", "continuous", "--num-requests", "100000000000"], "--num-requests"),
    (["--policy", "continuous", "--goodput", "ttft:nan"], "--goodput ttft"),
    (["--policy", "continuous", "--goodput", "ttft:inf"], "--goodput ttft"),
    (["--policy", "hybrid", "--kv-copy-gbps", "nan"], "--kv-copy-gbps"),
    (["--policy", "hybrid", "--kv-copy-gbps", "inf"], "--kv-copy-gbps"),
    (["--policy", "continuous", "--range-ratio", "nan"], "--range-ratio"),
])
def test_impossible_values_are_refused(tmp_path, capsys, argv, message):
    _fails(capsys, [*SIM, *argv, "--out", str(tmp_path / "run")], message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--time-scale inf", "--time-scale nan", "--time-scale -1",
                                  "--time-scale 1e300", "--target-rate nan", "--start inf",
                                  "--sample nan", "--duration nan"])
def test_trace_options_must_be_finite(tmp_path, capsys, flag):
    name, value = flag.split()
    _fails(capsys, ["simulate", "--policy", "continuous", "--trace", str(TRACE), name, value,
                    "--out", str(tmp_path / "run")], name)


def _profile(tmp_path: Path, edit) -> str:
    doc = json.loads(CPU.read_text())
    edit(doc)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _zero_costs(doc):
    for entry in doc["cost_models"].values():
        entry["terms"] = [{"const": 0.0}]
        entry.pop("curve", None)


@pytest.mark.parametrize("edit, message", [
    (_zero_costs, "smallest step at 0 s"),
    (lambda d: d["model"].__setitem__("max_model_len", float("inf")), "max_model_len"),
    (lambda d: d["memory"].__setitem__("total_bytes", float("inf")), "total_bytes"),
    (lambda d: d["memory"].__setitem__("total_bytes", float("nan")), "total_bytes"),
    (lambda d: d.__setitem__("cost_models", [1, 2]), "cost_models must be an object"),
    (lambda d: d.__setitem__("memory", []), "memory must be an object"),
    (lambda d: d["cost_models"].__setitem__("packed.decode", [1]), "must be an object"),
    (lambda d: d.pop("memory"), "missing field 'memory'"),
    (lambda d: d.__setitem__("complete", False), "incomplete"),
    (lambda d: d.__setitem__("schema_version", 99), "schema_version"),
])
def test_profiles_are_validated_by_value(tmp_path, capsys, edit, message):
    profile = _profile(tmp_path, edit)
    _fails(capsys, [*SIM, "--policy", "continuous", "--profile", profile, "--out",
                    str(tmp_path / "run")], profile, message)


def test_corrupted_profile_json(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text('{"schema": ')
    _fails(capsys, [*SIM, "--policy", "continuous", "--profile", str(bad)], str(bad),
           "corrupted JSON")


# -- outputs: never lose a user's files -------------------------------------------------------

@pytest.mark.parametrize("target", [".", "..", "HOME", "REPO"])
def test_out_refuses_folders_that_hold_the_users_files(tmp_path, capsys, monkeypatch, target):
    """`--out .` (or a parent, home, the repository) with --force refuses before any work and
    every file stays."""
    proj = tmp_path / "home" / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "main.py").write_text("x")
    home = tmp_path / "h"
    (home / "docs").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(proj)
    out = {"REPO": str(ROOT), "HOME": str(home)}.get(target, target)
    for command in (["simulate", "--policy", "continuous", "--num-requests", "3"],
                    ["sweep", "--policy", "continuous", "--request-rate", "1", "--num-requests",
                     "3", "--workers", "1"]):
        _fails(capsys, [*command, "--out", out, "--force"], "refusing to write there")
    assert (proj / "src" / "main.py").read_text() == "x" and (home / "docs").is_dir()


def test_force_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    _fails(capsys, [*SIM, "--policy", "static", "--out", str(out), "--force"],
           "not a batchsim run folder")
    assert (out / "notes.txt").read_text() == "keep"


def test_out_file_with_force_fails_before_simulating(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("mine")
    _fails(capsys, ["simulate", "--policy", "continuous", "--num-requests", "100000", "--out",
                    str(out), "--force"], "not a folder")
    assert out.read_text() == "mine"


@pytest.mark.parametrize("argv", [
    ["report", "RUN", "--out", "FILE"],
    ["trace", "stats", str(TRACE), "--html", "FILE"],
    ["trace", "convert", str(TRACE), "--out", "FILE"],
])
def test_files_are_replaced_only_with_force(tmp_path, capsys, argv):
    run = tmp_path / "run"
    assert main([*SIM, "--policy", "static", "--out", str(run), "--quiet"]) == 0
    target = tmp_path / "target.jsonl"
    target.write_text("mine")
    argv = [str(run) if a == "RUN" else str(target) if a == "FILE" else a for a in argv]
    capsys.readouterr()
    _fails(capsys, argv, "already exists", "--force")
    assert target.read_text() == "mine"
    assert main([*argv, "--force"]) == 0
    assert target.read_text() != "mine"


def test_replacement_keeps_old_until_new_is_complete(tmp_path):
    """A failure while the new run is written leaves the old run folder whole, even with a
    read-only subfolder, and no work folder behind."""
    out = tmp_path / "run"
    assert main([*SIM, "--policy", "static", "--out", str(out), "--quiet"]) == 0
    (out / "ro").mkdir()
    (out / "ro" / "f").write_text("x")
    os.chmod(out / "ro", 0o555)
    before = sorted(p.name for p in out.iterdir())

    def broken(tmp, _run):
        (tmp / "half.csv").write_text("partial")
        raise OSError("disk full")

    from batchsim.sim.run import RunSpec, prepare, simulate, write_run
    from batchsim.sim.workload.synthetic import SyntheticSpec

    result = simulate(prepare(RunSpec(policy="static", synthetic=SyntheticSpec(num_requests=5))))
    with pytest.raises(OSError):
        write_run(out, result, writers=(broken,))
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    write_run(out, result)  # a successful replacement removes the read-only old folder too
    assert not (out / "ro").exists() and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_config_and_metrics_are_strict_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SIM, "--policy", "continuous", "--output-len", "1", "--out", str(out),
                 "--quiet"]) == 0

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    config = json.loads((out / "config.json").read_text(), parse_constant=refuse)
    json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert config["workload"]["synthetic"]["request_rate"] == "inf"


@pytest.mark.parametrize("content, message", [('{"a": ', "corrupted JSON"),
                                              ('{"a": 1}', "missing field"),
                                              ("[1]", "damaged run files")])
def test_report_names_a_corrupted_metrics_file(tmp_path, capsys, content, message):
    out = tmp_path / "run"
    assert main([*SIM, "--policy", "static", "--out", str(out), "--quiet"]) == 0
    (out / "metrics.json").write_text(content)
    capsys.readouterr()
    _fails(capsys, ["report", str(out)], str(out), message)


def test_a_fifo_trace_is_read_once(tmp_path, capsys):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(GOOD + "\n" + GOOD + "\n"))
    writer.start()
    assert main(["trace", "stats", str(fifo)]) == 0
    writer.join(timeout=10)
    assert "Requests:" in capsys.readouterr().out


def test_trace_stats_html_with_equal_values(tmp_path, capsys):
    lines = [f'{{"arrival_s": {i * 0.1!r}, "input_tokens": 7, "output_tokens": 7}}'
             for i in range(30)]
    trace = _trace(tmp_path, *lines)
    assert main(["trace", "stats", trace, "--html", str(tmp_path / "t.html")]) == 0


def test_burstgpt_cell_spanning_two_lines_is_reported_at_its_line(tmp_path, capsys):
    path = tmp_path / "b.csv"
    path.write_text('Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n'
                    '1.0,"Chat\nGPT",10,5,15,Conversation log\n'
                    '2.0,ChatGPT,x,5,15,Conversation log\n')
    _fails(capsys, ["trace", "stats", str(path)], f"{path}:4:", "not a number")


def test_folder_and_device_as_trace(tmp_path, capsys):
    _fails(capsys, ["trace", "stats", str(tmp_path)], "is a folder")
    _fails(capsys, ["trace", "stats", "/dev/zero"], "not a regular file")


@pytest.mark.parametrize("extra, message", [
    (["--prefix-len", "-1"], "--prefix-len must be in [0, 2147483648], got -1"),  # not 2.1e+09
    (["--set", "enable_prefix_caching=maybe"], "cannot read 'maybe' as true or false"),
    (["--replicas", "2", "--max-concurrency", "2"], "--max-concurrency applies to one server"),
    (["--replicas", "2", "--router", "nope"], "--router"),
])
def test_this_waves_flags_fail_in_one_readable_line(capsys, tmp_path, extra, message):
    _fails(capsys, [*SIM, "--policy", "continuous", *extra, "--out", str(tmp_path / "r")],
           message)
    assert not (tmp_path / "r").exists()


def test_plan_refuses_closed_loop_clients(capsys, tmp_path):
    _fails(capsys, ["plan", "--policy", "continuous", "--request-rate", "5", "--goodput",
                    "ttft:500", "--max-concurrency", "4", "--out", str(tmp_path / "p")],
           "--max-concurrency")
    assert not (tmp_path / "p").exists()
