"""Public trace formats: detection, parsing, bad input, transforms, conversion and statistics.

The files in tests/data/traces/ are hand-made, a few lines each: blank lines, a missing final
newline (azure), CRLF line ends (vidur), duplicated timestamps, a failed BurstGPT request with 0
response tokens, very large values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from batchsim.cli import main
from batchsim.sim.workload.stats import trace_stats
from batchsim.sim.workload.traces import (
    FORMATS,
    _fast_jsonl_rows,
    _json_rows,
    load_trace,
    read_trace,
)
from batchsim.sim.workload.transform import TraceOptions, mean_rate
from batchsim.sim.workload.workload import PrefixBlocks, WorkloadError

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"


@pytest.mark.parametrize(("name", "fmt", "arrival", "inputs", "outputs", "lines"), [
    ("azure.csv", "azure", [0, 4.314579, 4.314579, 60.0], [374, 396, 879, 10**9],
     [44, 109, 2, 5], [2, 3, 5, 6]),
    ("burstgpt.csv", "burstgpt", [0, 113, 113], [472, 417, 1360], [18, 276, 129], [2, 5, 6]),
    ("mooncake.jsonl", "mooncake", [0, 0, 3, 6], [6955, 6472, 400, 2**53], [52, 26, 11, 1],
     [1, 2, 4, 5]),
    ("vidur.csv", "vidur", [0, 0.25, 0.25, 9.75], [1200, 4096, 17, 2048], [300, 1, 128, 512],
     [2, 3, 5, 6]),
])
def test_each_format_is_detected_and_parsed(name, fmt, arrival, inputs, outputs, lines):
    """Arrivals are seconds from the first request; line numbers are the file's own."""
    w = read_trace(DATA / name)
    assert w.provenance["format"] == fmt
    np.testing.assert_allclose(w.arrival_s, arrival, atol=1e-6)
    assert w.input_tokens.tolist() == inputs and w.output_tokens.tolist() == outputs
    assert w.line_numbers.tolist() == lines
    assert read_trace(DATA / name, TraceOptions(format=fmt)).input_tokens.tolist() == inputs


def test_burstgpt_failed_requests_are_dropped_with_one_warning(caplog):
    w = read_trace(DATA / "burstgpt.csv")
    assert w.provenance["dropped_zero_length"] == 1 and w.provenance["num_read"] == 4
    assert "dropped 1 requests with 0 input or output tokens" in caplog.text


def test_mooncake_hash_ids_kept_and_both_json_paths_agree():
    """The regex fast path and the json.loads fallback read the same values."""
    w = read_trace(DATA / "mooncake.jsonl")
    assert w.hash_ids is not None
    assert w.hash_ids[0].tolist() == list(range(46, 60))
    assert w.hash_ids[2].tolist() == [] and w.hash_ids[3].tolist() == [99999999999999]
    fast = _fast_jsonl_rows(DATA / "mooncake.jsonl", FORMATS["mooncake"])
    slow = _json_rows(DATA / "mooncake.jsonl", FORMATS["mooncake"])
    assert fast is not None and fast.hash_ids is not None and slow.hash_ids is not None
    for a, b in ((fast.time, slow.time), (fast.inputs, slow.inputs), (fast.lines, slow.lines),
                 (fast.hash_ids.values, slow.hash_ids.values),
                 (fast.hash_ids.offsets, slow.hash_ids.offsets)):
        assert a.tolist() == b.tolist()


def test_prefix_blocks_take_reorders_ragged_lists():
    blocks = PrefixBlocks(np.array([1, 2, 3, 4, 5, 6]), np.array([0, 2, 2, 5, 6]))
    picked = blocks.take(np.array([3, 0, 2]))
    assert [picked[i].tolist() for i in range(3)] == [[6], [1, 2], [3, 4, 5]]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
VIDUR = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
BURST = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
MOON = '{"timestamp": 0, "input_length": 5, "output_length": 2}\n'


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.csv", AZURE + "2023-11-16 18:15:46.68,3,4\nyesterday,3,4\n",
     "a.csv:3: unparsable timestamp 'yesterday'"),
    ("b.csv", BURST + "5,ChatGPT,4,4,8,x\n7,ChatGPT,4,-2,2,x\n",
     "b.csv:3: Response tokens must be >= 0, got -2"),
    ("v.csv", VIDUR + "0,5,5\n\n1,5\n", "v.csv:4: missing num_decode_tokens"),
    ("v.csv", VIDUR + "0,5,5\n1,abc,5\n", "v.csv:3: num_prefill_tokens is not a number: 'abc'"),
    ("v.csv", VIDUR + "0,5,5\n1,2.5,5\n", "v.csv:3: num_prefill_tokens must be a whole number"),
    ("v.csv", VIDUR + "0,5,5\n1,1e300,5\n", "v.csv:3: num_prefill_tokens is too large"),
    ("v.csv", VIDUR + "0,5,5\n,5,5\n", "v.csv:3: missing arrived_at"),
    ("m.jsonl", MOON + '{"timestamp": 1, "input_length": 5\n', "m.jsonl:2: malformed JSON"),
    ("m.jsonl", MOON + '{"timestamp": 1, "input_length": 5}\n',
     "m.jsonl:2: missing field 'output_length'"),
    ("m.jsonl", MOON + '{"timestamp": 1, "input_length": "5", "output_length": 2}\n',
     "m.jsonl:2: input_length must be a finite number, got '5'"),
    ("m.jsonl", MOON + '{"timestamp": 1, "input_length": 5, "output_length": 2,'
     ' "hash_ids": "x"}\n', "m.jsonl:2: hash_ids must be a list of integers"),
    ("x.csv", "\nts,prompt,completion\n1,2,3\n", "x.csv:2: 'ts, prompt, completion' matches no "
     "known trace format"),
    ("x.jsonl", '{"time": 1}\n', "x.jsonl:1: 'time' matches no known trace format"),
])
def test_bad_input_names_file_line_and_problem(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(WorkloadError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")


def test_forced_format_must_match_the_header(tmp_path):
    with pytest.raises(WorkloadError, match=r"v.csv:1: not a azure trace: expected a CSV with "
                       "TIMESTAMP, ContextTokens, GeneratedTokens; found arrived_at"):
        read_trace(write(tmp_path, "v.csv", VIDUR + "0,5,5\n"), TraceOptions(format="azure"))


def test_out_of_order_timestamps_sorted_with_warning_or_rejected_when_strict(tmp_path, caplog):
    path = write(tmp_path, "v.csv", VIDUR + "5,1,1\n3,2,2\n\n3,3,3\n9,4,4\n")
    w = read_trace(path)
    assert w.input_tokens.tolist() == [2, 3, 1, 4]  # stable: equal times keep file order
    assert w.line_numbers.tolist() == [3, 5, 2, 6] and w.arrival_s.tolist() == [0, 0, 2, 6]
    assert "not sorted" in caplog.text and w.provenance["sorted"]
    with pytest.raises(WorkloadError, match=r"v.csv:3: timestamp earlier than the previous "
                       r"request's \(line 2\)"):
        read_trace(path, TraceOptions(strict=True))


def test_spaces_only_lines_are_blank_and_large_hash_files_fall_back_safely(tmp_path):
    """A line of spaces sends the CSV to the text pass, which still skips it as blank."""
    w = read_trace(write(tmp_path, "v.csv", VIDUR + "0,5,5\n   \n2,6,6"))
    assert w.line_numbers.tolist() == [2, 4] and w.input_tokens.tolist() == [5, 6]
    mixed = write(tmp_path, "m.jsonl", MOON + '{"timestamp": 1000, "input_length": 7, '
                  '"output_length": 1, "hash_ids": [3, 4]}\n')
    blocks = read_trace(mixed).hash_ids  # hash_ids on one line only: padded with []
    assert blocks is not None and [blocks[i].tolist() for i in range(2)] == [[], [3, 4]]


def test_window_is_in_trace_time_and_shifted_to_zero():
    w = read_trace(DATA / "vidur.csv", TraceOptions(start_s=0.25, duration_s=9.5))
    assert w.arrival_s.tolist() == [0.0, 0.0] and w.input_tokens.tolist() == [4096, 17]
    assert w.provenance["dropped_outside_window"] == 2
    with pytest.raises(WorkloadError, match=r"no request in the window \[20, 21\) s; the trace "
                       "spans 0 to 9.75 s"):
        read_trace(DATA / "vidur.csv", TraceOptions(start_s=20, duration_s=1))


def test_time_scale_and_target_rate():
    """Mean rate = (N - 1) / span; the window applies before the scaling."""
    w = read_trace(DATA / "vidur.csv", TraceOptions(time_scale=2.0))
    assert w.arrival_s.tolist() == [0, 0.5, 0.5, 19.5]
    w = read_trace(DATA / "vidur.csv", TraceOptions(target_rate=3.0))
    assert mean_rate(w.arrival_s) == pytest.approx(3.0)
    assert w.provenance["time_scale"] == pytest.approx((3 / 9.75) / 3.0)
    w = read_trace(DATA / "vidur.csv", TraceOptions(start_s=0.25, target_rate=1.0))
    assert w.arrival_s.tolist() == pytest.approx([0, 0, 2.0])  # 9.5 s span -> 2 gaps of 1 s
    with pytest.raises(WorkloadError, match="cannot be combined"):
        TraceOptions(time_scale=2.0, target_rate=1.0)


def test_max_input_len_and_seeded_sampling(tmp_path, caplog):
    w = read_trace(DATA / "vidur.csv", TraceOptions(max_input_len=2048))
    assert w.input_tokens.tolist() == [1200, 17, 2048] and w.provenance["dropped_too_long"] == 1
    assert "dropped 1 requests with more than 2048 input tokens" in caplog.text
    rows = "".join(f"{i},{i + 1},1\n" for i in range(2000))
    path = write(tmp_path, "v.csv", VIDUR + rows)
    a = read_trace(path, TraceOptions(sample=0.25, seed=4))
    b = read_trace(path, TraceOptions(sample=0.25, seed=4))
    c = read_trace(path, TraceOptions(sample=0.25, seed=5))
    assert a.input_tokens.tolist() == b.input_tokens.tolist() != c.input_tokens.tolist()
    assert len(a) == pytest.approx(500, abs=60)
    assert a.provenance["dropped_by_sample"] == 2000 - len(a)


def test_native_traces_keep_absolute_arrivals_and_hash_ids(tmp_path):
    path = write(tmp_path, "n.jsonl", '{"arrival_s": 2.5, "input_tokens": 3, "output_tokens": 1, '
                 '"hash_ids": [7]}\n{"arrival_s": 4, "input_tokens": 4, "output_tokens": 2, '
                 '"hash_ids": []}\n')
    w = load_trace(path)
    assert w.arrival_s.tolist() == [2.5, 4.0] and w.hash_ids is not None
    assert w.hash_ids[0].tolist() == [7]


def test_convert_round_trip_keeps_values_and_hash_ids(tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    assert main(["trace", "convert", str(DATA / "mooncake.jsonl"), "--out", str(out),
                 "--time-scale", "0.5"]) == 0
    assert "wrote" in capsys.readouterr().out
    back, src = read_trace(out), read_trace(DATA / "mooncake.jsonl")
    assert back.provenance["format"] == "native"
    assert back.arrival_s.tolist() == [0, 0, 1.5, 3.0]
    assert back.input_tokens.tolist() == src.input_tokens.tolist()
    assert back.hash_ids is not None and src.hash_ids is not None
    assert back.hash_ids.values.tolist() == src.hash_ids.values.tolist()
    assert back.hash_ids.offsets.tolist() == src.hash_ids.offsets.tolist()
    # never overwritten without --force; nothing else left in the folder
    assert main(["trace", "convert", str(DATA / "vidur.csv"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["trace", "convert", str(DATA / "vidur.csv"), "--out", str(out), "--force",
                 "--target-rate", "2", "--sample", "1", "--seed", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
    assert mean_rate(read_trace(out).arrival_s) == pytest.approx(2.0, rel=1e-5)


def test_convert_bad_input_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, "v.csv", VIDUR + "0,5,5\n1,-5,5\n")
    out = tmp_path / "out.jsonl"
    assert main(["trace", "convert", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"batchsim: error: {path}:3: num_prefill_tokens must be >= 0, got -5\n"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["v.csv"]


def test_stats_numbers(caplog):
    """Vidur file: gaps 0.25, 0, 9.5 s; by hand: mean 3.25, std sqrt(58.625 / 3)."""
    caplog.set_level(logging.WARNING)
    s = trace_stats(read_trace(DATA / "vidur.csv"))
    cv = (58.625 / 3) ** 0.5 / 3.25
    assert s["num_requests"] == 4 and s["span_s"] == 9.75
    assert s["mean_rate"] == pytest.approx(3 / 9.75)
    assert s["gap_cv"] == pytest.approx(cv) and s["gamma_shape"] == pytest.approx(1 / cv**2)
    assert s["duplicate_timestamps"] == 1 and s["peak_minute_rate"] is None  # < 1 minute
    assert s["input_tokens"]["median"] == pytest.approx((1200 + 2048) / 2)
    assert s["output_tokens"]["p99"] == pytest.approx(300 + 0.97 * (512 - 300))
    azure = trace_stats(read_trace(DATA / "azure.csv"))
    assert azure["peak_minute_requests"] == 3 and azure["peak_minute_rate"] == 3 / 60


def test_stats_command_table_json_and_html(tmp_path, capsys):
    html = tmp_path / "stats.html"
    assert main(["trace", "stats", str(DATA / "azure.csv"), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "Requests:" in out and "azure" in out and f"report: {html}" in out
    assert "Trace statistics" in html.read_text()
    assert main(["trace", "stats", str(DATA / "mooncake.jsonl"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_requests"] == 4 and stats["has_hash_ids"] is True
    assert main(["trace", "stats", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: cannot read trace" in capsys.readouterr().err


def test_simulate_reads_a_public_format_with_inline_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--policy", "continuous", "--trace", str(DATA / "azure.csv"),
                 "--max-input-len", "4096", "--target-rate", "1", "--out", str(out),
                 "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    trace = config["workload"]["trace"]
    assert trace["format"] == "azure" and trace["dropped_too_long"] == 1
    assert trace["target_rate"] == 1 and config["workload"]["num_requests"] == 3
    assert config["workload"]["time_scale"] == pytest.approx(trace["time_scale"])
    assert main(["simulate", "--policy", "continuous", "--start", "3",
                 "--out", str(tmp_path / "r2")]) == 2
    assert "--start needs --trace" in capsys.readouterr().err
