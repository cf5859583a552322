"""Trace parsing and synthetic arrivals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchsim.sim.workload.synthetic import SyntheticSpec, synthesize
from batchsim.sim.workload.traces import load_trace
from batchsim.sim.workload.workload import WorkloadError


def write(tmp_path, text):
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    return path


def test_reads_native_trace_with_optional_fields_and_blank_lines(tmp_path):
    path = write(tmp_path, '{"arrival_s": 0.5, "input_tokens": 10, "output_tokens": 3, "id": "a",'
                 ' "priority": 2}\n\n{"arrival_s": 1.0, "input_tokens": 4, "output_tokens": 1}')
    w = load_trace(path, time_scale=2.0)
    assert list(w.arrival_s) == [1.0, 2.0]
    assert list(w.input_tokens) == [10, 4] and list(w.priority) == [2, 0]
    assert w.ids == ["a", "1"]


def test_unsorted_arrivals_are_sorted(tmp_path, caplog):
    path = write(tmp_path, '{"arrival_s": 2, "input_tokens": 1, "output_tokens": 1}\n'
                 '{"arrival_s": 1, "input_tokens": 2, "output_tokens": 1}\n')
    w = load_trace(path)
    assert list(w.input_tokens) == [2, 1]
    assert list(w.line_numbers) == [2, 1]
    assert "not sorted" in caplog.text


@pytest.mark.parametrize(("line", "problem"), [
    ('{"arrival_s": 0, "input_tokens": 5', "malformed JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"arrival_s": 0, "output_tokens": 5}', "missing field 'input_tokens'"),
    ('{"arrival_s": 0, "input_tokens": 0, "output_tokens": 5}', "positive integer"),
    ('{"arrival_s": 0, "input_tokens": -3, "output_tokens": 5}', "positive integer"),
    ('{"arrival_s": 0, "input_tokens": 2.5, "output_tokens": 5}', "positive integer"),
    ('{"arrival_s": -1, "input_tokens": 2, "output_tokens": 5}', "arrival_s must be >= 0"),
    ('{"arrival_s": "soon", "input_tokens": 2, "output_tokens": 5}', "finite number"),
])
def test_bad_lines_name_file_line_and_problem(tmp_path, line, problem):
    path = write(tmp_path, '{"arrival_s": 0, "input_tokens": 1, "output_tokens": 1}\n' + line)
    with pytest.raises(WorkloadError, match=problem) as err:
        load_trace(path)
    assert str(err.value).startswith(f"{path}:2: ")


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(WorkloadError, match="no requests"):
        load_trace(write(tmp_path, "\n\n"))
    with pytest.raises(WorkloadError, match="cannot read trace"):
        load_trace(tmp_path / "nope.jsonl")


def test_synthetic_poisson_rate_and_lengths():
    """Gaps average 1/rate; lengths stay within len*(1±r); the first request is at t=0."""
    spec = SyntheticSpec(num_requests=20000, request_rate=10, input_len=100, output_len=50,
                         range_ratio=0.5)
    w = synthesize(spec, np.random.default_rng(0))
    gaps = np.diff(w.arrival_s)
    assert w.arrival_s[0] == 0.0
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # Poisson: CV 1
    assert w.input_tokens.min() >= 50 and w.input_tokens.max() <= 150
    assert w.output_tokens.min() >= 25 and w.output_tokens.max() <= 75


def test_synthetic_burstiness_is_gamma_shape():
    spec = SyntheticSpec(num_requests=20000, request_rate=10, burstiness=0.25)
    gaps = np.diff(synthesize(spec, np.random.default_rng(1)).arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.08)  # CV = 1/sqrt(shape)


def test_synthetic_infinite_rate_and_seeding():
    w = synthesize(SyntheticSpec(num_requests=5, request_rate=math.inf), np.random.default_rng(0))
    assert (w.arrival_s == 0).all()
    a = synthesize(SyntheticSpec(request_rate=3.0, range_ratio=0.3), np.random.default_rng(7))
    b = synthesize(SyntheticSpec(request_rate=3.0, range_ratio=0.3), np.random.default_rng(7))
    assert (a.arrival_s == b.arrival_s).all() and (a.input_tokens == b.input_tokens).all()


def test_lengths_sampled_from_a_trace(tmp_path):
    path = write(tmp_path, '{"arrival_s": 0, "input_tokens": 7, "output_tokens": 3}\n'
                 '{"arrival_s": 1, "input_tokens": 9, "output_tokens": 4}\n')
    w = synthesize(SyntheticSpec(num_requests=50, lengths_from=str(path)),
                   np.random.default_rng(0))
    pairs = set(zip(w.input_tokens.tolist(), w.output_tokens.tolist(), strict=True))
    assert pairs == {(7, 3), (9, 4)}


@pytest.mark.parametrize("kwargs", [{"num_requests": 0}, {"request_rate": 0},
                                    {"burstiness": -1}, {"range_ratio": 1.0}, {"input_len": 0}])
def test_bad_synthetic_options(kwargs):
    with pytest.raises(WorkloadError):
        SyntheticSpec(**kwargs)
