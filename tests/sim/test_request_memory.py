"""What a large run does not keep: a synthetic workload holds no id strings, the simulator's
plain loop builds its requests as they arrive (`RequestStream`), the requests table comes from
the workload's columns, and steps are read a few columns or rows at a time. Each must give what
the whole objects gave."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from batchsim.reports.run_report import REPORT_STEP_COLUMNS
from batchsim.sim.csv_table import write_csv
from batchsim.sim.recorder import Recorder
from batchsim.sim.run import RunSpec, prepare, simulate
from batchsim.sim.simulator import RequestStream
from batchsim.sim.workload.synthetic import SyntheticSpec, synthesize
from tests.conftest import make_workload

SYN = SyntheticSpec(num_requests=300, request_rate=40.0, input_len=300, output_len=40,
                    range_ratio=0.5, prefix_len=64, num_prefix_groups=3)
SMALL = SyntheticSpec(num_requests=80, request_rate=40.0, input_len=300, output_len=40,
                      range_ratio=0.5)


def _fields(request) -> tuple:
    return (request.index, request.arrival_s, request.input_tokens, request.output_tokens,
            request.priority, request.id, request.prefix)


def test_a_synthetic_workload_has_its_indexes_as_ids():
    work = synthesize(SYN, np.random.default_rng(0))
    assert work.ids is None
    assert [r.id for r in work.requests()] == [str(i) for i in range(len(work))]


@pytest.mark.parametrize("with_prefix", [False, True])
def test_a_stream_yields_the_workloads_requests(monkeypatch, with_prefix: bool):
    monkeypatch.setattr("batchsim.sim.simulator.ARRIVAL_CHUNK", 7)  # many chunks
    work = synthesize(SYN, np.random.default_rng(0))
    stream = RequestStream(work, with_prefix)
    got = [stream[i] for i in range(len(stream))]
    assert [_fields(r) for r in got] == [_fields(r) for r in work.requests(with_prefix)]
    assert stream[len(stream) - 1] is got[-1]  # the current chunk is not built again
    with pytest.raises(AssertionError, match="already passed"):
        stream[0]


def test_slices_of_requests_are_the_requests_in_that_range():
    work = synthesize(SYN, np.random.default_rng(1))
    whole = [_fields(r) for r in work.requests(with_prefix=True)]
    parts = [_fields(r) for a in range(0, len(work), 64)
             for r in work.requests(True, a, a + 64)]
    assert parts == whole


@pytest.mark.parametrize("ids", [None, ["a", "b,c", "d"]])
def test_the_workload_table_is_the_table_of_its_requests(ids):
    work = dataclasses.replace(make_workload([(0.0, 10, 3), (0.5, 5, 1), (1.0, 4, 2)]), ids=ids)
    rec = Recorder(len(work))
    rec.finish_s[0] = 0.25
    rec.first_token_s[0] = 0.125
    rec.reject(work.requests()[2], "longer than max_model_len", 1.0)
    pd.testing.assert_frame_equal(rec.workload_table(work), rec.requests_table(work.requests()))


def test_a_run_without_ids_writes_the_same_table_as_one_with_them():
    """The CLI's synthetic run (ids None) and the same workload with id strings."""
    spec = RunSpec(policy="continuous", synthetic=SMALL, seed=2)
    plain = simulate(prepare(spec))
    work = synthesize(spec.synthetic, np.random.default_rng(2))
    named = simulate(prepare(spec, dataclasses.replace(
        work, ids=[str(i) for i in range(len(work))])))
    pd.testing.assert_frame_equal(plain.requests, named.requests)
    assert plain.requests["id"].tolist() == [str(i) for i in range(len(work))]



@pytest.mark.parametrize("knobs", [{}, {"enable_prefix_caching": "true"}])
def test_a_step_frame_is_those_columns_of_the_steps_table(knobs):
    rec = simulate(prepare(RunSpec(policy="continuous", synthetic=SMALL, knobs=knobs))).recorder
    frame = rec.step_frame(REPORT_STEP_COLUMNS)  # before the table: built from the records
    table = rec.steps_table()
    pd.testing.assert_frame_equal(frame, table[[c for c in REPORT_STEP_COLUMNS if c in table]])
    assert ("kv_cached_blocks" in frame) == bool(knobs)
    assert list(rec.step_columns(("duration_s", "phase"))) == ["duration_s", "phase"]


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_steps_csv_in_small_chunks_is_the_tables_csv(monkeypatch, tmp_path, rows: int):
    """Chunk boundaries inside fast-forwarded runs: the run shapes are looked up per chunk."""
    monkeypatch.setattr("batchsim.sim.recorder._CSV_CHUNK_ROWS", rows)
    rec = simulate(prepare(RunSpec(policy="continuous", synthetic=SMALL))).recorder
    assert len(rec._run_k) < rec.num_steps  # some runs repeat a step
    assert rec.write_steps_csv(tmp_path / "runs.csv")
    write_csv(rec.steps_table(), tmp_path / "table.csv")
    assert (tmp_path / "runs.csv").read_bytes() == (tmp_path / "table.csv").read_bytes()
