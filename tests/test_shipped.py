"""Shipped files are found from any folder, never rewritten unasked; hybrid runs with no flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchsim.cli import main
from batchsim.sim.shipped import default_profile, is_shipped, resolve, shipped_names

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "profiles" / "tiny-qwen2-cpu.json"


def test_bare_names_find_shipped_files_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "chat.jsonl" in shipped_names("traces") and default_profile().is_file()
    assert resolve("chat.jsonl", "traces") == (ROOT / "traces" / "chat.jsonl").resolve()
    assert resolve("tiny-qwen2-cpu", "profiles") == TINY.resolve()  # extension optional
    (tmp_path / "chat.jsonl").write_text("mine\n")
    assert resolve("chat.jsonl", "traces") == Path("chat.jsonl")  # a file here comes first
    assert resolve("sub/chat.jsonl", "traces") == Path("sub/chat.jsonl")  # a path is a path
    # the README's checkout spelling works from any folder too, unless such a file is here
    assert resolve("traces/chat.jsonl", "traces") == (ROOT / "traces" / "chat.jsonl").resolve()
    assert resolve("profiles/tiny-qwen2-cpu.json", "profiles") == TINY.resolve()
    assert resolve("traces/chat.jsonl", "profiles") == Path("traces/chat.jsonl")
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "chat.jsonl").write_text("mine\n")
    assert resolve("traces/chat.jsonl", "traces") == Path("traces/chat.jsonl")
    assert is_shipped(TINY) and not is_shipped(tmp_path / "chat.jsonl")


def test_hybrid_runs_on_the_default_profile_and_says_what_it_assumed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "hybrid", "--trace", "chat.jsonl", "--max-input-len",
                 "400", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: the CPU path's prefill cost is the shipped CPU profile qwen2.5-0.5b-cpu.json" \
        in printed and "ASSUMED at 25 GB/s" in printed
    config = json.loads((out / "config.json").read_text())
    assert len(config["assumptions"]) == 2
    assert config["cpu_path"]["prefill"].startswith(str(ROOT / "profiles" / "qwen2.5-0.5b-cpu"))
    assert config["cpu_path"]["kv_copy"].startswith("assumed: 25.0 GB/s")
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--policy", "hybrid,continuous", "--request-rate", "2",
                 "--num-requests", "20", "--workers", "1", "--out", str(sweep), "--quiet"]) == 0
    assert len(json.loads((sweep / "sweep.json").read_text())["assumptions"]) == 2


def test_given_cpu_path_inputs_are_not_overridden(tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "hybrid", "--cpu-profile", "qwen2.5-0.5b-cpu.json",
                 "--kv-copy-gbps", "10", "--num-requests", "10", "--out", str(out),
                 "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert "assumptions" not in config and config["cpu_path"]["kv_copy"].startswith("assumed: 10")


def test_refit_never_rewrites_a_shipped_profile_unasked(tmp_path, capsys):
    before = TINY.read_bytes()
    for given in (str(TINY), "tiny-qwen2-cpu.json"):
        assert main(["profile", "--refit", given, "--quiet"]) == 2
        assert "is a shipped profile: write the refit elsewhere with --out" in \
            capsys.readouterr().err
    assert TINY.read_bytes() == before
    assert not TINY.with_suffix(".html").exists()


def test_refit_is_deterministic(tmp_path, monkeypatch):
    """Refitting the same points twice gives the same bytes, and refitting a refit changes
    nothing (before, a timestamp and the refit's own float noise moved every time)."""
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["profile", "--refit", "tiny-qwen2-cpu.json", "--out", str(a), "--quiet"]) == 0
    assert main(["profile", "--refit", "tiny-qwen2-cpu.json", "--out", str(b), "--quiet"]) == 0
    assert a.read_bytes() == b.read_bytes()
    first = a.read_bytes()
    assert main(["profile", "--refit", str(a), "--quiet"]) == 0  # in place: not shipped
    assert a.read_bytes() == first
    assert (tmp_path / "a.html").is_file()  # the report beside the refit
    assert main(["profile", "--refit", "tiny-qwen2-cpu.json", "--out", str(b)]) == 2  # exists


def test_report_of_a_shipped_profile_writes_to_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "tiny-qwen2-cpu.json"]) == 0
    assert (tmp_path / "tiny-qwen2-cpu.html").is_file()
    assert not TINY.with_suffix(".html").exists()
    assert "report: tiny-qwen2-cpu.html" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["simulate", "--policy", "static"], ["trace", "stats"]])
def test_a_missing_file_lists_nothing_shipped_by_accident(tmp_path, capsys, command):
    """A name that is neither here nor shipped is still a one-line error naming it."""
    argv = [*command, "--trace", "nope.jsonl"] if command[0] == "simulate" else [
        *command, "nope.jsonl"]
    assert main([*argv, *(["--out", str(tmp_path / "r")] if command[0] == "simulate" else [])]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
