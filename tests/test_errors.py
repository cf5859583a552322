"""User mistakes are a UsageError (one line, exit 2); anything else is a bug and shows as one."""

from __future__ import annotations

import pytest

import batchsim.simulate_cmd
from batchsim.cli import main
from batchsim.policies.registry import get_policy, make_config
from batchsim.sim.errors import UsageError
from batchsim.sim.sweep.presets import get_preset
from batchsim.sim.workload.traces import detect_format


def test_unknown_names_are_usage_errors_listing_what_is_valid(tmp_path):
    with pytest.raises(UsageError, match=r"unknown policy 'nope'; choose one of: .*continuous"):
        get_policy("nope")
    with pytest.raises(UsageError, match=r"unknown knob 'max_num_seq' .*max_num_seqs"):
        make_config("continuous", {"max_num_seq": "4"})
    with pytest.raises(UsageError, match="unknown preset 'nope'; presets: seed-"):
        get_preset("nope")
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"arrival_s": 0, "input_tokens": 1, "output_tokens": 1}\n')
    with pytest.raises(UsageError, match="unknown trace format 'nope'; known: native"):
        detect_format(trace, "nope")


def test_a_bad_knob_value_is_a_usage_error():
    with pytest.raises(UsageError, match="cannot read 'lots'"):
        make_config("continuous", {"max_num_seqs": "lots"})


def test_a_usage_error_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["sweep", "--policy", "continuous", "--vary", "nope=1,2", "--request-rate", "1",
                 "--out", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("batchsim: error: unknown knob 'nope'") and err.count("\n") == 1
    assert not (tmp_path / "sweep").exists()


def test_a_key_error_from_a_bug_is_not_reported_as_a_user_error(monkeypatch, capsys):
    """Before UsageError every KeyError printed `batchsim: error: 'x'` and exited 2."""
    def buggy(args):
        return {}["x"]

    monkeypatch.setattr(batchsim.simulate_cmd, "run", buggy)
    with pytest.raises(KeyError, match="'x'"):
        main(["simulate", "--policy", "continuous"])
    assert "batchsim: error" not in capsys.readouterr().err


def test_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["trace", "stats", str(tmp_path / "missing.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.jsonl" in err and err.count("\n") == 1
