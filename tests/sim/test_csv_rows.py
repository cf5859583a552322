"""csv_rows formats numbers and strings exactly as `%` and pandas' to_csv do, from numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsim.sim import csv_table
from batchsim.sim.csv_rows import Rows, fixed_fits, text_table
from batchsim.sim.csv_table import write_csv

# values whose product with 10**6 sits on or next to a half: where rounding the float product
# could differ from rounding the exact value (k/128 is an exact tie at the 7th decimal)
TIES = [k / 128 for k in range(1, 300)] + [(n + 0.5) / 1e6 for n in range(0, 10**7, 99_991)]
EDGES = [0.0, -0.0, 1e-7, -1e-7, 5e-7, -5e-7, 4.9999999e-7, 2.5e-6, 0.0000015, 1e9, 8.9e9,
         123456.0000005, 3503.9999995, 0.1, 0.7, 1 / 3, 2 / 3, 1e-300, -1e-300]


def _percent(values: list[float], fmt: str) -> bytes:
    return "".join(("" if v != v else fmt % v) + "\n" for v in values).encode()


def _fixed(values: list[float], decimals: int = 6) -> bytes:
    rows = Rows(len(values))
    rows.fixed(np.asarray(values, dtype=np.float64), decimals)
    rows.const(b"\n")
    return rows.tobytes()


@pytest.mark.parametrize("decimals", [0, 1, 3, 6, 9])
def test_fixed_is_percent_on_ties_and_edges(decimals):
    values = TIES + EDGES + [-v for v in TIES] + [float("nan")]
    values = [v for v in values if abs(v) * 10**decimals < 2**53]
    assert _fixed(values, decimals) == _percent(values, f"%.{decimals}f")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-9e9, max_value=9e9) | st.just(float("nan")), min_size=1,
                max_size=60),
       st.sampled_from([0, 2, 6]))
def test_fixed_is_percent(values, decimals):
    assert _fixed(values, decimals) == _percent(values, f"%.{decimals}f")


def test_fixed_fits_refuses_what_fixed_cannot_format():
    assert fixed_fits(np.array([0.0, np.nan, -8.9e9]))
    assert not fixed_fits(np.array([1.0, np.inf]))
    assert not fixed_fits(np.array([-np.inf]))
    assert not fixed_fits(np.array([9.1e9]))  # 9.1e15 microseconds > 2**53
    assert fixed_fits(np.array([9.1e9]), decimals=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1), min_size=1,
                max_size=60))
def test_int_is_percent_d(values):
    rows = Rows(len(values))
    rows.integer(np.asarray(values, dtype=np.int64))
    rows.const(b",x\n")
    assert rows.tobytes() == "".join(f"{v},x\n" for v in values).encode()


def test_text_rows_and_tables():
    names = text_table(["prefill", "", "é,ü", "decode"])
    assert names is not None
    rows = Rows(5)
    rows.text(names, np.array([0, 1, 2, 3, 1]))
    rows.const(b"|")
    rows.text(np.asarray([b"a", b"bc", b"", b"d", b"e"]))
    rows.const(b"\n")
    assert rows.tobytes().decode() == "prefill|a\n|bc\né,ü|\ndecode|d\n|e\n"
    assert text_table(["a\0b"]) is None  # a NUL byte would read as padding


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    floats = rng.uniform(-4000, 4000, n)
    floats[rng.random(n) < 0.2] = np.nan
    ties = np.asarray(TIES)[rng.integers(0, len(TIES), n)]
    ids = np.asarray(["r1", "a,b", 'say "hi"', "", "naïve", "line\nbreak", "x" * 40],
                     dtype=object)[rng.integers(0, 7, n)]
    return pd.DataFrame({
        "step": np.arange(n, dtype=np.int64),
        "id": ids,
        "ttft_ms": floats,
        "tie_s": ties,
        "priority": rng.integers(-(2**40), 2**40, n),
        "phase": pd.Categorical.from_codes(rng.integers(0, 3, n),
                                           categories=["prefill", "decode", "mi,xed"]),
        "done": rng.random(n) < 0.5,
        "count": rng.integers(0, 2**62, n).astype(np.uint64),
    })


@pytest.mark.parametrize("float_format", ["%.6f", "%.3f", "%.0f"])
def test_write_csv_numpy_path_is_pandas(tmp_path, float_format, monkeypatch):
    """Every column kind the numpy path takes, chunked (three chunks), against to_csv."""
    monkeypatch.setattr(csv_table, "_CHUNK_ROWS", 997)
    df = _frame(2500, seed=len(float_format))
    df.to_csv(tmp_path / "pandas.csv", index=False, float_format=float_format)
    calls = []
    real = csv_table._write_numpy
    monkeypatch.setattr(csv_table, "_write_numpy",
                        lambda *a: calls.append(real(*a)) or calls[-1])
    write_csv(df, tmp_path / "ours.csv", float_format)
    assert calls == [True], "the table should take the numpy path"
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_write_csv_leaves_infinities_and_int64_min_to_the_row_formatter(tmp_path):
    for column in ([1.0, np.inf, np.nan], np.array([0, -(2**63)], dtype=np.int64)):
        df = pd.DataFrame({"x": column, "y": np.arange(len(column))})
        assert not csv_table._write_numpy(df, tmp_path / "x.csv", "%.6f")
        df.to_csv(tmp_path / "pandas.csv", index=False, float_format="%.6f")
        write_csv(df, tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
