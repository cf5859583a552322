"""Writing result tables as CSV without pandas' per-cell formatter.

`DataFrame.to_csv(float_format=...)` formats every float cell through several Python calls; on
a run of 400k steps that is most of the run's time. `write_csv` writes the same bytes (checked
by bench/identical_outputs.py against pandas' output) with one %-format per row: a float column
is formatted by the row's format string directly, except where it holds NaN (written empty, as
pandas' na_rep), which is formatted per cell. Columns of other kinds (objects that are not all
strings, say) make it fall back to pandas.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

# rows formatted at once: bounds the memory of the values and text in flight (~8 MB for a
# requests table; 65,536 rows were ~30 MB, for no measurable speed)
_CHUNK_ROWS = 16_384
_SPECIAL = (",", '"', "\n", "\r")


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


def write_csv(df: pd.DataFrame, path: Path, float_format: str = "%.6f") -> None:
    """df.to_csv(path, index=False, float_format=float_format), byte for byte, faster."""
    columns = [_column(df[name], float_format) for name in df.columns]
    # one column: pandas quotes an empty field ('""'), so leave that case to it
    if (len(df.columns) < 2 or len(set(df.columns)) != len(df.columns)
            or any(c is None for c in columns)):
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
