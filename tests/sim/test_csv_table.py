"""write_csv writes exactly what pandas' to_csv writes, faster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchsim.sim.csv_table import write_csv


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "step": np.arange(5, dtype=np.int64),
        "start_s": [0.0, 1e-7, 123456.789, -0.5, 2.0000005],
        "ttft_ms": [1.5, np.nan, np.inf, 3.25, np.nan],
        "phase": pd.Categorical.from_codes([0, 1, 2, 1, 0], categories=["prefill", "decode",
                                                                           "mi,xed"]),
        "id": ["a", "b,c", 'say "hi"', "", "line\nbreak"],
        "done": [True, False, True, True, False],
    })


@pytest.mark.parametrize("float_format", ["%.6f", "%.6g"])
def test_bytes_match_pandas(tmp_path, float_format):
    """Floats (NaN empty, inf), ints, categoricals, quoted strings and bools: same bytes."""
    df = _frame()
    df.to_csv(tmp_path / "pandas.csv", index=False, float_format=float_format)
    write_csv(df, tmp_path / "ours.csv", float_format)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_unhandled_columns_fall_back_to_pandas(tmp_path):
    """An object column of mixed values (None beside floats) is left to pandas."""
    df = pd.DataFrame({"x": [1.0, None, "a"], "y": [1, 2, 3]})
    df.to_csv(tmp_path / "pandas.csv", index=False, float_format="%.6f")
    write_csv(df, tmp_path / "ours.csv")
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_an_empty_table_is_its_header(tmp_path):
    df = _frame().iloc[:0]
    df.to_csv(tmp_path / "pandas.csv", index=False, float_format="%.6f")
    write_csv(df, tmp_path / "ours.csv")
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
