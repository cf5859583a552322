"""Writing result tables as CSV without pandas' per-cell formatter.

`DataFrame.to_csv(float_format=...)` formats every float cell through several Python calls; on
a run of 400k steps that is most of the run's time. `write_csv` writes the same bytes (checked
by bench/identical_outputs.py and the tests against pandas' output). Tables whose columns are
ints, floats under a "%.Nf" format, booleans, categoricals and strings are formatted by numpy,
a chunk of rows at a time (`sim.csv_rows`). Otherwise (a float column with infinities, say) it
is one %-format per row: a float column is formatted by the row's format string directly,
except where it holds NaN (written empty, as pandas' na_rep), which is formatted per cell.
Columns of other kinds (objects that are not all strings, say) make it fall back to pandas.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from batchsim.sim.csv_rows import Rows, fixed_fits, text_table

# rows formatted at once: bounds the memory of the values and text in flight (~8 MB for a
# requests table; 65,536 rows were ~30 MB, for no measurable speed)
_CHUNK_ROWS = 16_384
_SPECIAL = (",", '"', "\n", "\r")
_BOOLS = np.asarray([b"False", b"True"])


def _quote(text: str) -> str:
    """csv.QUOTE_MINIMAL, as pandas writes: quoted when it holds a delimiter, quote or newline."""
    if any(c in text for c in _SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


Chunk = Callable[[int, int], list]  # rows [start, stop) of a column, as Python values


def _column(series: pd.Series, float_format: str) -> tuple[str, Chunk] | None:
    """(the row format's field, the column's values chunk by chunk) or None if not handled
    here. Chunks keep only _CHUNK_ROWS Python objects per column alive at a time."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        names = np.asarray([_quote(str(c)) for c in dtype.categories], dtype=object)
        codes = series.cat.codes.to_numpy()
        if (codes < 0).any():
            return None
        return "%s", lambda a, b: names[codes[a:b]].tolist()
    values = series.to_numpy()
    kind = values.dtype.kind
    if kind == "f":
        nan = np.isnan(values)
        if not nan.any():
            return float_format, lambda a, b: values[a:b].tolist()
        return "%s", lambda a, b: [("" if m else float_format % v) for v, m in
                                   zip(values[a:b].tolist(), nan[a:b].tolist(), strict=True)]
    if kind in "iu":
        return "%d", lambda a, b: values[a:b].tolist()
    if kind == "b":
        return "%s", lambda a, b: ["True" if v else "False" for v in values[a:b].tolist()]
    if kind == "O":
        if not all(type(v) is str for v in values):
            return None
        if any(any(c in v for c in _SPECIAL) for v in values):
            values = np.asarray([_quote(v) for v in values], dtype=object)
        return "%s", lambda a, b: values[a:b].tolist()
    return None


AddField = Callable[[Rows, int, int], None]  # adds rows [start, stop) of a column to Rows


def _numpy_column(series: pd.Series, decimals: int) -> AddField | None:
    """How to add the column's values to `Rows`, or None if csv_rows cannot format it."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        table = text_table([_quote(str(c)) for c in dtype.categories])
        codes = series.cat.codes.to_numpy()
        if table is None or (codes < 0).any():
            return None
        names = table
        return lambda rows, a, b: rows.text(names, codes[a:b])
    values = series.to_numpy()
    kind = values.dtype.kind
    if kind == "f" and fixed_fits(values, decimals):
        return lambda rows, a, b: rows.fixed(values[a:b], decimals)
    if kind in "iu" and (values.min(initial=0) > np.iinfo(np.int64).min if kind == "i"
                         else values.max(initial=0) < 2**63):  # |v| fits an int64
        return lambda rows, a, b: rows.integer(values[a:b])
    if kind == "b":
        return lambda rows, a, b: rows.text(_BOOLS, values[a:b].astype(np.int64))
    if kind == "O" and pd.api.types.infer_dtype(values, skipna=False) == "string":
        joined = "".join(values)  # one scan for the characters that need care
        if "\0" in joined:
            return None
        if any(c in joined for c in _SPECIAL):
            values = np.asarray([_quote(v) for v in values], dtype=object)
        return lambda rows, a, b: rows.text(_encoded(values[a:b].tolist()))
    return None


def _encoded(values: list[str]) -> np.ndarray:
    """NUL-free strings as a numpy bytes array (UTF-8)."""
    try:
        return np.asarray(values, dtype=np.bytes_)  # ASCII: numpy encodes them itself
    except UnicodeEncodeError:
        return np.asarray([v.encode() for v in values], dtype=np.bytes_)


def _write_numpy(df: pd.DataFrame, path: Path, float_format: str) -> bool:
    """write_csv through csv_rows; False (nothing written) if a column is not one it formats."""
    match = re.fullmatch(r"%\.(\d)f", float_format)
    if match is None:
        return False
    columns = [_numpy_column(df[name], int(match.group(1))) for name in df.columns]
    if any(c is None for c in columns):
        return False
    with open(path, "wb") as f:
        f.write((",".join(_quote(str(name)) for name in df.columns) + "\n").encode())
        for start in range(0, len(df), _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, len(df))
            rows = Rows(stop - start)
            for i, add in enumerate(columns):
                if i:
                    rows.const(b",")
                assert add is not None
                add(rows, start, stop)
            rows.const(b"\n")
            f.write(rows.tobytes())
    return True


def write_csv(df: pd.DataFrame, path: Path, float_format: str = "%.6f") -> None:
    """df.to_csv(path, index=False, float_format=float_format), byte for byte, faster."""
    # one column: pandas quotes an empty field ('""'), so leave that case to it
    if len(df.columns) < 2 or len(set(df.columns)) != len(df.columns):
        df.to_csv(path, index=False, float_format=float_format)
        return
    if _write_numpy(df, path, float_format):
        return
    columns = [_column(df[name], float_format) for name in df.columns]
    if any(c is None for c in columns):
        df.to_csv(path, index=False, float_format=float_format)
        return
    fields = [c[0] for c in columns if c is not None]
    chunks = [c[1] for c in columns if c is not None]
    row = ",".join(fields) + "\n"
    with open(path, "w", newline="") as f:
        f.write(",".join(_quote(str(name)) for name in df.columns) + "\n")
        for start in range(0, len(df), _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, len(df))
            rows = zip(*(chunk(start, stop) for chunk in chunks), strict=True)
            f.write("".join([row % r for r in rows]))
